"""One round's segmentation model: train it on the round's labels, score it on the test split.

Every round trains **from scratch** with the same seed and budget: a round's model depends only on its
label set (pseudo-masks plus the corrections so far), so strategies are compared on what they chose,
not on how long their model has been fine-tuned, and two runs that chose the same cases get the same
model.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
import torch

from insight.campaign.data import CampaignCase, PoolCase
from insight.pseudo_masks import score_mask, summarize_scores
from insight.segmentation.config import SegmentationConfig, SegTrainConfig
from insight.segmentation.dataset import PreparedPair
from insight.segmentation.predictor import SegmentationPredictor
from insight.segmentation.trainer import SegmentationTrainer

__all__ = ["round_pairs", "train_round", "evaluate_on", "segment_case"]

logger = logging.getLogger(__name__)


def round_pairs(pool: Sequence[PoolCase], corrected: Sequence[str]) -> list[PreparedPair]:
    """Every pool case with its correction (``final``, weighted higher) when corrected, else its pseudo-mask."""
    done = set(corrected)
    pairs = [case.final_pair if case.name in done else case.pseudo_pair for case in pool]
    if any(p is None for p in pairs):
        raise ValueError("pool cases must be weak-labelled (weak_label_pool) before training")
    return pairs  # type: ignore[return-value]


def train_round(pairs: list[PreparedPair], config: SegmentationConfig, train_config: SegTrainConfig,
                work_dir: Path, device: torch.device) -> tuple[SegmentationPredictor, dict[str, Any]]:
    """Train a fresh network on ``pairs``; its checkpoints in ``work_dir`` are deleted afterwards.

    Returns:
        (the trained model as a predictor, ``{"model_version", "iterations", "seconds", "final_loss"}``).
    """
    started = time.perf_counter()
    trainer = SegmentationTrainer(config, train_config, work_dir, device)
    summary = trainer.fit(pairs)
    shutil.rmtree(work_dir, ignore_errors=True)
    predictor = SegmentationPredictor(trainer.network, config, summary.model_version, device)
    info = {"model_version": summary.model_version, "iterations": summary.iterations,
            "seconds": round(time.perf_counter() - started, 2),
            "final_loss": summary.history[-1]["train_loss"] if summary.history else None}
    return predictor, info


def segment_case(predictor: SegmentationPredictor, case: CampaignCase) -> np.ndarray:
    """The model's PE mask of ``case``: bool [Z, Y, X] on the case's image grid."""
    result = predictor.predict_image(case.image, name=case.name)
    return sitk.GetArrayFromImage(result.label) != 0


def evaluate_on(predictor: SegmentationPredictor, cases: Sequence[CampaignCase]) -> dict[str, Any]:
    """Dice, per-embolus sensitivity, false positives per scan and scan AUROC of the model on ``cases``.

    Returns:
        :func:`insight.pseudo_masks.summarize_scores` (``mean_dice_positive``, ``embolus_sensitivity``,
        ``false_positives_per_scan``, ``scan_auroc`` of the peak probability, counts) plus
        ``per_case_dice``: name -> Dice.
    """
    scores, peaks = [], {}
    for case in cases:
        result = predictor.predict_image(case.image, name=case.name)
        scores.append(score_mask(sitk.GetArrayViewFromImage(result.label), case.truth, case.name))
        peaks[case.name] = result.peak_probability
    summary = summarize_scores(scores, scan_scores=peaks)
    summary["per_case_dice"] = {s.name: round(s.dice, 4) for s in scores}
    return summary

