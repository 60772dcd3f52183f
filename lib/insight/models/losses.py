"""The INSIGHT training loss: BCE on pooled scan probabilities, spectral decoupling, and an optional
hard-negative instance term that uses what a negative scan label says about every location.

Why the instance term: a scan labelled "no PE" says that *no* location holds an embolus, so every
heatmap location of a negative scan is a known negative instance (standard MIL reasoning; it uses
the scan label alone, never a mask). BCE on the pooled score alone only pushes the single hottest
region of a negative scan down per step; on CTPA phantoms full of clot look-alikes (lymph nodes,
flow artifacts) that gave a constant heatmap and a loss stuck at ln 2 (see the model card). The
instance term pushes down the hardest ``negative_topk_fraction`` of a negative scan's locations
at once, so the look-alikes are learned as background.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["InsightLoss"]

_EPS = 1e-6
#: The hard-negative term averages at least this many locations per class.
_MIN_TOPK = 8


class InsightLoss(nn.Module):
    """``BCE(p, y) + (lambda / 2) * mean(detection_logits ** 2) + w * [y == 0] * HNM(H)``.

    Args:
        spectral_lambda: weight of the spectral-decoupling penalty (0.01 in the paper).
        negative_weight: weight ``w`` of the hard-negative instance term (0 = the paper's loss).
        negative_topk_fraction: fraction of a negative scan's locations (the highest heatmap values)
            that the term averages ``-log(1 - H)`` over.

    ``forward(probability [K], target [K], detection_logits [N, K, h, w], heatmap [N, K, h, w] | None)``
    returns a 0-d tensor. Probabilities are mapped affinely onto [1e-6, 1 - 1e-6], so a saturated
    pool gives neither an infinite loss nor a zero gradient. The instance term needs ``heatmap`` when ``negative_weight > 0``.
    """

    def __init__(self, spectral_lambda: float = 0.01, negative_weight: float = 0.0,
                 negative_topk_fraction: float = 0.01) -> None:
        super().__init__()
        if spectral_lambda < 0:
            raise ValueError(f"spectral_lambda must be >= 0, got {spectral_lambda}")
        if negative_weight < 0:
            raise ValueError(f"negative_weight must be >= 0, got {negative_weight}")
        if not 0.0 < negative_topk_fraction <= 1.0:
            raise ValueError(f"negative_topk_fraction must be in (0, 1], got {negative_topk_fraction}")
        self.spectral_lambda = float(spectral_lambda)
        self.negative_weight = float(negative_weight)
        self.negative_topk_fraction = float(negative_topk_fraction)

    def forward(self, probability: torch.Tensor, target: torch.Tensor, detection_logits: torch.Tensor,
                heatmap: torch.Tensor | None = None) -> torch.Tensor:
        if probability.shape != target.shape:
            raise ValueError(f"probability {tuple(probability.shape)} and target {tuple(target.shape)} differ in shape")
        # squeeze into [eps, 1 - eps] affinely (a clamp would stop the gradient of a saturated pool)
        bce = F.binary_cross_entropy(probability.float() * (1 - 2 * _EPS) + _EPS, target.float())
        loss = bce + 0.5 * self.spectral_lambda * detection_logits.float().pow(2).mean()
        if self.negative_weight > 0:
            if heatmap is None:
                raise ValueError("the hard-negative instance term needs the heatmap")
            loss = loss + self.negative_weight * self.hard_negative_term(heatmap, target)
        return loss

    def hard_negative_term(self, heatmap: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean ``-log(1 - H)`` over the top fraction of locations of each class whose target is 0.

        ``heatmap`` [N, K, h, w] in [0, 1], ``target`` [K]; 0 when no class is negative.
        """
        flat = heatmap.transpose(0, 1).reshape(heatmap.shape[1], -1).float()  # [K, N*h*w]
        negative = target.float() < 0.5
        if not bool(negative.any()):
            return flat.new_zeros(())
        k = min(flat.shape[1], max(_MIN_TOPK, int(round(self.negative_topk_fraction * flat.shape[1]))))
        hardest = flat[negative].topk(k, dim=1).values
        return -torch.log((1.0 - hardest).clamp_min(_EPS)).mean()
