"""Training each compared method, and one inference interface for all of them.

Every method is trained on the same prepared cases with the same :class:`insight.config.TrainConfig`
through the INSIGHT trainer's loop (baselines via :class:`insight.baselines.BaselineTrainer`); the
epoch with the best validation AUROC is kept. :meth:`TrainedMethod.scan_output` then gives, for one
volume, the scan probability and a heatmap at feature resolution, with the time it took.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from insight.baselines import BaselineTrainer, GlobalPoolCNN, grad_cam, load_baseline_checkpoint
from insight.benchmark.config import BenchmarkConfig, MethodSpec
from insight.config import InsightConfig
from insight.devices import autocast_for
from insight.models.checkpoint import load_checkpoint
from insight.training import InsightTrainer, PreparedCase

__all__ = ["ScanOutput", "TrainedMethod", "FeatureCache", "train_method"]

logger = logging.getLogger(__name__)


@dataclass
class ScanOutput:
    """One volume through one method.

    Attributes:
        probability: scan-level p(PE).
        heatmap: [N, h, w] float32 in [0, 1] at the encoder's feature resolution (class 0).
        forward_s: seconds of the forward pass (for Grad-CAM: the one that keeps activations).
        backward_s: seconds of Grad-CAM's extra backward pass (0 for the other methods).
    """

    probability: float
    heatmap: torch.Tensor
    forward_s: float
    backward_s: float = 0.0


@dataclass
class TrainedMethod:
    """A method's best network (eval mode) and how its training went."""

    spec: MethodSpec
    model: nn.Module
    model_version: str
    device: torch.device
    amp: bool
    training: dict[str, Any] = field(default_factory=dict)

    @property
    def stride(self) -> int:
        return int(self.model.stride)

    @property
    def n_parameters(self) -> int:
        return int(sum(p.numel() for p in self.model.parameters()))

    def scan_output(self, slices: torch.Tensor, region: torch.Tensor | None) -> ScanOutput:
        """``slices`` [N, C, H, W] and ``region`` [N, H, W] bool, both on :attr:`device`."""
        if isinstance(self.model, GlobalPoolCNN):
            autocast = (torch.autocast(device_type="cuda", dtype=torch.bfloat16)
                        if self.amp and self.device.type == "cuda" else None)
            result = grad_cam(self.model, slices, region, autocast=autocast)
            return ScanOutput(float(result.probability[0]), result.heatmap[:, 0].float(), result.forward_s,
                              result.backward_s)
        _sync(self.device)
        started = time.perf_counter()
        with torch.inference_mode(), autocast_for(self.device, self.amp):
            output = self.model(slices, region=region)
        heatmap = output.heatmap[:, 0].float()
        probability = float(output.probability[0])
        _sync(self.device)
        return ScanOutput(probability, heatmap, time.perf_counter() - started)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class FeatureCache:
    """The encoder's parameter-free inputs of each case list, computed once and shared by every method.

    Every method uses the same encoder settings, so the cached fixed features (e.g. the filter bank's
    morphology) are identical between methods; on CPU they cost more than an epoch. Keyed by the
    identity of the case list (the benchmark passes the same train and validation lists to all).
    """

    def __init__(self) -> None:
        self._entries: dict[int, tuple[list[PreparedCase], list[torch.Tensor]]] = {}

    def get(self, cases: list[PreparedCase], compute) -> list[torch.Tensor]:
        entry = self._entries.get(id(cases))
        if entry is None or entry[0] is not cases:
            entry = (cases, compute(cases))
            self._entries[id(cases)] = entry
        return entry[1]


class _SharedCacheMixin:
    """Makes a trainer take its cached encoder inputs from a :class:`FeatureCache`."""

    feature_cache: FeatureCache | None = None

    def _precompute(self, cases: list[PreparedCase]) -> list[torch.Tensor]:
        compute = super()._precompute  # type: ignore[misc]
        return compute(cases) if self.feature_cache is None else self.feature_cache.get(cases, compute)


class _SharedCacheInsightTrainer(_SharedCacheMixin, InsightTrainer):
    pass


class _SharedCacheBaselineTrainer(_SharedCacheMixin, BaselineTrainer):
    pass


def train_method(spec: MethodSpec, config: BenchmarkConfig, train_cases: list[PreparedCase],
                 val_cases: list[PreparedCase], run_dir: Path, device: torch.device,
                 progress: bool = True, feature_cache: FeatureCache | None = None) -> TrainedMethod:
    """Train one method and load its best epoch (by validation AUROC) from ``run_dir/best.pt``.

    ``feature_cache``: share the encoder's cached fixed features between methods (same encoder).
    """
    insight_config = InsightConfig(preprocess=config.preprocess, model=config.method_model(spec))
    started = time.perf_counter()
    if spec.kind == "insight":
        trainer: InsightTrainer = _SharedCacheInsightTrainer(insight_config, config.train, run_dir, device)
    else:
        trainer = _SharedCacheBaselineTrainer(spec.kind, insight_config, config.train, run_dir, device)
    trainer.feature_cache = feature_cache
    logger.info("training %s (%s) for %d epochs on %d scans", spec.name, spec.kind, config.train.epochs,
                len(train_cases))
    summary = trainer.fit(train_cases, val_cases, progress=progress)
    seconds = time.perf_counter() - started
    if spec.kind == "insight":
        loaded = load_checkpoint(summary.best_checkpoint, device, with_training_state=True)
        model, version, saved = loaded.model, loaded.model_version, loaded.training
    else:
        baseline = load_baseline_checkpoint(summary.best_checkpoint, device)
        model, version, saved = baseline.model, baseline.model_version, baseline.training
    history = summary.history
    best_epoch = int(saved["epoch"]) + 1 if "epoch" in saved else len(history)
    best_record = next((h for h in history if h.get("epoch") == best_epoch), {})
    training = {
        "epochs": len(history),
        "best_epoch": best_epoch,
        "best_val_auroc": _finite_or_none(best_record.get("val_auroc")),
        "seconds": round(seconds, 2),
        "seconds_per_epoch": round(float(np.mean([h["seconds"] for h in history])), 3) if history else None,
        "history": history,
        "checkpoint": str(summary.best_checkpoint),
    }
    logger.info("%s: best epoch %d of %d (val AUROC %s), %.1f s", spec.name, best_epoch, len(history),
                training["best_val_auroc"], seconds)
    return TrainedMethod(spec, model.eval(), version, device, config.train.amp, training)


def _finite_or_none(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and np.isfinite(value) else None
