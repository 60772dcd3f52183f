"""Checkpoints: weights plus the config and a model version, written atomically.

A checkpoint is a ``torch.save`` dict::

    {"format": 1, "model_version": str, "config": InsightConfig.to_dict(), "state_dict": ...,
     "training": {...optional: epoch, optimizer, metrics, rng state...}}

It loads with ``weights_only=True`` (no pickled code is executed).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from insight.config import InsightConfig
from insight.errors import ModelError
from insight.io.atomic import atomic_output
from insight.models.insight_model import InsightModel

__all__ = ["CHECKPOINT_FORMAT", "LoadedCheckpoint", "save_checkpoint", "load_checkpoint", "weights_digest",
           "insight_model_version"]

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 1


@dataclass
class LoadedCheckpoint:
    """A model ready to use (in eval mode), with what was saved beside it."""

    model: InsightModel
    config: InsightConfig
    model_version: str
    training: dict[str, Any] = field(default_factory=dict)


def weights_digest(model: torch.nn.Module, length: int = 10) -> str:
    """A short SHA-256 of the model's parameters and buffers: equal weights give an equal digest."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu", copy=True).contiguous().numpy().tobytes())
    return digest.hexdigest()[:length]


def insight_model_version(model: InsightModel) -> str:
    """``insight-<encoder>-<weights digest>``: the version every INSIGHT checkpoint is saved under."""
    return f"insight-{model.config.encoder}-{weights_digest(model)}"


def save_checkpoint(path: str | Path, model: InsightModel, config: InsightConfig, model_version: str,
                    training: dict[str, Any] | None = None) -> Path:
    """Write a checkpoint atomically; returns its path."""
    payload = {
        "format": CHECKPOINT_FORMAT,
        "model_version": model_version,
        "config": config.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "training": training or {},
    }
    with atomic_output(path) as tmp:
        torch.save(payload, tmp)
    return Path(path)


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu", with_training_state: bool = False) -> LoadedCheckpoint:
    """Load a checkpoint into a fresh :class:`InsightModel` on ``device``, in eval mode.

    Raises:
        ModelError: the file is missing, unreadable, of an unknown format or does not match its config.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"model checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch/pickle raise many types for a corrupt file
        raise ModelError(f"cannot read model checkpoint {path}: {err}") from err
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ModelError(f"{path} is not an insight checkpoint (format {CHECKPOINT_FORMAT} expected)")
    try:
        config = InsightConfig.from_dict(payload["config"])
        # a site's local encoder weights are already inside the state dict: do not reload them
        model_cfg = config.model.__class__(**{**config.model.__dict__, "encoder_weights": None})
        model = InsightModel(model_cfg, config.preprocess.in_channels)
        model.load_state_dict(payload["state_dict"])
    except (KeyError, ValueError, RuntimeError) as err:
        raise ModelError(f"checkpoint {path} does not match this version of insight: {err}") from err
    model.to(device).eval()
    training = payload.get("training", {}) if with_training_state else {}
    return LoadedCheckpoint(model, config, str(payload.get("model_version", "unknown")), training)
