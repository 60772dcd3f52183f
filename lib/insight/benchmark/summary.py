"""From per-scan results to one method's figures (classification, localization, FROC, cost).

Nothing here is chosen on the test split: the operating threshold (``val_youden``) and the
"validation-chosen" Dice threshold come from the validation split; the test-optimal Dice threshold
is reported as well, labelled an oracle (an upper bound, as ``insight evaluate`` reports it).
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
from sklearn.metrics import roc_curve

from insight.benchmark.config import EvaluationSpec
from insight.benchmark.evaluation import CaseResult
from insight.metrics import (DEFAULT_DICE_THRESHOLDS, auroc, bootstrap_auroc_ci, expected_calibration_error,
                             sensitivity_specificity)
from insight.metrics.froc import FROCCurve, froc_curve

__all__ = ["youden_threshold", "summarize_method"]

logger = logging.getLogger(__name__)


def youden_threshold(labels: np.ndarray, probs: np.ndarray, fallback: float = 0.5) -> float:
    """The probability maximising sensitivity + specificity - 1 (first on ties); ``fallback`` when
    ``labels`` hold one class."""
    labels = np.asarray(labels)
    if np.unique(labels).size < 2:
        logger.warning("Youden threshold undefined on one class; using %.2f", fallback)
        return fallback
    fpr, tpr, thresholds = roc_curve(labels, probs)
    finite = np.isfinite(thresholds)
    best = int(np.argmax((tpr - fpr)[finite]))
    return float(np.clip(thresholds[finite][best], 0.0, 1.0))


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def _nan_to_none(value: float) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def _froc_json(curve: FROCCurve, rates: tuple[float, ...]) -> dict[str, Any]:
    return {
        "n_scans": curve.n_scans, "n_emboli": curve.n_emboli,
        "sensitivity_at": {f"{rate:g}": _nan_to_none(curve.sensitivity_at(rate)) for rate in rates},
        "sensitivity_own_threshold": _nan_to_none(float(curve.sensitivity[-1])),
        "fp_per_scan_own_threshold": float(curve.fp_per_scan[-1]),
        "curve": {"fp_per_scan": [round(float(v), 5) for v in curve.fp_per_scan],
                  "sensitivity": [_nan_to_none(round(float(v), 5)) for v in curve.sensitivity]},
    }


def summarize_method(test: list[CaseResult], val: list[CaseResult], spec: EvaluationSpec) -> dict[str, Any]:
    """Figures of one method on the test split (``val`` only chooses thresholds)."""
    labels = np.array([r.label for r in test])
    probs = np.array([r.probability for r in test])
    classification: dict[str, Any] = {"auroc": _nan_to_none(auroc(labels, probs)), "auroc_ci95": None}
    if 0 < labels.sum() < labels.size:
        low, high = bootstrap_auroc_ci(labels, probs, n_boot=spec.bootstrap, seed=0)
        classification["auroc_ci95"] = [_nan_to_none(low), _nan_to_none(high)]
    if spec.operating_threshold == "val_youden":
        threshold = youden_threshold(np.array([r.label for r in val]), np.array([r.probability for r in val]))
    else:
        threshold = float(spec.operating_threshold)
    sens, spec_ = sensitivity_specificity(labels, probs, threshold)
    classification.update(operating_threshold=threshold, operating_threshold_rule=str(spec.operating_threshold),
                          sensitivity=_nan_to_none(sens), specificity=_nan_to_none(spec_),
                          ece=expected_calibration_error(labels, probs))

    localized = [r for r in test if r.dice_curve is not None]
    localization: dict[str, Any] = {
        "n_scans_with_clot": len(localized),
        "dice_own_mean": _mean([r.dice_own for r in localized]),
        "iou_own_mean": _mean([r.iou_own for r in localized]),
        "pointing_game": _mean([float(r.pointing_hit) for r in localized]),
        "flagged_ml_per_scan": _mean([r.flagged_ml for r in test]),
        "dice_val_threshold": None, "dice_oracle_threshold": None,
    }
    if localized:
        test_curve = np.mean([r.dice_curve for r in localized], axis=0)
        oracle = int(np.argmax(test_curve))
        localization["dice_oracle_threshold"] = {"threshold": float(DEFAULT_DICE_THRESHOLDS[oracle]),
                                                 "dice": float(test_curve[oracle])}
        val_curves = [r.dice_curve for r in val if r.dice_curve is not None]
        if val_curves:
            chosen = int(np.argmax(np.mean(val_curves, axis=0)))
            localization["dice_val_threshold"] = {"threshold": float(DEFAULT_DICE_THRESHOLDS[chosen]),
                                                  "dice": float(test_curve[chosen])}
    froc = {"overlap": _froc_json(froc_curve([r.candidates_overlap for r in test]), spec.fp_rates),
            "peak": _froc_json(froc_curve([r.candidates_peak for r in test]), spec.fp_rates)}
    fixed = [r.fixed_features_s for r in test]
    forward = np.add([r.forward_s for r in test], fixed)  # the whole forward pass, shared fixed part included
    backward = [r.backward_s for r in test]
    cost = {"forward_s_mean": float(np.mean(forward)), "backward_s_mean": float(np.mean(backward)),
            "fixed_features_s_mean": float(np.mean(fixed)),
            "model_s_mean": float(np.mean(np.add(forward, backward))),
            "model_s_median": float(np.median(np.add(forward, backward))),
            "to_grid_s_mean": float(np.mean([r.to_grid_s for r in test]))}
    return {"classification": classification, "localization": localization, "froc": froc, "cost": cost,
            "cases": [r.to_json() for r in test]}
