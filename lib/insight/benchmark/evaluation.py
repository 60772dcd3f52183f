"""Scoring every method on one split, scan by scan, against the clot masks (never seen in training).

Per scan the volume is read and preprocessed once (the product's path: ``prepare_volume``,
``slice_stack``), and with a fixed-feature encoder (shared by every method) its parameter-free part
is computed once too (:func:`insight.benchmark.methods.shared_encoder_input`, timed and added to
each method's model time); then each method runs on the same tensors in turn, so their timings are
taken under the same conditions. Each heatmap is brought back onto the scan's own voxel grid exactly as
``insight predict`` does (:func:`insight.inference.predictor.heatmap_to_grid`, then
:func:`insight.preprocessing.to_reference_grid`) and compared with the clot mask there.

Rules (per method):
- own threshold (:class:`insight.benchmark.config.ThresholdRule`): computed from the scan's
  feature-resolution heatmap inside the search region; voxels strictly above it are the method's
  regions (Dice, IoU, FROC candidates, flagged volume);
- threshold sweep: Dice of ``heatmap >= t`` for t in :data:`insight.metrics.DEFAULT_DICE_THRESHOLDS`;
- pointing game: the heatmap's maximum within ``pointing_tolerance_voxels`` of a clot;
- FROC candidates: connected regions of the own-threshold mask, scored by their peak
  (:mod:`insight.metrics.froc`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
import torch
from skimage.filters import threshold_otsu
from tqdm import tqdm

from insight.baselines import region_cells
from insight.benchmark.config import EvaluationSpec, ThresholdRule
from insight.benchmark.methods import TrainedMethod, shared_encoder_input
from insight.config import PreprocessConfig
from insight.errors import InputError
from insight.evaluation.evaluate import clot_mask_path
from insight.inference.predictor import heatmap_to_grid
from insight.io.image_io import read_image
from insight.metrics import DEFAULT_DICE_THRESHOLDS, dice, iou, label_components, pointing_game
from insight.metrics.froc import ScanCandidates, scan_candidates
from insight.preprocessing import prepare_volume, slice_stack, to_reference_grid
from insight.training import read_label_table

__all__ = ["CaseResult", "MontageCase", "SplitEvaluation", "own_threshold", "dice_curve", "evaluate_split"]

logger = logging.getLogger(__name__)


@dataclass
class CaseResult:
    """One scan through one method (localization fields are None on scans without clot)."""

    name: str
    label: int
    probability: float
    n_emboli: int
    own_threshold: float
    flagged_ml: float
    forward_s: float
    backward_s: float
    to_grid_s: float
    fixed_features_s: float = 0.0
    dice_own: float | None = None
    iou_own: float | None = None
    pointing_hit: bool | None = None
    dice_curve: list[float] | None = None
    candidates_overlap: ScanCandidates | None = field(default=None, repr=False)
    candidates_peak: ScanCandidates | None = field(default=None, repr=False)

    def to_json(self) -> dict[str, Any]:
        overlap = self.candidates_overlap
        return {
            "name": self.name, "label": self.label, "probability": round(self.probability, 6),
            "n_emboli": self.n_emboli, "own_threshold": round(self.own_threshold, 6),
            "n_regions_own": overlap.n_candidates if overlap else None,
            "n_emboli_hit_own": int(np.isfinite(overlap.embolus_scores).sum()) if overlap else None,
            "n_false_positive_regions_own": int(overlap.is_false_positive.sum()) if overlap else None,
            "flagged_ml": round(self.flagged_ml, 3), "dice_own": self.dice_own, "iou_own": self.iou_own,
            "pointing_hit": self.pointing_hit, "forward_s": round(self.forward_s, 5),
            "backward_s": round(self.backward_s, 5), "to_grid_s": round(self.to_grid_s, 5),
            "fixed_features_s": round(self.fixed_features_s, 5),
        }


@dataclass
class MontageCase:
    """One axial slice of a PE-positive scan for the overlay montage ([y, x] arrays)."""

    name: str
    slice_index: int
    ct: np.ndarray
    clot: np.ndarray
    spacing_yx: tuple[float, float]
    heatmaps: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class SplitEvaluation:
    """Every method's per-scan results on one split."""

    results: dict[str, list[CaseResult]]
    preprocess_s: list[float]
    montage: list[MontageCase]


def own_threshold(heatmap: torch.Tensor, cells: torch.Tensor | None, rule: ThresholdRule) -> float:
    """A method's own threshold for one scan.

    Args:
        heatmap: [N, h, w] feature-resolution heatmap.
        cells: [N, h, w] bool, the search region's cells (None or empty: every location).
        rule: Otsu over the values, or a fraction of their maximum.
    """
    values = heatmap[cells] if cells is not None and bool(cells.any()) else heatmap.reshape(-1)
    values = values.detach().float().cpu().numpy()
    peak = float(values.max())
    if rule.kind == "max_fraction":
        return float(rule.value) * peak
    if float(values.min()) == peak:
        return peak  # a constant map: nothing lies above it
    return float(threshold_otsu(values))


