"""Voxel-level localization metrics: Dice, IoU, Otsu masks, pointing game, per-embolus hits.

Shapes: every heatmap and mask is a numpy array of one common shape, [z, y, x] for CT volumes
(any number of dimensions works). Heatmaps are floats in [0, 1]; masks are bool or integer
arrays where any non-zero voxel counts as foreground.

Per-embolus matching (the rule shared with FROC, see :func:`match_regions`):
emboli are the 26-connected components of the ground-truth mask, predicted regions the
26-connected components of the predicted mask. An embolus is **hit** when at least one predicted
region overlaps it by >= 1 voxel; a predicted region that overlaps no embolus is a **false
positive**. One region may hit several emboli, and several regions may hit one embolus.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy import ndimage
from skimage.filters import threshold_otsu

__all__ = [
    "DEFAULT_DICE_THRESHOLDS",
    "RegionMatch",
    "dice",
    "iou",
    "otsu_mask",
    "best_threshold_dice",
    "pointing_game",
    "label_components",
    "match_regions",
    "embolus_hits",
]

logger = logging.getLogger(__name__)

#: Thresholds searched by :func:`best_threshold_dice`: 0.05, 0.10, ..., 0.95.
DEFAULT_DICE_THRESHOLDS = np.linspace(0.05, 0.95, 19)


def _as_mask(mask: ArrayLike, name: str) -> np.ndarray:
    arr = np.asarray(mask)
    if arr.size == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape})")
    return arr if arr.dtype == bool else arr != 0


def _check_same_shape(a: np.ndarray, b: np.ndarray, name_a: str, name_b: str) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{name_a} and {name_b} differ in shape: {a.shape} vs {b.shape}")


def _as_heatmap(heatmap: ArrayLike, name: str = "heatmap") -> np.ndarray:
    arr = np.asarray(heatmap)
    if arr.size == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape})")
    if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
        raise ValueError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    return arr


def _overlap_counts(pred_mask: ArrayLike, true_mask: ArrayLike) -> tuple[int, int, int]:
    pred = _as_mask(pred_mask, "pred_mask")
    true = _as_mask(true_mask, "true_mask")
    _check_same_shape(pred, true, "pred_mask", "true_mask")
    inter = int(np.count_nonzero(pred & true))
    return inter, int(np.count_nonzero(pred)), int(np.count_nonzero(true))


def dice(pred_mask: ArrayLike, true_mask: ArrayLike) -> float:
    """Dice overlap 2|P & T| / (|P| + |T|) of two masks of the same shape.

    Returns 1.0 when both masks are empty and 0.0 when exactly one is.
    """
    inter, n_pred, n_true = _overlap_counts(pred_mask, true_mask)
    if n_pred + n_true == 0:
        return 1.0
    return 2.0 * inter / (n_pred + n_true)


def iou(pred_mask: ArrayLike, true_mask: ArrayLike) -> float:
    """Intersection over union |P & T| / |P | T| (Jaccard) of two masks of the same shape.

    Returns 1.0 when both masks are empty and 0.0 when exactly one is. Related to Dice by
    IoU = Dice / (2 - Dice).
    """
    inter, n_pred, n_true = _overlap_counts(pred_mask, true_mask)
    union = n_pred + n_true - inter
    if union == 0:
        return 1.0
    return inter / union


def otsu_mask(heatmap: ArrayLike) -> np.ndarray:
    """Foreground of a heatmap by Otsu's threshold over all its voxels.

    Args:
        heatmap: [z, y, x] (any shape) real values, typically in [0, 1].

    Returns:
        bool array of the heatmap's shape, True where ``heatmap > threshold_otsu(heatmap)``
        (scikit-image's convention); all False for a constant heatmap.
    """
    arr = _as_heatmap(heatmap)
    if not np.all(np.isfinite(arr)):
        raise ValueError("heatmap holds NaN or infinite values")
    if arr.min() == arr.max():
        logger.debug("otsu_mask: constant heatmap (%g); empty mask", float(arr.flat[0]))
        return np.zeros(arr.shape, dtype=bool)
    return arr > threshold_otsu(arr)


def best_threshold_dice(heatmaps: Sequence[ArrayLike], masks: Sequence[ArrayLike],
                        thresholds: ArrayLike = DEFAULT_DICE_THRESHOLDS) -> tuple[float, float]:
    """The single threshold, shared by all cases, that maximizes the mean Dice of ``heatmap >= t``.

    Args:
        heatmaps: C heatmaps, each [z, y, x] in [0, 1] (shapes may differ between cases).
        masks: C ground-truth masks, each the shape of its heatmap.
        thresholds: [T] candidate thresholds.

    Returns:
        (threshold, mean Dice over the C cases at that threshold); ties go to the lowest
        threshold. Per-case Dice follows :func:`dice` (both empty counts 1.0).
    """
    if len(heatmaps) != len(masks):
        raise ValueError(f"got {len(heatmaps)} heatmaps but {len(masks)} masks")
    if len(heatmaps) == 0:
        raise ValueError("heatmaps and masks are empty: need at least one case")
    ts = np.asarray(thresholds, dtype=np.float64)
    if ts.ndim != 1 or ts.size == 0:
        raise ValueError(f"thresholds must be a non-empty 1-D sequence, got shape {ts.shape}")
    if not np.all(np.isfinite(ts)):
        raise ValueError("thresholds hold NaN or infinite values")
    order = np.argsort(ts, kind="stable")
    ts = ts[order]
    dice_sum = np.zeros(ts.size)
    for case, (heatmap, mask) in enumerate(zip(heatmaps, masks)):
        hm = _as_heatmap(heatmap, f"heatmaps[{case}]")
        true = _as_mask(mask, f"masks[{case}]")
        _check_same_shape(hm, true, f"heatmaps[{case}]", f"masks[{case}]")
        n_true = np.count_nonzero(true)
        # Compare in the heatmap's own dtype, as ``hm >= t`` does, so float32 maps agree with
        # masks made elsewhere at the same threshold.
        ts_case = ts.astype(hm.dtype) if np.issubdtype(hm.dtype, np.floating) else ts
        # |P & T| for every threshold by one sort of the (few) foreground scores; |P| by a count.
        true_scores = np.sort(hm[true], kind="stable")
        inter = true_scores.size - np.searchsorted(true_scores, ts_case, side="left")
        n_pred = np.array([np.count_nonzero(hm >= t) for t in ts_case])
        denom = n_pred + n_true
        dice_sum += np.where(denom == 0, 1.0, 2.0 * inter / np.maximum(denom, 1))
    mean_dice = dice_sum / len(heatmaps)
    best = int(np.argmax(mean_dice))
    logger.debug("best_threshold_dice: mean Dice %s at thresholds %s", np.round(mean_dice, 4), ts)
    return float(ts[best]), float(mean_dice[best])


def pointing_game(heatmap: ArrayLike, true_mask: ArrayLike, tolerance_voxels: int = 1) -> bool:
    """Whether the heatmap's maximum lies in the ground-truth mask, up to a tolerance.

    The peak is ``np.argmax`` of the heatmap (the first voxel in [z, y, x] order on ties). It is
    a hit when some mask voxel lies within ``tolerance_voxels`` of it along every axis
    (chessboard distance), i.e. the peak lies in the mask dilated by a (2t+1)^d cube.

    Args:
        heatmap: [z, y, x] real values.
        true_mask: ground truth, same shape; must hold at least one foreground voxel.
        tolerance_voxels: dilation radius t >= 0 in voxels; 0 asks for the peak inside the mask.

    Raises:
        ValueError: shapes differ, the mask is empty, or the tolerance is negative.
    """
    if int(tolerance_voxels) != tolerance_voxels or tolerance_voxels < 0:
        raise ValueError(f"tolerance_voxels must be a non-negative integer, got {tolerance_voxels}")
    hm = _as_heatmap(heatmap)
    true = _as_mask(true_mask, "true_mask")
    _check_same_shape(hm, true, "heatmap", "true_mask")
    if not true.any():
        raise ValueError("pointing_game needs a non-empty true_mask (undefined for negative cases)")
    if np.isnan(hm).any():
        raise ValueError("heatmap holds NaN values")
    peak = np.unravel_index(int(np.argmax(hm)), hm.shape)
    t = int(tolerance_voxels)
    window = tuple(slice(max(p - t, 0), p + t + 1) for p in peak)
    return bool(true[window].any())


def label_components(mask: ArrayLike) -> tuple[np.ndarray, int]:
    """Fully connected components of a mask (26-connectivity in 3D; 3^d - 1 neighbours in d-D).

    Returns:
        (int32 label array of the mask's shape with background 0 and components 1..n, n).
    """
    m = _as_mask(mask, "mask")
    structure = ndimage.generate_binary_structure(m.ndim, m.ndim)
    labels, n = ndimage.label(m, structure=structure, output=np.int32)
    return labels, int(n)


@dataclass(frozen=True)
class RegionMatch:
    """Outcome of matching predicted regions against ground-truth emboli (:func:`match_regions`).

    Attributes:
        embolus_hit: [n_emboli] bool; entry i is embolus label i + 1.
        region_is_false_positive: [n_regions] bool; entry j is predicted region label j + 1.
    """

    embolus_hit: np.ndarray
    region_is_false_positive: np.ndarray

    @property
    def n_emboli(self) -> int:
        return int(self.embolus_hit.size)

    @property
    def n_regions(self) -> int:
        return int(self.region_is_false_positive.size)

    @property
    def n_hit(self) -> int:
        return int(np.count_nonzero(self.embolus_hit))

    @property
    def n_false_positive_regions(self) -> int:
        return int(np.count_nonzero(self.region_is_false_positive))


def match_regions(pred_labels: np.ndarray, true_labels: np.ndarray,
                  n_regions: int | None = None, n_emboli: int | None = None) -> RegionMatch:
    """Apply the per-embolus hit rule to two label images (the one place the rule lives).

    An embolus is hit when at least one predicted region overlaps it by >= 1 voxel; a predicted
    region that overlaps no embolus is a false positive.

    Args:
        pred_labels: integer label image of predicted regions, 0 = background, regions 1..n_regions
            (e.g. from :func:`label_components` of a thresholded heatmap).
        true_labels: integer label image of emboli, same shape, 0 = background, emboli 1..n_emboli.
        n_regions, n_emboli: number of labels; default the label image's maximum.

    Returns:
        A :class:`RegionMatch` with per-embolus and per-region outcomes.
    """
    pred = np.asarray(pred_labels)
    true = np.asarray(true_labels)
    _check_same_shape(pred, true, "pred_labels", "true_labels")
    for name, arr in (("pred_labels", pred), ("true_labels", true)):
        if not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"{name} must be an integer label image, got dtype {arr.dtype}")
        if arr.size and arr.min() < 0:
            raise ValueError(f"{name} holds negative labels")
    n_regions = int(pred.max(initial=0)) if n_regions is None else int(n_regions)
    n_emboli = int(true.max(initial=0)) if n_emboli is None else int(n_emboli)
    if pred.max(initial=0) > n_regions or true.max(initial=0) > n_emboli:
        raise ValueError("a label exceeds the given n_regions / n_emboli")
    both = (pred > 0) & (true > 0)
    embolus_hit = np.zeros(n_emboli, dtype=bool)
    region_overlaps = np.zeros(n_regions, dtype=bool)
    embolus_hit[true[both] - 1] = True
    region_overlaps[pred[both] - 1] = True
    return RegionMatch(embolus_hit=embolus_hit, region_is_false_positive=~region_overlaps)


def embolus_hits(pred_mask: ArrayLike, true_mask: ArrayLike) -> tuple[int, int, int]:
    """Per-embolus detection counts of a predicted mask.

    Emboli are the 26-connected components of ``true_mask``, predicted regions the 26-connected
    components of ``pred_mask``. An embolus is hit when at least one predicted region overlaps it
    by >= 1 voxel; a predicted region that overlaps no embolus is a false positive
    (rule in :func:`match_regions`).

    Returns:
        (n_emboli, n_hit, n_false_positive_regions).
    """
    pred = _as_mask(pred_mask, "pred_mask")
    true = _as_mask(true_mask, "true_mask")
    _check_same_shape(pred, true, "pred_mask", "true_mask")
    pred_labels, n_regions = label_components(pred)
    true_labels, n_emboli = label_components(true)
    match = match_regions(pred_labels, true_labels, n_regions=n_regions, n_emboli=n_emboli)
    return match.n_emboli, match.n_hit, match.n_false_positive_regions
