"""Scan-probability calibration folded into the detection module (Platt scaling on labelled scans).

Why: with max pooling over ~1e5 heatmap locations, a detector trained on instances gives every scan a
high p(PE): anomaly-seeded training ranked validation phantoms at AUROC 0.9 while giving normal
scans p = 0.92 and PE scans 0.93 (docs: sample-data/models/MODEL_CARD.md). The ranking is right, the
numbers are not, and the findings (heatmap >= 0.5) then appear in every scan.

Platt scaling fits p' = sigmoid(a * logit(p) + b) on labelled scans (a site's own validation set).
Because the detection module ends in a 1x1 conv (linear in its input), the same map on every
location is exact to fold into that conv: logits' = a * logits + b. So the calibrated model is an
ordinary checkpoint: heatmap, findings and p(PE) all move together, and nothing at inference
changes. This commutes with the pooling only for max pooling (SmoothMax reweights locations by
their values: measured, a tiny SmoothMax model's AUROC went from 0.94 to 0.31). With a context
module near neutral (H = D * (1 - X), X ~ 0, as after anomaly seeding) the folded model's p(PE) is
the Platt-scaled one up to that factor; ``insight calibrate`` measures the folded model again
rather than assume it.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression

from insight.errors import InputError
from insight.models.insight_model import InsightModel

__all__ = ["PlattScaling", "fit_platt_scaling", "fold_into_detection", "probability_logits"]

_EPS = 1e-6


@dataclass(frozen=True)
class PlattScaling:
    """logit' = slope * logit + intercept."""

    slope: float
    intercept: float

    def apply(self, probabilities: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-(self.slope * probability_logits(probabilities) + self.intercept)))


def probability_logits(probabilities: np.ndarray) -> np.ndarray:
    """logit(p) of [n] probabilities, clipped to [1e-6, 1 - 1e-6]."""
    p = np.clip(np.asarray(probabilities, dtype=np.float64), _EPS, 1.0 - _EPS)
    return np.log(p) - np.log1p(-p)


def fit_platt_scaling(probabilities: np.ndarray, labels: np.ndarray) -> PlattScaling:
    """Logistic regression of ``labels`` [n] (0/1) on logit(``probabilities``) [n] (unpenalised).

    Raises:
        InputError: fewer than 4 scans, or not both labels.
    """
    labels = np.asarray(labels, dtype=int)
    if len(labels) < 4 or set(labels.tolist()) != {0, 1}:
        raise InputError(f"calibration needs at least 4 labelled scans with both PE and no PE; got {len(labels)} "
                         f"scans with labels {sorted(set(labels.tolist()))}")
    x = probability_logits(probabilities)[:, None]
    fit = LogisticRegression(C=1e6, max_iter=1000).fit(x, labels)
    slope, intercept = float(fit.coef_[0, 0]), float(fit.intercept_[0])
    if not (math.isfinite(slope) and math.isfinite(intercept)) or slope <= 0:
        raise InputError(f"the model's p(PE) does not rise with PE on these scans (fitted slope {slope:.3g}): "
                         "calibration would invert its ranking; it is not applied")
    return PlattScaling(slope, intercept)


@torch.no_grad()
def fold_into_detection(model: InsightModel, scaling: PlattScaling) -> None:
    """Make the detection module's logits ``slope * logits + intercept`` (its last 1x1 conv, in place)."""
    last = model.detection.layers[-1]
    last.weight.mul_(scaling.slope)
    last.bias.mul_(scaling.slope).add_(scaling.intercept)
