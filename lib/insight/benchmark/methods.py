"""Training each compared method, and one inference interface for all of them.

Every method is trained on the same prepared cases with the same :class:`insight.config.TrainConfig`
through the INSIGHT trainer's loop (baselines via :class:`insight.baselines.BaselineTrainer`); the
epoch with the best validation AUROC is kept. :meth:`TrainedMethod.scan_output` then gives, for one
volume, the scan probability and a heatmap at feature resolution, with the time it took.
"""

from __future__ import annotations

import dataclasses
import json
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
from insight.io.atomic import write_json_atomic
from insight.models.checkpoint import load_checkpoint
from insight.training import InsightTrainer, PreparedCase

__all__ = ["ScanOutput", "TrainedMethod", "FeatureCache", "shared_encoder_input", "TRAINING_RECORD",
           "training_fingerprint", "train_method"]

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

    @property
    def supports_precompute(self) -> bool:
        """Whether the encoder has a parameter-free part (:func:`shared_encoder_input` can be used)."""
        return bool(getattr(self.model, "supports_precompute", False))

    def scan_output(self, slices: torch.Tensor, region: torch.Tensor | None,
                    encoder_input: torch.Tensor | None = None) -> ScanOutput:
        """``slices`` [N, C, H, W] and ``region`` [N, H, W] bool, both on :attr:`device`.

        ``encoder_input``: the encoder's parameter-free output for these slices
        (:func:`shared_encoder_input`), used instead of them when given; the times then cover the
        learned part only.
        """
        precomputed = encoder_input is not None
        if precomputed:
            slices = encoder_input
        if isinstance(self.model, GlobalPoolCNN):
            autocast = (torch.autocast(device_type="cuda", dtype=torch.bfloat16)
                        if self.amp and self.device.type == "cuda" else None)
            result = grad_cam(self.model, slices, region, autocast=autocast, precomputed=precomputed)
            return ScanOutput(float(result.probability[0]), result.heatmap[:, 0].float(), result.forward_s,
                              result.backward_s)
        _sync(self.device)
        started = time.perf_counter()
        with torch.inference_mode(), autocast_for(self.device, self.amp):
            output = self.model(slices, precomputed=precomputed, region=region)
        heatmap = output.heatmap[:, 0].float()
        probability = float(output.probability[0])
        _sync(self.device)
        return ScanOutput(probability, heatmap, time.perf_counter() - started)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def shared_encoder_input(methods: list[TrainedMethod], slices: torch.Tensor) -> tuple[torch.Tensor | None, float]:
    """The encoder's parameter-free part of one volume, computed once for every method, and its seconds.

    Every method shares the encoder settings (the config loader enforces it), so with a
    fixed-feature encoder that part is identical between methods: (None, 0.0) when any method's
    encoder has none. ``slices`` [N, C, H, W] -> [N, C', h, w] float32.
    """
    if not methods or not all(m.supports_precompute for m in methods):
        return None, 0.0
    device = methods[0].device
    _sync(device)
    started = time.perf_counter()
    with torch.no_grad():  # not inference_mode: Grad-CAM differentiates through layers that take it
        encoder_input = methods[0].model.encoder.precompute(slices).float()
    _sync(device)
    return encoder_input, time.perf_counter() - started


class FeatureCache:
    """The encoder's parameter-free inputs of each case list, computed once and shared by every method.

    Every method uses the same encoder settings, so the cached fixed features (e.g. the filter bank's
    morphology) are identical between methods; on CPU they cost more than an epoch. Keyed by the
    identity of the case list (the benchmark passes the same train and validation lists to all).
    """

    def __init__(self) -> None:
        self._entries: dict[tuple[int, str], tuple[list[PreparedCase], Any]] = {}

    def get(self, cases: list[PreparedCase], compute, what: str = "features") -> Any:
        """``compute(cases)`` once per case list and ``what`` (``features``: the encoder inputs)."""
        key = (id(cases), what)
        entry = self._entries.get(key)
        if entry is None or entry[0] is not cases:
            entry = (cases, compute(cases))
            self._entries[key] = entry
        return entry[1]


class _SharedCacheMixin:
    """Makes a trainer take its cached encoder inputs, and its anomaly-seeded instances, from a
    :class:`FeatureCache`: the selection depends only on the encoder's fixed part, the training scans
    and the seeding settings, which every ``insight`` method shares, so it is made once (from the
    cached features when the training scans are cached)."""

    feature_cache: FeatureCache | None = None

    def _precompute(self, cases: list[PreparedCase]) -> list[torch.Tensor]:
        compute = super()._precompute  # type: ignore[misc]
        return compute(cases) if self.feature_cache is None else self.feature_cache.get(cases, compute)

    def _select_seed_instances(self, cases: list[PreparedCase], progress: bool, encoder_inputs=None):
        select = super()._select_seed_instances  # type: ignore[misc]
        if self.feature_cache is None:
            return select(cases, progress, encoder_inputs)
        config = self.train_config  # type: ignore[attr-defined]
        settings = (config.seed_instances, config.seed_components, config.seed_reference_per_scan, config.seed)
        return self.feature_cache.get(cases, lambda c: select(c, progress, self._precomputed),  # type: ignore
                                      what=f"seed instances {settings}")


class _SharedCacheInsightTrainer(_SharedCacheMixin, InsightTrainer):
    pass


class _SharedCacheBaselineTrainer(_SharedCacheMixin, BaselineTrainer):
    pass


