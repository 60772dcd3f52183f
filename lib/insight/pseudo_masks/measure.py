"""Scoring voxel masks (pseudo-masks, segmentations) against ground-truth clot masks.

Uses the library's one per-embolus rule (:func:`insight.metrics.embolus_hits`): emboli are the
26-connected components of the truth mask; an embolus is hit when a predicted region overlaps it by
at least one voxel; a predicted region overlapping no embolus is a false positive. On phantoms the
truth is ``<studies>/truth/<name>_clot.nii.gz`` (results on phantoms are results on phantoms).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from insight.errors import InputError
from insight.io.image_io import read_image
from insight.metrics import auroc, dice, embolus_hits
from insight.preprocessing import same_grid

__all__ = ["MaskScore", "score_mask", "summarize_scores", "truth_mask_path", "read_truth_mask"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class MaskScore:
    """One scan's mask against its truth.

    Attributes:
        name: case name.
        dice: Dice of the two masks (1.0 when both are empty).
        n_emboli: 26-connected components of the truth mask.
        n_hit: emboli overlapped by a predicted region.
        n_false_positive_regions: predicted regions overlapping no embolus.
        predicted_voxels, true_voxels: mask sizes.
    """

    name: str
    dice: float
    n_emboli: int
    n_hit: int
    n_false_positive_regions: int
    predicted_voxels: int
    true_voxels: int

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["dice"] = round(self.dice, 4)
        return out


def score_mask(predicted: np.ndarray, truth: np.ndarray, name: str = "case") -> MaskScore:
    """Score a predicted mask [z, y, x] (non-zero = PE) against a truth mask of the same shape."""
    pred = np.asarray(predicted) != 0
    true = np.asarray(truth) != 0
    n_emboli, n_hit, n_fp = embolus_hits(pred, true)
    return MaskScore(name, float(dice(pred, true)), n_emboli, n_hit, n_fp, int(pred.sum()), int(true.sum()))


def summarize_scores(scores: Sequence[MaskScore], scan_scores: Mapping[str, float] | None = None
                     ) -> dict[str, Any]:
    """Aggregate scores over scans.

    Args:
        scores: one per scan.
        scan_scores: optional scan-level PE scores by case name (e.g. a segmentation's peak
            probability); every scored case needs one.

    Returns:
        ``n_scans``, ``n_positive_scans`` (truth not empty), ``mean_dice_positive`` (mean Dice over
        positive scans; None without any), ``embolus_sensitivity`` (hit emboli / all emboli; None
        without emboli), ``false_positives_per_scan`` (false-positive regions / scans, all scans),
        ``negative_scans_with_regions``, ``n_emboli``, ``n_hit``, ``n_false_positive_regions``; with
        ``scan_scores`` also ``scan_auroc``: AUROC of those scores for "truth mask not empty" (None
        unless both positive and negative scans are present).

    Raises:
        ValueError: no scores, or a scored case without a scan score.
    """
    if not scores:
        raise ValueError("no scores to summarize")
    positive = [s for s in scores if s.true_voxels > 0]
    n_emboli = sum(s.n_emboli for s in scores)
    n_hit = sum(s.n_hit for s in scores)
    n_fp = sum(s.n_false_positive_regions for s in scores)
    summary = {
        "n_scans": len(scores),
        "n_positive_scans": len(positive),
        "mean_dice_positive": round(float(np.mean([s.dice for s in positive])), 4) if positive else None,
        "embolus_sensitivity": round(n_hit / n_emboli, 4) if n_emboli else None,
        "false_positives_per_scan": round(n_fp / len(scores), 4),
        "negative_scans_with_regions": sum(1 for s in scores if s.true_voxels == 0 and s.predicted_voxels > 0),
        "n_emboli": n_emboli,
        "n_hit": n_hit,
        "n_false_positive_regions": n_fp,
    }
    if scan_scores is not None:
        missing = [s.name for s in scores if s.name not in scan_scores]
        if missing:
            raise ValueError(f"no scan score for {', '.join(missing[:5])}")
        has_pe = [s.true_voxels > 0 for s in scores]
        summary["scan_auroc"] = (round(auroc(has_pe, [scan_scores[s.name] for s in scores]), 4)
                                 if 0 < sum(has_pe) < len(scores) else None)
    return summary


def truth_mask_path(truth_dir: str | os.PathLike, name: str) -> Path:
    """Where the phantom generator writes a case's clot mask: ``<truth_dir>/<name>_clot.nii.gz``."""
    return Path(truth_dir) / f"{name}_clot.nii.gz"


def read_truth_mask(truth_dir: str | os.PathLike, name: str, reference: sitk.Image) -> np.ndarray:
    """The truth clot mask of ``name`` as bool [z, y, x] on ``reference``'s grid.

    Raises:
        InputError: the file is missing or does not lie on the reference grid.
    """
    path = truth_mask_path(truth_dir, name)
    if not path.is_file():
        raise InputError(f"no truth mask for {name}: {path} not found")
    truth = read_image(path)
    if not same_grid(truth, reference):
        raise InputError(f"{path.name} does not lie on the grid of image {name} (size {truth.GetSize()} vs "
                         f"{reference.GetSize()})")
    return sitk.GetArrayViewFromImage(truth) != 0
