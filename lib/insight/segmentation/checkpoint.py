"""Segmentation checkpoints: weights, :class:`SegmentationConfig` and a model version, written atomically.

A checkpoint is a ``torch.save`` dict::

    {"format": 1, "kind": "pe_segmentation", "model_version": "seg-unet-<digest>",
     "insight_version": str, "config": SegmentationConfig.to_dict(), "state_dict": {...},
     "training": {...optional: epoch, optimizer, history, train_config...}}

It loads with ``weights_only=True`` (no pickled code runs). The version is a digest of the weights:
equal weights, equal version.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from insight import __version__
from insight.errors import ModelError
from insight.io.atomic import atomic_output
from insight.models.checkpoint import weights_digest
from insight.segmentation.config import SegmentationConfig
from insight.segmentation.network import build_network

__all__ = ["SEG_CHECKPOINT_FORMAT", "SEG_CHECKPOINT_KIND", "LoadedSegmentation", "segmentation_model_version",
           "save_segmentation_checkpoint", "load_segmentation_checkpoint"]

logger = logging.getLogger(__name__)

SEG_CHECKPOINT_FORMAT = 1
SEG_CHECKPOINT_KIND = "pe_segmentation"


@dataclass
class LoadedSegmentation:
    """A network ready to use (eval mode) with what was saved beside it."""

    model: torch.nn.Module
    config: SegmentationConfig
    model_version: str
    training: dict[str, Any] = field(default_factory=dict)


def segmentation_model_version(model: torch.nn.Module) -> str:
    """``seg-unet-<10 hex digits of the weights' SHA-256>``."""
    return f"seg-unet-{weights_digest(model)}"


def save_segmentation_checkpoint(path: str | os.PathLike, model: torch.nn.Module, config: SegmentationConfig,
                                 training: dict[str, Any] | None = None) -> str:
    """Write a checkpoint atomically (``model`` may be DDP-wrapped); returns its model version."""
    model = getattr(model, "module", model)
    version = segmentation_model_version(model)
    payload = {
        "format": SEG_CHECKPOINT_FORMAT,
        "kind": SEG_CHECKPOINT_KIND,
        "model_version": version,
        "insight_version": __version__,
        "config": config.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "training": training or {},
    }
    with atomic_output(path) as tmp:
        torch.save(payload, tmp)
    return version


def load_segmentation_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu",
                                 with_training_state: bool = False) -> LoadedSegmentation:
    """Load a segmentation checkpoint onto ``device``, in eval mode.

    Raises:
        ModelError: missing, unreadable, not a segmentation checkpoint, or not matching its config.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"segmentation checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch/pickle raise many types for a corrupt file
        raise ModelError(f"cannot read segmentation checkpoint {path}: {err}") from err
    if not isinstance(payload, dict) or payload.get("kind") != SEG_CHECKPOINT_KIND:
        raise ModelError(f"{path} is not a PE segmentation checkpoint (an INSIGHT checkpoint goes to "
                         "'insight predict', a segmentation one comes from 'insight train-seg')")
    if payload.get("format") != SEG_CHECKPOINT_FORMAT:
        raise ModelError(f"{path}: segmentation checkpoint format {payload.get('format')} is not supported "
                         f"(this insight reads format {SEG_CHECKPOINT_FORMAT})")
    try:
        config = SegmentationConfig.from_dict(payload["config"])
        model = build_network(config.network)
        model.load_state_dict(payload["state_dict"])
    except (KeyError, ValueError, TypeError, RuntimeError) as err:
        raise ModelError(f"segmentation checkpoint {path} does not match this version of insight: {err}") from err
    model.to(device).eval()
    training = payload.get("training", {}) if with_training_state else {}
    return LoadedSegmentation(model, config, str(payload.get("model_version", "unknown")), training)
