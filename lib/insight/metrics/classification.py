"""Scan-level classification metrics: AUROC with a bootstrap CI, sensitivity/specificity, ECE.

Shapes: ``labels`` is [N] binary ground truth (0 = negative, 1 = positive; bool or integer),
``scores`` / ``probs`` is [N] real-valued model output for the same N scans. Scores may be any
real numbers (only their order matters to AUROC); ``probs`` must lie in [0, 1].
"""

from __future__ import annotations

import logging

import numpy as np
from numpy.typing import ArrayLike
from scipy.stats import rankdata
from sklearn.metrics import confusion_matrix, roc_auc_score

__all__ = ["auroc", "bootstrap_auroc_ci", "sensitivity_specificity", "expected_calibration_error"]

logger = logging.getLogger(__name__)

#: Bootstrap resamples are scored in chunks of about this many (scan, resample) elements.
_BOOTSTRAP_CHUNK_ELEMENTS = 2_000_000


def _as_labels_and_scores(labels: ArrayLike, scores: ArrayLike, scores_name: str = "scores"
                          ) -> tuple[np.ndarray, np.ndarray]:
    """Validate and return ([N] int labels in {0, 1}, [N] float scores)."""
    y = np.asarray(labels)
    s = np.asarray(scores, dtype=np.float64)
    if y.ndim != 1 or s.ndim != 1:
        raise ValueError(f"labels and {scores_name} must be 1-D, got shapes {y.shape} and {s.shape}")
    if y.shape != s.shape:
        raise ValueError(f"labels and {scores_name} differ in length: {y.shape[0]} vs {s.shape[0]}")
    if y.size == 0:
        raise ValueError(f"labels and {scores_name} are empty")
    if not np.all(np.isfinite(s)):
        raise ValueError(f"{scores_name} hold NaN or infinite values")
    if not np.all(np.isin(y, (0, 1))):
        raise ValueError(f"labels must be binary (0/1 or bool), got values {np.unique(y)[:10].tolist()}")
    return y.astype(np.int64), s


def auroc(labels: ArrayLike, scores: ArrayLike) -> float:
    """Area under the ROC curve (scikit-learn ``roc_auc_score``).

    Args:
        labels: [N] binary ground truth.
        scores: [N] scores, higher meaning "more likely positive".

    Returns:
        AUROC in [0, 1]; NaN (with a warning logged) when only one class is present.
    """
    y, s = _as_labels_and_scores(labels, scores)
    if np.unique(y).size < 2:
        logger.warning("AUROC undefined: only one class present in %d labels; returning NaN", y.size)
        return float("nan")
    return float(roc_auc_score(y, s))


