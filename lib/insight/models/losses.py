"""The INSIGHT training loss: BCE on pooled scan probabilities plus spectral decoupling."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["InsightLoss"]

_EPS = 1e-6


class InsightLoss(nn.Module):
    """``BCE(p, y) + (lambda / 2) * mean(detection_logits ** 2)``.

    Args:
        spectral_lambda: weight of the spectral-decoupling penalty (0.01 in the paper).

    ``forward(probability [K], target [K], detection_logits [N, K, h, w])`` returns a 0-d tensor.
    The probability is clamped to [1e-6, 1 - 1e-6] so a saturated pool cannot give an infinite loss.
    """

    def __init__(self, spectral_lambda: float = 0.01) -> None:
        super().__init__()
        if spectral_lambda < 0:
            raise ValueError(f"spectral_lambda must be >= 0, got {spectral_lambda}")
        self.spectral_lambda = float(spectral_lambda)

    def forward(self, probability: torch.Tensor, target: torch.Tensor, detection_logits: torch.Tensor) -> torch.Tensor:
        if probability.shape != target.shape:
            raise ValueError(f"probability {tuple(probability.shape)} and target {tuple(target.shape)} differ in shape")
        bce = F.binary_cross_entropy(probability.float().clamp(_EPS, 1 - _EPS), target.float())
        penalty = 0.5 * self.spectral_lambda * detection_logits.float().pow(2).mean()
        return bce + penalty
