"""Free-response ROC (FROC): per-embolus sensitivity against false-positive regions per scan.

Candidates: the connected regions (26-connectivity, :func:`insight.metrics.label_components`) of a
scan's candidate mask, usually the heatmap above the method's own threshold. Each candidate is
scored by its **peak** heatmap value. An operating point keeps the candidates whose peak is
>= a score threshold, across all scans at once; sweeping that threshold down from +inf traces
the curve.

Hit rules (both decided by :func:`insight.metrics.match_regions`, the one place the rule lives):

- ``"overlap"`` (the documented rule): an embolus (26-connected component of the clot mask) is
  hit when at least one kept candidate region overlaps it by >= 1 voxel; a kept candidate that
  overlaps no embolus is one false positive. Lenient for large regions: one region covering
  half the chest hits every embolus it touches, so report region volumes beside it.
- ``"peak"``: each candidate is reduced to its peak voxel, and the emboli are grown by
  ``tolerance_voxels`` (chessboard distance) first; a candidate hits an embolus when its peak
  lies in it (CAD-PE style "the mark lies in the clot").

Sensitivity at ``k`` false positives per scan is the highest sensitivity of any operating point
whose mean number of false-positive candidates per scan (over **all** scans, negatives
included) is <= ``k`` (a step function; no interpolation).

Shapes: heatmaps and masks are numpy arrays of one common shape, [z, y, x] for CT volumes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy import ndimage

from insight.metrics.localization import label_components, match_regions

__all__ = ["FP_RATES", "HIT_RULES", "ScanCandidates", "FROCCurve", "scan_candidates", "froc_curve"]

#: False-positive regions per scan at which sensitivity is reported (CAD-PE reports 2).
FP_RATES = (0.5, 1.0, 2.0, 4.0)
HIT_RULES = ("overlap", "peak")


@dataclass(frozen=True)
class ScanCandidates:
    """One scan's candidates and how they matched its emboli.

    Attributes:
        scores: [n_candidates] float64, each candidate region's peak heatmap value.
        is_false_positive: [n_candidates] bool, the candidate hits no embolus.
        volumes_voxels: [n_candidates] int64, each candidate region's size in voxels.
        embolus_scores: [n_emboli] float64, the highest score among candidates hitting each
            embolus (-inf when none does): the embolus counts as found at thresholds <= it.
    """

    scores: np.ndarray
    is_false_positive: np.ndarray
    volumes_voxels: np.ndarray
    embolus_scores: np.ndarray

    @property
    def n_candidates(self) -> int:
        return int(self.scores.size)

    @property
    def n_emboli(self) -> int:
        return int(self.embolus_scores.size)


@dataclass(frozen=True)
class FROCCurve:
    """Operating points of a set of scans, from the strictest (nothing kept) to the loosest.

    Attributes:
        thresholds: [P] descending; point i keeps candidates with score >= thresholds[i]
            (thresholds[0] = +inf keeps none).
        fp_per_scan: [P] false-positive candidates per scan, non-decreasing.
        sensitivity: [P] fraction of emboli hit, non-decreasing (NaN when there are no emboli).
        n_scans, n_emboli: the denominators.
    """

    thresholds: np.ndarray
    fp_per_scan: np.ndarray
    sensitivity: np.ndarray
    n_scans: int
    n_emboli: int

    def sensitivity_at(self, fp_rate: float) -> float:
        """Highest sensitivity with <= ``fp_rate`` false positives per scan (NaN without emboli)."""
        if not np.isfinite(fp_rate) or fp_rate < 0:
            raise ValueError(f"fp_rate must be a finite number >= 0, got {fp_rate}")
        if self.n_emboli == 0:
            return float("nan")
        allowed = self.fp_per_scan <= fp_rate + 1e-12
        return float(self.sensitivity[allowed].max())  # point 0 (nothing kept) is always allowed

    def sensitivities(self, fp_rates: Sequence[float] = FP_RATES) -> dict[float, float]:
        """``{rate: sensitivity_at(rate)}`` for each rate."""
        return {float(rate): self.sensitivity_at(rate) for rate in fp_rates}


def scan_candidates(heatmap: ArrayLike, true_mask: ArrayLike, candidate_mask: ArrayLike,
                    rule: str = "overlap", tolerance_voxels: int = 1) -> ScanCandidates:
    """Extract one scan's candidates from ``candidate_mask`` and match them against its emboli.

    Args:
        heatmap: [z, y, x] real values (the candidates' scores are their peaks here).
        true_mask: ground-truth clot mask, same shape (may be empty: a negative scan).
        candidate_mask: bool, same shape: where candidate regions lie (e.g. heatmap > threshold).
        rule: ``"overlap"`` or ``"peak"`` (see the module docstring).
        tolerance_voxels: how far the ``"peak"`` rule grows each embolus (ignored for ``"overlap"``).
    """
    if rule not in HIT_RULES:
        raise ValueError(f"rule must be one of {HIT_RULES}, got {rule!r}")
    if int(tolerance_voxels) != tolerance_voxels or tolerance_voxels < 0:
        raise ValueError(f"tolerance_voxels must be a non-negative integer, got {tolerance_voxels}")
    heat = np.asarray(heatmap, dtype=np.float64)
    truth = np.asarray(true_mask) != 0
    candidates = np.asarray(candidate_mask, dtype=bool)
    if not (heat.shape == truth.shape == candidates.shape):
        raise ValueError(f"heatmap {heat.shape}, true_mask {truth.shape} and candidate_mask {candidates.shape} "
                         "must have one shape")
    if not np.all(np.isfinite(heat[candidates])):
        raise ValueError("heatmap holds NaN or infinite values inside the candidate mask")
    candidate_labels, n_candidates = label_components(candidates)
    true_labels, n_emboli = label_components(truth)
    # per-candidate peak and size from the candidate voxels alone (ndimage.maximum sorts the whole volume)
    voxels = np.flatnonzero(candidate_labels)
    labels = candidate_labels.ravel()[voxels]
    values = heat.ravel()[voxels]
    scores = np.full(n_candidates, -np.inf)
    np.maximum.at(scores, labels - 1, values)
    volumes = np.bincount(labels, minlength=n_candidates + 1)[1:].astype(np.int64)
    if rule == "peak":
        at_peak = values == scores[labels - 1]
        peak_labels_found, first = np.unique(labels[at_peak], return_index=True)  # first peak voxel, C order
        peak_labels = np.zeros_like(candidate_labels)
        peak_labels.ravel()[voxels[at_peak][first]] = peak_labels_found
        candidate_labels = peak_labels
        if tolerance_voxels > 0 and n_emboli:
            true_labels = _grow_labels(true_labels, int(tolerance_voxels))
    match = match_regions(candidate_labels, true_labels, n_regions=n_candidates, n_emboli=n_emboli)
    both = (candidate_labels > 0) & (true_labels > 0)
    embolus_scores = np.full(n_emboli, -np.inf)
    np.maximum.at(embolus_scores, true_labels[both] - 1, scores[candidate_labels[both] - 1])
    if not np.array_equal(np.isfinite(embolus_scores), match.embolus_hit):  # pragma: no cover - a bug guard
        raise AssertionError("per-embolus scores disagree with match_regions")
    return ScanCandidates(scores, match.region_is_false_positive.copy(), volumes, embolus_scores)


def _grow_labels(labels: np.ndarray, radius: int) -> np.ndarray:
    """Grow every label by ``radius`` voxels (chessboard), within the labels' bounding box plus ``radius``.

    Emboli are separate 26-connected components, so an embolus keeps all its own voxels; a background
    voxel within reach of two emboli takes the larger label.
    """
    present = np.argwhere(labels > 0)
    low = np.maximum(present.min(axis=0) - radius, 0)
    high = np.minimum(present.max(axis=0) + radius + 1, labels.shape)
    box = tuple(slice(a, b) for a, b in zip(low, high))
    grown = labels.copy()
    grown[box] = ndimage.grey_dilation(labels[box], size=(2 * radius + 1,) * labels.ndim)
    return grown


def froc_curve(scans: Sequence[ScanCandidates]) -> FROCCurve:
    """The FROC operating points of ``scans`` (every scan counts in the per-scan FP rate)."""
    if len(scans) == 0:
        raise ValueError("froc_curve needs at least one scan")
    scores = np.concatenate([s.scores for s in scans])
    false_pos = np.concatenate([s.is_false_positive for s in scans]).astype(bool)
    emboli = np.concatenate([s.embolus_scores for s in scans])
    thresholds = np.concatenate([[np.inf], np.unique(scores)[::-1]])
    # count of values >= t for each threshold t, via a sorted array
    fp_sorted = np.sort(scores[false_pos])
    hit_sorted = np.sort(emboli[np.isfinite(emboli)])
    fp_counts = fp_sorted.size - np.searchsorted(fp_sorted, thresholds, side="left")
    hit_counts = hit_sorted.size - np.searchsorted(hit_sorted, thresholds, side="left")
    n_scans, n_emboli = len(scans), int(emboli.size)
    sensitivity = hit_counts / n_emboli if n_emboli else np.full(thresholds.size, np.nan)
    return FROCCurve(thresholds, fp_counts / n_scans, np.asarray(sensitivity, dtype=np.float64), n_scans, n_emboli)
