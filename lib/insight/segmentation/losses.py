"""Dice + cross-entropy with a weight per sample (final labels outweigh pseudo-masks)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["WeightedDiceCELoss"]


class WeightedDiceCELoss(torch.nn.Module):
    """Soft Dice of the PE channel over the whole batch plus cross-entropy, each sample weighted.

    With p the softmax PE probability, g the PE target and w_b the weight of sample b::

        dice = 1 - (2 * sum_b w_b sum_v p g + s) / (sum_b w_b sum_v (p + g) + s)
        ce   = sum_b w_b mean_v CE_b / sum_b w_b
        loss = dice + ce

    The Dice is pooled over the batch ("batch Dice", as nnU-Net does for small structures), so a patch
    without PE still counts: its predicted PE enlarges the denominator. A sample of weight 3 counts as
    three copies of itself in both terms. ``s`` = ``smooth`` (1e-5) keeps an all-empty batch finite.

    Shapes: logits [B, 2, Z, Y, X]; target [B, 1, Z, Y, X] (0/1); weights [B] (> 0).
    """

    def __init__(self, smooth: float = 1e-5) -> None:
        super().__init__()
        self.smooth = float(smooth)

    def forward(self, logits: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        if (logits.ndim != 5 or logits.shape[1] != 2 or target.shape != (logits.shape[0], 1, *logits.shape[2:])
                or weights.shape != (logits.shape[0],)):
            raise ValueError(f"expected logits [B, 2, Z, Y, X], target [B, 1, Z, Y, X], weights [B]; got "
                             f"{tuple(logits.shape)}, {tuple(target.shape)}, {tuple(weights.shape)}")
        logits = logits.float()
        labels = target[:, 0].long()
        weights = weights.to(logits.dtype)
        probability = torch.softmax(logits, dim=1)[:, 1]
        truth = (labels == 1).to(logits.dtype)
        intersection = (weights * (probability * truth).flatten(1).sum(1)).sum()
        denominator = (weights * (probability + truth).flatten(1).sum(1)).sum()
        dice = 1.0 - (2.0 * intersection + self.smooth) / (denominator + self.smooth)
        ce = F.cross_entropy(logits, labels, reduction="none").flatten(1).mean(1)
        return dice + (weights * ce).sum() / weights.sum()