#: Written into a method's run folder when its training finished: what it was trained with and how it went.
TRAINING_RECORD = "benchmark_training.json"


def training_fingerprint(spec: MethodSpec, config: BenchmarkConfig) -> dict[str, Any]:
    """Everything a method's trained weights depend on (data, preprocessing, model, training, method)."""
    return {"method": spec.to_json(), "model": dataclasses.asdict(config.method_model(spec)),
            "train": dataclasses.asdict(config.train), "preprocess": dataclasses.asdict(config.preprocess),
            "phantom": dataclasses.asdict(config.phantom),
            "splits": {k: dataclasses.asdict(v) for k, v in config.splits.items()}}


def _finished_training(run_dir: Path, fingerprint: dict[str, Any]) -> dict[str, Any] | None:
    """The training record of an earlier run of the same method with the same settings, if complete."""
    try:
        record = json.loads((run_dir / TRAINING_RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    # JSON turns tuples into lists: compare through one JSON round trip
    if not isinstance(record, dict) or record.get("fingerprint") != json.loads(json.dumps(fingerprint)):
        return None
    training = record.get("training")
    if not isinstance(training, dict) or not (run_dir / "best.pt").is_file():
        return None
    return training


def train_method(spec: MethodSpec, config: BenchmarkConfig, train_cases: list[PreparedCase],
                 val_cases: list[PreparedCase], run_dir: Path, device: torch.device,
                 progress: bool = True, feature_cache: FeatureCache | None = None) -> TrainedMethod:
    """Train one method and load its best epoch (by validation AUROC) from ``run_dir/best.pt``.

    A method whose run folder holds a finished training with the same settings
    (:data:`TRAINING_RECORD`, written last) is not trained again: its best checkpoint is loaded, so an
    interrupted benchmark resumes at the first unfinished method.
    ``feature_cache``: share the encoder's cached fixed features between methods (same encoder).
    """
    fingerprint = training_fingerprint(spec, config)
    training = _finished_training(run_dir, fingerprint)
    if training is not None:
        logger.info("%s: reusing the finished training in %s (best epoch %s, val AUROC %s)", spec.name, run_dir,
                    training.get("best_epoch"), training.get("best_val_auroc"))
        model, version, _ = _load_best(spec, run_dir / "best.pt", device)
    else:
        history, seconds = _train(spec, config, train_cases, val_cases, run_dir, device, progress, feature_cache)
        model, version, saved = _load_best(spec, run_dir / "best.pt", device)
        training = _training_record(spec, history, seconds, saved, run_dir / "best.pt")
        write_json_atomic(run_dir / TRAINING_RECORD, {"fingerprint": fingerprint, "training": training})
    return TrainedMethod(spec, model.eval(), version, device, config.train.amp, training)


def _load_best(spec: MethodSpec, path: Path, device: torch.device) -> tuple[nn.Module, str, dict[str, Any]]:
    """A method's best checkpoint: network, model version and what was saved beside it (its epoch)."""
    if spec.kind == "insight":
        loaded = load_checkpoint(path, device, with_training_state=True)
        return loaded.model, loaded.model_version, loaded.training
    baseline = load_baseline_checkpoint(path, device)
    return baseline.model, baseline.model_version, baseline.training


def _train(spec: MethodSpec, config: BenchmarkConfig, train_cases: list[PreparedCase],
           val_cases: list[PreparedCase], run_dir: Path, device: torch.device, progress: bool,
           feature_cache: FeatureCache | None) -> tuple[list[dict[str, Any]], float]:
    """Train one method into ``run_dir``; returns its epoch history and the seconds it took."""
    insight_config = InsightConfig(preprocess=config.preprocess, model=config.method_model(spec))
    started = time.perf_counter()
    if spec.kind == "insight":
        trainer: InsightTrainer = _SharedCacheInsightTrainer(insight_config, config.train, run_dir, device)
    else:
        trainer = _SharedCacheBaselineTrainer(spec.kind, insight_config, config.train, run_dir, device)
    trainer.feature_cache = feature_cache
    logger.info("training %s (%s) for %d epochs on %d scans", spec.name, spec.kind,
                trainer.seed_epochs + trainer.train_config.epochs, len(train_cases))
    summary = trainer.fit(train_cases, val_cases, progress=progress)
    return summary.history, time.perf_counter() - started


def _training_record(spec: MethodSpec, history: list[dict[str, Any]], seconds: float, saved: dict[str, Any],
                     checkpoint: Path) -> dict[str, Any]:
    """How a method's training went: epochs, the best one (``saved``: its checkpoint's training state), time."""
    best_epoch = int(saved["epoch"]) + 1 if "epoch" in saved else len(history)
    best_record = next((h for h in history if h.get("epoch") == best_epoch), {})
    training = {
        "epochs": len(history),
        "best_epoch": best_epoch,
        "best_val_auroc": _finite_or_none(best_record.get("val_auroc")),
        "seconds": round(seconds, 2),
        "seconds_per_epoch": round(float(np.mean([h["seconds"] for h in history])), 3) if history else None,
        "history": history,
        "checkpoint": str(checkpoint),
    }
    logger.info("%s: best epoch %d of %d (val AUROC %s), %.1f s", spec.name, best_epoch, len(history),
                training["best_val_auroc"], seconds)
    return training


def _finite_or_none(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and np.isfinite(value) else None