def dice_curve(heatmap: np.ndarray, mask: np.ndarray, thresholds: np.ndarray = DEFAULT_DICE_THRESHOLDS) -> np.ndarray:
    """Dice of ``heatmap >= t`` against ``mask`` for each t: [T] (both empty counts 1.0).

    The per-case curve behind :func:`insight.metrics.best_threshold_dice`, kept per scan so a
    threshold chosen on one split can be applied to another.
    """
    ts = np.asarray(thresholds, dtype=np.float64).astype(heatmap.dtype)
    true_scores = np.sort(heatmap[mask])
    inter = true_scores.size - np.searchsorted(true_scores, ts, side="left")
    n_pred = np.array([np.count_nonzero(heatmap >= t) for t in ts])
    denom = n_pred + true_scores.size
    return np.where(denom == 0, 1.0, 2.0 * inter / np.maximum(denom, 1))


def _clot_mask(folder: Path, name: str, image: sitk.Image) -> np.ndarray:
    path = clot_mask_path(folder, name)
    if not path.is_file():
        raise InputError(f"{path} is missing: the benchmark needs every scan's clot mask")
    mask = sitk.GetArrayFromImage(read_image(path)) > 0
    expected = tuple(reversed(image.GetSize()))
    if mask.shape != expected:
        raise InputError(f"{path.name}: mask shape {mask.shape} differs from its image {expected}")
    return mask


def evaluate_split(methods: list[TrainedMethod], folder: Path, preprocess: PreprocessConfig,
                   spec: EvaluationSpec, montage_names: set[str] | None = None, progress: bool = True,
                   warm_up: bool = True) -> SplitEvaluation:
    """Score every method on every scan of ``folder`` (an ``insight phantom`` folder with ``truth/``).

    ``montage_names``: scans whose clot-richest slice is kept for the overlay montage.
    ``warm_up``: run each method once on the first scan before timing anything.
    """
    if not methods:
        raise ValueError("no methods to evaluate")
    cases = read_label_table(folder)
    device = methods[0].device
    results: dict[str, list[CaseResult]] = {m.spec.name: [] for m in methods}
    preprocess_s: list[float] = []
    montage: list[MontageCase] = []
    for position, case in enumerate(tqdm(cases, desc=f"evaluating {folder.name}", disable=not progress,
                                         unit="scan")):
        image = read_image(case.image_path)
        started = time.perf_counter()
        prepared = prepare_volume(image, preprocess)
        slices = slice_stack(torch.from_numpy(prepared.windowed), preprocess.slice_context).to(device)
        region = torch.from_numpy(prepared.region).to(device)
        preprocess_s.append(time.perf_counter() - started)
        mask = _clot_mask(folder, case.name, image)
        _, n_emboli = label_components(mask)
        voxel_ml = float(np.prod(image.GetSpacing())) / 1000.0
        keep_slice = None
        if montage_names and case.name in montage_names and mask.any():
            z = int(np.argmax(mask.sum(axis=(1, 2))))
            ct = sitk.GetArrayViewFromImage(image)[z].astype(np.float32)
            low, high = preprocess.hu_window
            keep_slice = MontageCase(case.name, z, np.clip((ct - low) / (high - low), 0, 1), mask[z].copy(),
                                     (image.GetSpacing()[1], image.GetSpacing()[0]))
            montage.append(keep_slice)
        if warm_up and position == 0:
            warm_input, _ = shared_encoder_input(methods, slices)
            for method in methods:
                method.scan_output(slices, region, warm_input)
            del warm_input
        encoder_input, fixed_s = shared_encoder_input(methods, slices)
        for method in methods:
            row = _score(method, slices, encoder_input, region, prepared.grid, image, mask, n_emboli, voxel_ml,
                         case.name, case.label, spec)
            row[0].fixed_features_s = fixed_s
            results[method.spec.name].append(row[0])
            if keep_slice is not None:
                keep_slice.heatmaps[method.spec.name] = row[1][keep_slice.slice_index].copy()
    return SplitEvaluation(results, preprocess_s, montage)


def _score(method: TrainedMethod, slices: torch.Tensor, encoder_input: torch.Tensor | None, region: torch.Tensor,
           grid: sitk.Image, image: sitk.Image, mask: np.ndarray, n_emboli: int, voxel_ml: float, name: str,
           label: int, spec: EvaluationSpec) -> tuple[CaseResult, np.ndarray]:
    output = method.scan_output(slices, region, encoder_input)
    started = time.perf_counter()
    on_input = to_reference_grid(heatmap_to_grid(output.heatmap, method.stride, grid), image, default_value=0.0)
    heat = sitk.GetArrayFromImage(on_input)
    to_grid_s = time.perf_counter() - started
    cells = region_cells(region, method.stride, output.heatmap.shape[-2:])[:, 0]
    threshold = own_threshold(output.heatmap, cells, method.spec.threshold)
    own = heat > threshold
    row = CaseResult(name, label, output.probability, n_emboli, threshold, float(own.sum()) * voxel_ml,
                     output.forward_s, output.backward_s, to_grid_s)
    row.candidates_overlap = scan_candidates(heat, mask, own, rule="overlap")
    row.candidates_peak = scan_candidates(heat, mask, own, rule="peak", tolerance_voxels=spec.peak_tolerance_voxels)
    if mask.any():
        row.dice_own, row.iou_own = dice(own, mask), iou(own, mask)
        row.pointing_hit = pointing_game(heat, mask, tolerance_voxels=spec.pointing_tolerance_voxels)
        row.dice_curve = dice_curve(heat, mask).tolist()
    return row, heat
