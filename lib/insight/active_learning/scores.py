"""Per-case selection scores: higher means more worth a clinician's correction."""

from __future__ import annotations

import math

import numpy as np

from insight.errors import InputError

__all__ = ["binary_entropy", "mask_disagreement"]


def binary_entropy(probability: float) -> float:
    """Entropy of a Bernoulli(p) in bits, in [0, 1]: 1 at p = 0.5, 0 at p = 0 or 1 (p is clipped to [0, 1])."""
    p = min(max(float(probability), 0.0), 1.0)
    if p in (0.0, 1.0):
        return 0.0
    return float(-(p * math.log2(p) + (1.0 - p) * math.log2(1.0 - p)))


def mask_disagreement(heatmap_mask: np.ndarray, segmentation_mask: np.ndarray) -> dict[str, float | int]:
    """``1 - Dice`` of two masks of one shape (non-zero = foreground; both empty: 0), with the voxel counts.

    Args:
        heatmap_mask: [Z, Y, X] mask derived from a heatmap (e.g. heatmap >= finding threshold).
        segmentation_mask: [Z, Y, X] mask of a segmentation model, on the same grid.

    Returns:
        ``value`` (1 - Dice, in [0, 1]), ``dice``, ``heatmap_voxels``, ``mask_voxels``.

    Raises:
        InputError: the masks differ in shape.
    """
    if heatmap_mask.shape != segmentation_mask.shape:
        raise InputError(f"heatmap mask {heatmap_mask.shape} and segmentation mask {segmentation_mask.shape} "
                         "are not on one grid")
    a, b = heatmap_mask.astype(bool), segmentation_mask.astype(bool)
    total = int(a.sum()) + int(b.sum())
    dice = 1.0 if total == 0 else 2.0 * float(np.logical_and(a, b).sum()) / total
    return {"value": 1.0 - dice, "dice": dice, "heatmap_voxels": int(a.sum()), "mask_voxels": int(b.sum())}
