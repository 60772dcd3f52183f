"""Scan-level and localization figures of a model on a labelled folder.

The folder is laid out as ``insight phantom`` writes it: volumes, ``labels.csv`` (image, pe) and,
optionally, ground-truth clot masks ``truth/<name>_clot.nii.gz`` on each volume's grid. Masks are
used only here, to measure, never in training.

Localization rules:
- heatmap Dice (Otsu): the heatmap thresholded by Otsu over the whole volume (as INSIGHT's authors
  do) against the clot mask, averaged over PE-positive scans;
- heatmap Dice (findings): the heatmap at the model's finding threshold;
- best-threshold Dice: one threshold shared by all positive scans, chosen on these scans (optimistic);
- pointing game: the heatmap's maximum lies within 1 voxel of a clot (positive scans);
- embolus sensitivity: an embolus (26-connected clot component) is hit when a region of
  heatmap >= finding threshold overlaps it; regions touching no clot are false positives
  (counted over all scans).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
from tqdm import tqdm

from insight.errors import InputError
from insight.inference.predictor import InsightPredictor
from insight.io.image_io import read_image
from insight.metrics import (
    auroc,
    best_threshold_dice,
    bootstrap_auroc_ci,
    dice,
    embolus_hits,
    expected_calibration_error,
    otsu_mask,
    pointing_game,
    sensitivity_specificity,
)
from insight.training.dataset import read_label_table

__all__ = ["CaseEvaluation", "EvaluationReport", "evaluate_predictor", "clot_mask_path"]

logger = logging.getLogger(__name__)


def clot_mask_path(data_dir: Path, name: str) -> Path:
    """Where ``insight phantom`` puts a case's ground-truth clot mask."""
    return data_dir / "truth" / f"{name}_clot.nii.gz"


@dataclass
class CaseEvaluation:
    """One scan's outcome (localization fields are None without a clot mask or for negatives)."""

    name: str
    label: int
    pe_probability: float
    n_findings: int
    dice_otsu: float | None = None
    dice_findings: float | None = None
    pointing_hit: bool | None = None
    n_emboli: int | None = None
    n_emboli_hit: int | None = None
    n_false_positive_regions: int | None = None
    seconds: float = 0.0


@dataclass
class EvaluationReport:
    """Aggregate figures plus the per-case table."""

    model_version: str
    n_scans: int
    n_positive: int
    metrics: dict[str, Any] = field(default_factory=dict)
    cases: list[CaseEvaluation] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"model_version": self.model_version, "n_scans": self.n_scans, "n_positive": self.n_positive,
                "metrics": self.metrics, "cases": [asdict(c) for c in self.cases]}


def evaluate_predictor(predictor: InsightPredictor, data_dir: str | Path, operating_threshold: float = 0.5,
                       progress: bool = True) -> EvaluationReport:
    """Predict every scan in ``data_dir`` and compute classification and localization figures."""
    root = Path(data_dir)
    cases = read_label_table(root)
    threshold = predictor.config.inference.finding_threshold
    results: list[CaseEvaluation] = []
    heatmaps, masks = [], []
    for case in tqdm(cases, desc="evaluating", disable=not progress, unit="scan"):
        result = predictor.predict_file(case.image_path)
        heat = sitk.GetArrayFromImage(result.heatmap)
        row = CaseEvaluation(case.name, case.label, result.pe_probability, len(result.findings),
                             seconds=float(sum(result.timings_s.values())))
        mask_path = clot_mask_path(root, case.name)
        if mask_path.is_file():
            mask = sitk.GetArrayFromImage(read_image(mask_path)) > 0
            if mask.shape != heat.shape:
                raise InputError(f"{mask_path.name}: mask shape {mask.shape} differs from its image {heat.shape}")
            emboli, hit, false_pos = embolus_hits(heat >= threshold, mask)
            row.n_emboli, row.n_emboli_hit, row.n_false_positive_regions = emboli, hit, false_pos
            if mask.any():
                row.dice_otsu = dice(otsu_mask(heat), mask)
                row.dice_findings = dice(heat >= threshold, mask)
                row.pointing_hit = pointing_game(heat, mask, tolerance_voxels=1)
                heatmaps.append(heat)
                masks.append(mask)
        results.append(row)
    report = EvaluationReport(predictor.model_version, len(results), sum(r.label for r in results), cases=results)
    report.metrics = _aggregate(results, heatmaps, masks, operating_threshold, threshold)
    return report


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def _aggregate(rows: list[CaseEvaluation], heatmaps: list[np.ndarray], masks: list[np.ndarray],
               operating_threshold: float, finding_threshold: float) -> dict[str, Any]:
    labels = np.array([r.label for r in rows])
    probs = np.array([r.pe_probability for r in rows])
    metrics: dict[str, Any] = {"operating_threshold": operating_threshold, "finding_threshold": finding_threshold}
    metrics["auroc"] = auroc(labels, probs)
    if 0 < labels.sum() < len(labels):
        low, high = bootstrap_auroc_ci(labels, probs, n_boot=1000, seed=0)
        metrics["auroc_ci95"] = [low, high]
    sens, spec = sensitivity_specificity(labels, probs, operating_threshold)
    metrics.update(sensitivity=sens, specificity=spec, ece=expected_calibration_error(labels, probs))
    localized = [r for r in rows if r.dice_otsu is not None]
    metrics["n_localized_scans"] = len(localized)
    metrics["dice_otsu_mean"] = _mean([r.dice_otsu for r in localized])
    metrics["dice_findings_mean"] = _mean([r.dice_findings for r in localized])
    metrics["pointing_game"] = _mean([float(r.pointing_hit) for r in localized])
    if heatmaps:
        best_t, best_d = best_threshold_dice(heatmaps, masks)
        metrics["dice_best_threshold"] = {"threshold": best_t, "mean_dice": best_d}
    with_truth = [r for r in rows if r.n_emboli is not None]
    if with_truth:
        n_emboli = sum(r.n_emboli for r in with_truth)
        metrics["emboli"] = n_emboli
        metrics["embolus_sensitivity"] = (sum(r.n_emboli_hit for r in with_truth) / n_emboli) if n_emboli else None
        metrics["false_positive_regions_per_scan"] = float(np.mean([r.n_false_positive_regions for r in with_truth]))
    metrics["seconds_per_scan"] = _mean([r.seconds for r in rows])
    return metrics