def bootstrap_auroc_ci(labels: ArrayLike, scores: ArrayLike, n_boot: int = 1000, alpha: float = 0.05,
                       seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the AUROC.

    Scans are resampled with replacement ``n_boot`` times; resamples holding a single class are
    skipped (their AUROC is undefined). The interval is the (alpha/2, 1 - alpha/2) percentiles of
    the remaining resampled AUROCs. Deterministic for a given ``seed``. Resamples are scored
    with the rank (Mann-Whitney) form of the AUROC, equal to ``roc_auc_score`` and vectorized.

    Args:
        labels: [N] binary ground truth.
        scores: [N] scores.
        n_boot: number of bootstrap resamples, >= 1.
        alpha: 1 - confidence level, in (0, 1); 0.05 gives a 95% interval.
        seed: seed of the resampling generator.

    Returns:
        (low, high); (NaN, NaN) with a warning when the AUROC is undefined (one class present).
    """
    if int(n_boot) != n_boot or n_boot < 1:
        raise ValueError(f"n_boot must be a positive integer, got {n_boot}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    y, s = _as_labels_and_scores(labels, scores)
    if np.unique(y).size < 2:
        logger.warning("bootstrap AUROC CI undefined: only one class present; returning (NaN, NaN)")
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    n_boot = int(n_boot)
    rows_per_chunk = max(1, _BOOTSTRAP_CHUNK_ELEMENTS // y.size)
    chunks = []
    for first in range(0, n_boot, rows_per_chunk):
        idx = rng.integers(0, y.size, size=(min(rows_per_chunk, n_boot - first), y.size))
        chunks.append(_rank_auroc(y[idx], s[idx]))
    resampled = np.concatenate(chunks)
    values = resampled[np.isfinite(resampled)]
    skipped = n_boot - values.size
    if skipped:
        logger.info("bootstrap AUROC: %d of %d resamples held one class and were skipped", skipped, n_boot)
    if values.size == 0:
        logger.warning("bootstrap AUROC CI undefined: every resample held one class; returning (NaN, NaN)")
        return float("nan"), float("nan")
    low, high = np.percentile(values, [100.0 * alpha / 2.0, 100.0 * (1.0 - alpha / 2.0)])
    return float(low), float(high)


def _rank_auroc(labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """AUROC of each row by the Mann-Whitney rank formula (ties get average ranks).

    Equals ``roc_auc_score`` row by row, vectorized over the B bootstrap resamples (which
    ``roc_auc_score``, at about 5 ms per call, is too slow for).

    Args:
        labels: [B, N] 0/1.
        scores: [B, N].

    Returns:
        [B] AUROC, NaN for rows holding a single class.
    """
    ranks = rankdata(scores, axis=1)
    n_pos = labels.sum(axis=1).astype(np.float64)
    n_neg = labels.shape[1] - n_pos
    u = (ranks * labels).sum(axis=1) - n_pos * (n_pos + 1) / 2
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((n_pos > 0) & (n_neg > 0), u / (n_pos * n_neg), np.nan)


def sensitivity_specificity(labels: ArrayLike, scores: ArrayLike, threshold: float) -> tuple[float, float]:
    """Sensitivity and specificity when scans with ``score >= threshold`` are called positive.

    Args:
        labels: [N] binary ground truth.
        scores: [N] scores.
        threshold: operating point, same units as ``scores``.

    Returns:
        (sensitivity = TP / (TP + FN), specificity = TN / (TN + FP)); either is NaN (with a warning)
        when its denominator is zero (no positives, or no negatives).
    """
    if not np.isfinite(threshold):
        raise ValueError(f"threshold must be a finite number, got {threshold}")
    y, s = _as_labels_and_scores(labels, scores)
    pred = (s >= threshold).astype(np.int64)
    tn, fp, fn, tp = confusion_matrix(y, pred, labels=[0, 1]).ravel()
    if tp + fn == 0:
        logger.warning("sensitivity undefined: no positive labels; returning NaN")
        sens = float("nan")
    else:
        sens = float(tp / (tp + fn))
    if tn + fp == 0:
        logger.warning("specificity undefined: no negative labels; returning NaN")
        spec = float("nan")
    else:
        spec = float(tn / (tn + fp))
    return sens, spec


def expected_calibration_error(labels: ArrayLike, probs: ArrayLike, n_bins: int = 10) -> float:
    """Expected calibration error over ``n_bins`` equal-width bins of [0, 1].

    ECE = sum over bins b of (n_b / N) * |mean(labels in b) - mean(probs in b)|; empty bins add
    nothing. Bins follow scikit-learn's ``calibration_curve(strategy="uniform")``: edges
    ``linspace(0, 1, n_bins + 1)``, a probability on an inner edge falls in the lower bin.

    Args:
        labels: [N] binary ground truth.
        probs: [N] predicted probabilities of the positive class, in [0, 1].
        n_bins: number of bins, >= 1.

    Returns:
        ECE in [0, 1]; 0 for a perfectly calibrated model.
    """
    if int(n_bins) != n_bins or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins}")
    y, p = _as_labels_and_scores(labels, probs, scores_name="probs")
    if p.min() < 0.0 or p.max() > 1.0:
        raise ValueError(f"probs must lie in [0, 1], got range [{p.min():.4g}, {p.max():.4g}]")
    edges = np.linspace(0.0, 1.0, int(n_bins) + 1)
    bin_ids = np.searchsorted(edges[1:-1], p)  # same binning as sklearn.calibration.calibration_curve
    counts = np.bincount(bin_ids, minlength=n_bins).astype(np.float64)
    sum_probs = np.bincount(bin_ids, weights=p, minlength=n_bins)
    sum_labels = np.bincount(bin_ids, weights=y.astype(np.float64), minlength=n_bins)
    filled = counts > 0
    gaps = np.abs(sum_labels[filled] - sum_probs[filled]) / counts[filled]
    return float(np.sum(counts[filled] / y.size * gaps))
