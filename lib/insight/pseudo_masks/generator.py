"""Heatmap -> pseudo-mask, iteratively, as in Label up (find regions, mask them, look again).

A round thresholds the current heatmap by hysteresis (skimage.filters.apply_hysteresis_threshold):
seeds at or above the high threshold, grown through voxels above the low one. Unless switched off,
seeds must lie near contrast-enhanced blood and growth stays in soft tissue (not lung, air or fat), so
an occlusive clot is reached from its ends while blobs in the lung never start a region. Tiny regions
are dropped, the rest is added to the mask. Before the next round the found regions are masked out:

- with a model (a :data:`HeatmapSource`, e.g. an :class:`insight.inference.InsightPredictor`), their
  voxels are painted over in the image with the HU of the surrounding blood and the model is run
  again on the edited image, so it can point at what the found regions overshadowed;
- without one, they are zeroed in the heatmap, and (in ``relative`` threshold mode) the thresholds,
  taken as fractions of the remaining maximum, fall to let weaker regions through.

Rounds stop after ``max_iterations``, when nothing above ``min_peak`` is left, or when a round finds
nothing above its thresholds. Regions too small to keep are hidden from later rounds all the same.
The mask is the union of all rounds, on the input image's exact voxel grid.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import SimpleITK as sitk
from skimage.filters import apply_hysteresis_threshold

from insight.errors import InputError
from insight.metrics import label_components
from insight.preprocessing import same_grid, to_reference_grid
from insight.pseudo_masks.config import PseudoMaskConfig
from insight.pseudo_masks.inpainting import fill_with_surrounding_blood
from insight.pseudo_masks.morphology import contrast_vessel_region, dilate_mm, remove_small_regions

__all__ = ["HeatmapSource", "PseudoMaskResult", "PseudoMaskGenerator", "predictor_heatmap_source", "PSEUDO_LABEL"]

logger = logging.getLogger(__name__)

#: The label value of PE voxels in a pseudo-mask (MONAI Label's ``{"pe": 1}``).
PSEUDO_LABEL = 1

#: Anything that turns a CT volume (HU) into a heatmap in [0, 1] on that volume's grid.
HeatmapSource = Callable[[sitk.Image], sitk.Image]


def predictor_heatmap_source(predictor: Any) -> HeatmapSource:
    """The heatmap of an :class:`insight.inference.InsightPredictor` (or anything with ``predict_image``)."""

    def heatmap_of(image: sitk.Image) -> sitk.Image:
        return predictor.predict_image(image).heatmap

    return heatmap_of


@dataclass
class PseudoMaskResult:
    """One volume's pseudo-mask.

    Attributes:
        mask: uint8 SimpleITK image on the input grid, :data:`PSEUDO_LABEL` inside, 0 outside.
        rounds: per round: ``round``, ``max`` (remaining heatmap maximum), ``high``/``low``
            (thresholds used), ``new_regions``, ``new_voxels``; plus ``stopped`` (why the rounds ended).
        n_regions: 26-connected regions of the final mask.
        volume_mm3: mask volume.
        scan_label: the weak label the mask was made under (None if unknown).
        seconds: wall time.
    """

    mask: sitk.Image
    rounds: list[dict[str, Any]] = field(default_factory=list)
    n_regions: int = 0
    volume_mm3: float = 0.0
    scan_label: int | None = None
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"n_regions": self.n_regions, "volume_mm3": round(self.volume_mm3, 2), "scan_label": self.scan_label,
                "rounds": self.rounds, "seconds": round(self.seconds, 3)}


class PseudoMaskGenerator:
    """Turns heatmaps into pseudo-masks (see the module docstring for the rounds).

    Args:
        config: thresholds, vessel restriction, rounds.
        heatmap_source: optional model run on the edited image in later rounds (and in the first one
            when no heatmap is given).
    """

    def __init__(self, config: PseudoMaskConfig | None = None, heatmap_source: HeatmapSource | None = None) -> None:
        self.config = config or PseudoMaskConfig()
        self.heatmap_source = heatmap_source

    def generate(self, image: sitk.Image, heatmap: sitk.Image | None = None,
                 scan_label: int | None = None) -> PseudoMaskResult:
        """The pseudo-mask of ``image`` (HU).

        Args:
            image: the CT volume; the mask comes back on its exact voxel grid.
            heatmap: scores in [0, 1]; resampled onto ``image``'s grid if it lies elsewhere. When
                None, the heatmap source computes it.
            scan_label: the weak label; 0 (no PE) gives an empty mask without looking.

        Raises:
            InputError: no heatmap and no heatmap source, or a heatmap with NaN or infinite values.
        """
        start = time.perf_counter()
        cfg = self.config
        if scan_label == 0:
            empty = self._to_image(np.zeros(sitk.GetArrayViewFromImage(image).shape, dtype=np.uint8), image)
            return PseudoMaskResult(empty, [{"stopped": "scan labelled no-PE: empty mask"}], 0, 0.0, 0,
                                    time.perf_counter() - start)
        if heatmap is None and self.heatmap_source is None:
            raise InputError("need a heatmap or a model to compute one")
        spacing = tuple(float(s) for s in reversed(image.GetSpacing()))
        image_hu = sitk.GetArrayFromImage(image).astype(np.float32)
        heat = self._heatmap_array(heatmap if heatmap is not None else self.heatmap_source(image), image)
        seed_region, growth_region = self._regions(image_hu, spacing)

        found = np.zeros(heat.shape, dtype=bool)
        hidden = np.zeros(heat.shape, dtype=bool)  # found regions plus margin: never looked at again
        rounds: list[dict[str, Any]] = []
        stopped = f"{cfg.max_iterations} round(s) done"
        for round_index in range(1, cfg.max_iterations + 1):
            visible = np.where(growth_region & ~hidden, heat, 0.0).astype(np.float32)
            peak = float(np.where(seed_region, visible, 0.0).max(initial=0.0))
            if peak < cfg.min_peak or peak <= 0.0:
                stopped = f"remaining maximum {peak:.3f} below min_peak {cfg.min_peak}"
                break
            high, low = self._thresholds(peak)
            candidates = _seeded_hysteresis(visible, seed_region, low, high)
            regions = remove_small_regions(candidates, cfg.min_region_volume_mm3, spacing)
            _, n_new = label_components(regions)
            rounds.append({"round": round_index, "max": round(peak, 4), "high": round(high, 4), "low": round(low, 4),
                           "new_regions": n_new, "new_voxels": int(regions.sum())})
            if not candidates.any():
                stopped = "a round found nothing above its thresholds"
                break
            found |= regions
            hidden |= dilate_mm(candidates, cfg.mask_margin_mm, spacing)  # tiny ones were judged too: not again
            if round_index == cfg.max_iterations:
                break
            if self.heatmap_source is not None and n_new:
                paint = regions & ~_below(image_hu, cfg.soft_tissue_floor_hu)
                image_hu = fill_with_surrounding_blood(image_hu, paint, spacing, cfg.enhanced_hu, cfg.fill_shell_mm)
                heat = self._heatmap_array(self.heatmap_source(self._to_image(image_hu, image)), image)
        rounds.append({"stopped": stopped})

        _, n_regions = label_components(found)
        mask = self._to_image(found.astype(np.uint8) * PSEUDO_LABEL, image)
        volume = float(found.sum()) * float(np.prod(spacing))
        seconds = time.perf_counter() - start
        logger.debug("pseudo-mask: %d region(s), %.0f mm3 in %d round(s), %.2f s", n_regions, volume,
                     sum(1 for r in rounds if "round" in r), seconds)
        return PseudoMaskResult(mask, rounds, n_regions, volume, scan_label, seconds)

    # ----------------------------------------------------------------------------------------------
    def _regions(self, image_hu: np.ndarray, spacing: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
        """(where regions may start, where they may grow): near enhanced blood / in soft tissue."""
        cfg = self.config
        if not cfg.restrict_to_vessels:
            everywhere = np.ones(image_hu.shape, dtype=bool)
            return everywhere, everywhere
        seeds = contrast_vessel_region(image_hu, spacing, cfg.enhanced_hu, cfg.vessel_dilation_mm,
                                       cfg.soft_tissue_floor_hu)
        growth = image_hu >= cfg.soft_tissue_floor_hu
        if cfg.growth_dilation_mm is not None:
            growth &= contrast_vessel_region(image_hu, spacing, cfg.enhanced_hu, cfg.growth_dilation_mm,
                                             cfg.soft_tissue_floor_hu)
        return seeds, growth | seeds

    def _thresholds(self, peak: float) -> tuple[float, float]:
        """(high, low) for a round whose remaining maximum is ``peak``."""
        cfg = self.config
        if cfg.threshold_mode == "relative":
            high, low = cfg.high_threshold * peak, cfg.low_threshold * peak
        else:
            high, low = cfg.high_threshold, cfg.low_threshold
        high = max(high, cfg.min_peak)
        return high, min(low, high)

    @staticmethod
    def _heatmap_array(heatmap: sitk.Image, image: sitk.Image) -> np.ndarray:
        if heatmap.GetDimension() != 3 or heatmap.GetNumberOfComponentsPerPixel() != 1:
            raise InputError(f"heatmap must be a 3D scalar volume, got {heatmap.GetDimension()}D with "
                             f"{heatmap.GetNumberOfComponentsPerPixel()} component(s)")
        if not same_grid(heatmap, image):
            logger.info("heatmap grid differs from the image grid: resampling it onto the image (linear)")
            heatmap = to_reference_grid(heatmap, image, default_value=0.0)
        heat = sitk.GetArrayFromImage(heatmap).astype(np.float32)
        if not np.isfinite(heat).all():
            raise InputError("heatmap holds NaN or infinite values")
        return heat

    @staticmethod
    def _to_image(array: np.ndarray, reference: sitk.Image) -> sitk.Image:
        out = sitk.GetImageFromArray(array)
        out.CopyInformation(reference)
        return out


def _seeded_hysteresis(heat: np.ndarray, seed_region: np.ndarray, low: float, high: float) -> np.ndarray:
    """Hysteresis (skimage) whose seeds (heat >= ``high``) must lie in ``seed_region``.

    Regions grow through every voxel with heat > ``low``; voxels outside ``seed_region`` are capped just
    below ``high`` so they can join a region but never start one.
    """
    seed_cut = np.float32(high) - np.float32(1e-6)  # skimage seeds are heat > high: make it >= high
    capped = np.where(seed_region, heat, np.minimum(heat, seed_cut)).astype(np.float32)
    return apply_hysteresis_threshold(capped, min(low, float(seed_cut)), float(seed_cut))


def _below(image_hu: np.ndarray, floor_hu: float) -> np.ndarray:
    """Voxels below ``floor_hu`` (lung, air, fat): never painted over with blood."""
    return image_hu < floor_hu
