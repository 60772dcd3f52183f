"""PE segmentation: a MONAI 3D UNet trained on pseudo-masks and clinician-corrected masks.

Public API (imported lazily: ``import insight.segmentation.config`` stays cheap)::

    from insight.segmentation import SegmentationConfig, SegTrainConfig, SegTrainingJob, run_training
    from insight.segmentation import collect_label_pairs, SegmentationPredictor
    cases = collect_label_pairs("studies/", SegTrainConfig(), pseudo_dir="pseudo/", final_dir="final/")
    summary = run_training(SegTrainingJob(SegmentationConfig(), SegTrainConfig(), Path("out")), cases, nproc=2)
    result = SegmentationPredictor.from_checkpoint(summary.best_checkpoint).predict_file("case.nii.gz")
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "SEG_PREPROCESS": "config", "SegNetworkConfig": "config", "SegInferenceConfig": "config",
    "SegmentationConfig": "config", "SegTrainConfig": "config",
    "LabeledVolume": "dataset", "PreparedPair": "dataset", "collect_label_pairs": "dataset",
    "find_label_file": "dataset", "prepare_pair": "dataset",
    "build_network": "network",
    "save_segmentation_checkpoint": "checkpoint", "load_segmentation_checkpoint": "checkpoint",
    "SegmentationTrainer": "trainer", "SegTrainSummary": "trainer",
    "SegTrainingJob": "job", "run_training": "job",
    "DistributedContext": "distributed", "spawn_processes": "distributed",
    "SegmentationPredictor": "predictor", "SegmentationResult": "predictor", "PE_LABEL": "predictor",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
