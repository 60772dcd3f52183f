"""Training a baseline with the INSIGHT trainer's loop, and its checkpoints.

:class:`BaselineTrainer` reuses :class:`insight.training.InsightTrainer` unchanged where it matters
for a fair comparison: the data order, augmentation (flips, intensity), slice stride, optimizer
(AdamW), cosine schedule, gradient clipping, scans per step, cached encoder inputs and the choice
of the best epoch by validation AUROC. Only the network and the loss differ: a baseline is trained
with binary cross-entropy on its scan probability alone (the INSIGHT-specific terms, spectral
decoupling on heatmap logits and the hard-negative heatmap term, have no counterpart in it). With
anomaly seeding in the shared settings (``seed_instances``), which needs INSIGHT's instance
detector, a baseline trains ``seed_epochs + epochs`` weak-label epochs instead: the same number of
epochs.

A baseline checkpoint is a ``torch.save`` dict ``{"format": "insight-baseline-1", "kind": str,
"model_version": str, "config": InsightConfig.to_dict(), "state_dict": ..., "training": {...}}``,
loaded with ``weights_only=True``. It is not an INSIGHT checkpoint: ``insight predict`` refuses it.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from insight.baselines.attention_mil import GatedAttentionMIL
from insight.baselines.global_pool_cnn import GlobalPoolCNN
from insight.config import InsightConfig, ModelConfig, TrainConfig
from insight.errors import ModelError
from insight.io.atomic import atomic_output, write_json_atomic
from insight.models.checkpoint import weights_digest
from insight.models.losses import InsightLoss
from insight.training.trainer import InsightTrainer, seed_everything

__all__ = ["BASELINE_KINDS", "BASELINE_CHECKPOINT_FORMAT", "BaselineTrainer", "LoadedBaseline", "build_baseline",
           "load_baseline_checkpoint"]

logger = logging.getLogger(__name__)

BASELINE_CHECKPOINT_FORMAT = "insight-baseline-1"
#: Baseline networks by kind name.
BASELINE_KINDS: dict[str, type[nn.Module]] = {"abmil": GatedAttentionMIL, "cnn_gradcam": GlobalPoolCNN}


def build_baseline(kind: str, model_config: ModelConfig, in_channels: int) -> nn.Module:
    """A freshly initialised baseline network of ``kind`` (``abmil`` or ``cnn_gradcam``)."""
    if kind not in BASELINE_KINDS:
        raise ValueError(f"unknown baseline {kind!r}: use one of {sorted(BASELINE_KINDS)}")
    return BASELINE_KINDS[kind](model_config, in_channels)


class BaselineTrainer(InsightTrainer):
    """The INSIGHT training loop on a baseline network (BCE on the scan probability).

    Args:
        kind: ``abmil`` or ``cnn_gradcam``.
        config: preprocessing and the shared model settings (the encoder and widths).
        train_config: the same settings every compared method gets.
        out_dir: where ``last.pt``, ``best.pt`` and ``metrics.json`` go.
        device: torch device.
    """

    def __init__(self, kind: str, config: InsightConfig, train_config: TrainConfig, out_dir: str | Path,
                 device: torch.device | str = "cpu") -> None:
        if train_config.seed_instances:
            # anomaly seeding trains an instance detector, which a baseline has not: it gets the same
            # number of epochs as weak-label epochs instead
            train_config = dataclasses.replace(train_config, seed_instances=0,
                                               epochs=train_config.epochs + train_config.seed_epochs)
        super().__init__(config, train_config, out_dir, device)
        seed_everything(train_config.seed)  # the baseline starts from the same seed state INSIGHT does
        self.kind = kind
        self.model = build_baseline(kind, config.model, config.preprocess.in_channels).to(self.device)
        self.loss_fn = InsightLoss(spectral_lambda=0.0, negative_weight=0.0)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=train_config.learning_rate,
                                           weight_decay=train_config.weight_decay)

    def resume(self, checkpoint: str | Path) -> None:
        raise ModelError("resuming is not supported for baseline training; start the run again")

    def model_version(self) -> str:
        return f"{self.kind}-{self.config.model.encoder}-{weights_digest(self.model)}"

    def _save(self, epoch: int, improved: bool) -> None:
        version = self.model_version()
        training = {"epoch": epoch, "history": self.history, "best_auroc": self.best_auroc,
                    "train_config": dict(vars(self.train_config))}
        _write_checkpoint(self.out_dir / "last.pt", self.kind, self.model, self.config, version, training)
        if improved:
            _write_checkpoint(self.out_dir / "best.pt", self.kind, self.model, self.config, version, training)
        write_json_atomic(self.out_dir / "metrics.json", {"model_version": version, "history": self.history})


def _write_checkpoint(path: Path, kind: str, model: nn.Module, config: InsightConfig, version: str,
                      training: dict[str, Any]) -> None:
    payload = {"format": BASELINE_CHECKPOINT_FORMAT, "kind": kind, "model_version": version,
               "config": config.to_dict(),
               "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
               "training": training}
    with atomic_output(path) as tmp:
        torch.save(payload, tmp)


@dataclass
class LoadedBaseline:
    """A baseline network ready to use (eval mode), with what was saved beside it."""

    model: nn.Module
    kind: str
    model_version: str
    training: dict[str, Any] = field(default_factory=dict)


def load_baseline_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> LoadedBaseline:
    """Load a baseline checkpoint onto ``device``, in eval mode.

    Raises:
        ModelError: missing, unreadable or not a baseline checkpoint, or weights that do not fit.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"baseline checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch/pickle raise many types for a corrupt file
        raise ModelError(f"cannot read baseline checkpoint {path}: {err}") from err
    if not isinstance(payload, dict) or payload.get("format") != BASELINE_CHECKPOINT_FORMAT:
        raise ModelError(f"{path} is not a baseline checkpoint (format {BASELINE_CHECKPOINT_FORMAT} expected)")
    try:
        config = InsightConfig.from_dict(payload["config"])
        model_config = config.model.__class__(**{**config.model.__dict__, "encoder_weights": None})
        model = build_baseline(payload["kind"], model_config, config.preprocess.in_channels)
        model.load_state_dict(payload["state_dict"])
    except (KeyError, ValueError, RuntimeError) as err:
        raise ModelError(f"baseline checkpoint {path} does not match this version of insight: {err}") from err
    return LoadedBaseline(model.to(device).eval(), str(payload["kind"]), str(payload.get("model_version", "unknown")),
                          dict(payload.get("training", {})))
