"""Scan-level pooling of heatmaps and the per-class Otsu threshold.

Shapes: heatmaps are [N, K, h, w] (N slices, K classes, h x w feature locations per slice).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["SmoothMaxPool", "MaxPool", "otsu_threshold", "zero_below_otsu", "build_pooling"]


class SmoothMaxPool(nn.Module):
    """SmoothMax over all N*h*w locations per class: s = sum(x * exp(a x)) / sum(exp(a x)).

    Args:
        alpha: sharpness a; a -> 0 gives the mean, a -> inf the max. The paper uses 8.

    Input [N, K, h, w] with values in [0, 1]; output [K].
    """

    def __init__(self, alpha: float = 8.0) -> None:
        super().__init__()
        if alpha <= 0:
            raise ValueError(f"alpha must be > 0, got {alpha}")
        self.alpha = float(alpha)

    def forward(self, heatmap: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``mask`` [N, 1, h, w] bool: only these locations are pooled (all when None or empty)."""
        flat = heatmap.transpose(0, 1).reshape(heatmap.shape[1], -1).float()
        logits = self.alpha * flat
        keep = _flat_mask(mask, flat)
        if keep is not None:
            logits = logits.masked_fill(~keep, float("-inf"))
        weights = torch.softmax(logits, dim=1)  # exp(a x) / sum exp(a x) over kept locations, overflow-safe
        return (flat * weights).sum(dim=1)


class MaxPool(nn.Module):
    """Plain max over all locations per class: [N, K, h, w] -> [K]."""

    def forward(self, heatmap: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``mask`` [N, 1, h, w] bool: only these locations are pooled (all when None or empty)."""
        flat = heatmap.transpose(0, 1).reshape(heatmap.shape[1], -1).float()
        keep = _flat_mask(mask, flat)
        if keep is not None:
            flat = flat.masked_fill(~keep, float("-inf"))
        return flat.amax(dim=1)


def _flat_mask(mask: torch.Tensor | None, flat: torch.Tensor) -> torch.Tensor | None:
    """A [N, 1, h, w] location mask as [1, N*h*w] matching ``flat`` [K, N*h*w]; None if absent or empty."""
    if mask is None:
        return None
    keep = mask.reshape(1, -1).to(torch.bool)
    if keep.shape[1] != flat.shape[1]:
        raise ValueError(f"mask has {keep.shape[1]} locations, heatmap {flat.shape[1]}")
    return keep if bool(keep.any()) else None


def build_pooling(name: str, alpha: float) -> nn.Module:
    if name == "smoothmax":
        return SmoothMaxPool(alpha)
    if name == "max":
        return MaxPool()
    raise ValueError(f"unknown pooling {name!r}: use 'smoothmax' or 'max'")


@torch.no_grad()
def otsu_threshold(values: torch.Tensor, bins: int = 256) -> torch.Tensor:
    """Otsu's threshold of a set of values in [0, 1] (any shape), as a 0-d tensor.

    Maximizes the between-class variance over a ``bins``-bin histogram of [0, 1]; returns the
    upper edge of the best "low" bin. Constant input returns that constant.
    """
    flat = values.detach().float().reshape(-1)
    low, high = flat.min(), flat.max()
    if bool(high - low <= 1e-12):
        return high.clone()
    hist = torch.histc(flat, bins=bins, min=0.0, max=1.0)
    centers = (torch.arange(bins, device=flat.device, dtype=torch.float32) + 0.5) / bins
    weight_low = torch.cumsum(hist, 0)
    weight_high = weight_low[-1] - weight_low
    mass_low = torch.cumsum(hist * centers, 0)
    mean_low = mass_low / weight_low.clamp_min(1e-12)
    mean_high = (mass_low[-1] - mass_low) / weight_high.clamp_min(1e-12)
    between = weight_low * weight_high * (mean_low - mean_high) ** 2
    best = int(torch.argmax(between[:-1]))
    return torch.tensor((best + 1) / bins, device=flat.device)


def zero_below_otsu(heatmap: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Zero each class's values below its Otsu threshold. [N, K, h, w] -> same.

    The threshold is computed over the locations in ``mask`` ([N, 1, h, w] bool) when given and
    not empty, else over all locations.
    """
    def values(k: int) -> torch.Tensor:
        if mask is not None and bool(mask.any()):
            return heatmap[:, k][mask[:, 0]]
        return heatmap[:, k]

    thresholds = torch.stack([otsu_threshold(values(k)) for k in range(heatmap.shape[1])])
    keep = heatmap >= thresholds.view(1, -1, 1, 1).to(heatmap.dtype)
    return heatmap * keep
