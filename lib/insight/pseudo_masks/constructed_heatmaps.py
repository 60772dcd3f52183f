"""Heatmaps with a known answer, built from a truth clot mask: for tests and benchmarks only.

Until a model's heatmaps are good, the pseudo-mask step is measured on constructed heatmaps that
mimic what an INSIGHT heatmap gets wrong: each embolus blurred to a blob of its own strength (weak
emboli are what the iterative rounds are for), smooth noise, and distractor blobs of comparable
strength in the lung (which the vessel restriction should reject) and in soft tissue beside the
enhanced vessels (lymph-node-like: a heatmap alone cannot tell them from emboli).

For a phantom folder (volumes plus ``truth/<name>_clot.nii.gz``)::

    python -m insight.pseudo_masks.constructed_heatmaps STUDIES OUT [--seed 0]
    insight pseudo-masks STUDIES --heatmaps OUT --truth STUDIES/truth --out MASKS
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from insight.io import case_name, find_images, read_image, write_image, write_json_atomic
from insight.metrics import label_components
from insight.pseudo_masks.measure import read_truth_mask
from insight.pseudo_masks.morphology import dilate_mm

__all__ = ["ConstructedHeatmapSpec", "constructed_heatmap", "write_constructed_heatmaps"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConstructedHeatmapSpec:
    """What goes into a constructed heatmap.

    Attributes:
        blur_mm: Gaussian sigma (mm) blurring each embolus (an INSIGHT heatmap is stride-4 coarse).
        embolus_amplitude: (low, high) peak value drawn per embolus.
        noise_sd: standard deviation of the smooth noise (before clipping to [0, 1]).
        noise_blur_mm: Gaussian sigma (mm) smoothing the noise.
        lung_distractors, tissue_distractors: number of distractor blobs of each kind.
        distractor_amplitude: (low, high) peak value drawn per distractor.
        distractor_sigma_mm: Gaussian sigma (mm) of a distractor blob.
    """

    blur_mm: float = 2.5
    embolus_amplitude: tuple[float, float] = (0.35, 1.0)
    noise_sd: float = 0.05
    noise_blur_mm: float = 3.0
    lung_distractors: int = 3
    tissue_distractors: int = 2
    distractor_amplitude: tuple[float, float] = (0.3, 0.9)
    distractor_sigma_mm: float = 3.0


def constructed_heatmap(clot_mask: np.ndarray, image_hu: np.ndarray, spacing_zyx: Sequence[float],
                        rng: np.random.Generator,
                        spec: ConstructedHeatmapSpec | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """A heatmap [z, y, x] in [0, 1] for one scan, and what was put into it.

    Args:
        clot_mask: truth [z, y, x] (non-zero = clot).
        image_hu: the scan [z, y, x], used to place distractors (lung: HU < -700; soft tissue: 0 to
            100 HU within 8 mm of enhanced blood >= 200 HU, away from clot).
        spacing_zyx: voxel size in mm.
        rng: the random generator (the heatmap is deterministic for its state).

    Returns:
        (float32 heatmap, info with ``embolus_amplitudes`` and ``distractors``: kind, amplitude, index_zyx).
    """
    spec = spec or ConstructedHeatmapSpec()
    spacing = np.asarray(spacing_zyx, dtype=float)
    clot = np.asarray(clot_mask) != 0
    heat = np.zeros(clot.shape, dtype=np.float32)
    labels, n_emboli = label_components(clot)
    amplitudes = rng.uniform(*spec.embolus_amplitude, size=n_emboli)
    for index, (amplitude, box) in enumerate(zip(amplitudes, ndimage.find_objects(labels)), start=1):
        _add_blob(heat, labels == index, box, spec.blur_mm / spacing, float(amplitude))

    distractors: list[dict[str, Any]] = []
    lung = image_hu < -700
    near_blood = dilate_mm(image_hu >= 200, 8.0, spacing)
    tissue = (image_hu >= 0) & (image_hu <= 100) & near_blood & ~dilate_mm(clot, 10.0, spacing)
    for kind, where, count in (("lung", lung, spec.lung_distractors), ("tissue", tissue, spec.tissue_distractors)):
        candidates = np.flatnonzero(where)
        if candidates.size == 0 or count == 0:
            continue
        for flat in rng.choice(candidates, size=count, replace=False):
            index = np.unravel_index(flat, clot.shape)
            centre = np.zeros(clot.shape, dtype=bool)
            centre[index] = True
            amplitude = float(rng.uniform(*spec.distractor_amplitude))
            _add_blob(heat, centre, tuple(slice(int(i), int(i) + 1) for i in index),
                      spec.distractor_sigma_mm / spacing, amplitude)
            distractors.append({"kind": kind, "amplitude": round(amplitude, 3),
                                "index_zyx": [int(v) for v in np.unravel_index(flat, clot.shape)]})

    noise = ndimage.gaussian_filter(rng.normal(size=clot.shape).astype(np.float32), sigma=spec.noise_blur_mm / spacing)
    noise *= spec.noise_sd / max(float(noise.std()), 1e-6)
    heat = np.clip(heat + noise, 0.0, 1.0).astype(np.float32)
    return heat, {"embolus_amplitudes": [round(float(a), 3) for a in amplitudes], "distractors": distractors}


def _add_blob(heat: np.ndarray, mask: np.ndarray, box: tuple[slice, ...], sigma_vox: np.ndarray,
              amplitude: float) -> None:
    """``heat = max(heat, amplitude * blur(mask) / its peak)``, blurring only a box 4 sigma around ``box``."""
    pad = np.ceil(4.0 * sigma_vox).astype(int)
    grown = tuple(slice(max(s.start - p, 0), min(s.stop + p, n)) for s, p, n in zip(box, pad, heat.shape))
    blob = ndimage.gaussian_filter(mask[grown].astype(np.float32), sigma=sigma_vox)
    np.maximum(heat[grown], amplitude * blob / max(float(blob.max()), 1e-6), out=heat[grown])


def write_constructed_heatmaps(studies_dir: str | os.PathLike, out_dir: str | os.PathLike, seed: int = 0,
                               spec: ConstructedHeatmapSpec | None = None) -> dict[str, Any]:
    """``<out>/<name>_heatmap.nii.gz`` for every volume of a phantom folder, plus ``constructed_heatmaps.json``.

    Case ``<name>`` draws from ``np.random.default_rng([seed, i])`` (i = its position in name order).
    """
    studies, out = Path(studies_dir), Path(out_dir)
    record: dict[str, Any] = {"seed": seed, "spec": vars(spec or ConstructedHeatmapSpec()), "cases": {}}
    for i, path in enumerate(find_images(studies)):
        name = case_name(path)
        image = read_image(path)
        truth = read_truth_mask(studies / "truth", name, image)
        heat, info = constructed_heatmap(truth, sitk.GetArrayFromImage(image), tuple(reversed(image.GetSpacing())),
                                         np.random.default_rng([seed, i]), spec)
        heat_image = sitk.GetImageFromArray(heat)
        heat_image.CopyInformation(image)
        write_image(heat_image, out / f"{name}_heatmap.nii.gz")
        record["cases"][name] = info
    write_json_atomic(out / "constructed_heatmaps.json", record)
    logger.info("wrote %d constructed heatmaps to %s", len(record["cases"]), out)
    return record


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m insight.pseudo_masks.constructed_heatmaps",
                                     description="Constructed heatmaps (known answer) for a phantom folder.")
    parser.add_argument("studies", type=Path, help="phantom folder with volumes and truth/<name>_clot.nii.gz")
    parser.add_argument("out", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    write_constructed_heatmaps(args.studies, args.out, args.seed)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(_main())
