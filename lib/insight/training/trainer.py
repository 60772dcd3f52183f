"""Weak-label INSIGHT training: one volume (a bag of slices) per optimizer step.

With ``TrainConfig.seed_instances``, ``seed_epochs`` of anomaly-seeded instance training come first
(:mod:`insight.training.anomaly_seed`); epochs are numbered on across both stages and every history
record says its ``stage`` (``seed`` or ``weak``).

Writes to ``out_dir``: ``last.pt`` (every epoch, with optimizer state, to resume), ``best.pt``
(best validation AUROC), ``metrics.json`` (history so far). Reproducible for a seed on one device:
shuffling and augmentation are reseeded from (seed, epoch), so a resumed run continues exactly.
"""

from __future__ import annotations

import logging
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from insight.config import InsightConfig, TrainConfig
from insight.devices import autocast_for
from insight.errors import InputError, ModelError
from insight.io.atomic import write_json_atomic
from insight.metrics.classification import auroc
from insight.models.checkpoint import insight_model_version, load_checkpoint, save_checkpoint
from insight.models.insight_model import InsightModel
from insight.models.losses import InsightLoss
from insight.preprocessing import slice_stack
from insight.training.anomaly_seed import (SeedInstances, collect_seed_instances, neutralise_context,
                                           seed_detection_logits)
from insight.training.augment import VolumeAugmenter
from insight.training.dataset import PreparedCase

__all__ = ["TrainSummary", "InsightTrainer", "scan_probabilities", "seed_everything", "same_answer_warning",
           "SAME_ANSWER_STD"]

logger = logging.getLogger(__name__)

#: Without progress bars, a log line every this many scans.
_LOG_EVERY = 24
#: Below this standard deviation of validation p(PE) across scans, the model gives every scan the
#: same answer (the label prior). Two measured stalls gave 0.0015 and 0.0018 over 8 validation scans
#: (inspect_argmax.py in docs/experiments/2026-11-23-cpu-big-clot-diagnostic).
SAME_ANSWER_STD = 0.005


@dataclass
class TrainSummary:
    """What a finished run produced."""

    best_checkpoint: Path
    last_checkpoint: Path
    model_version: str
    history: list[dict[str, Any]] = field(default_factory=list)


def cosine_learning_rate(base: float, epoch: int, epochs: int) -> float:
    """Cosine decay from ``base`` over ``epochs`` (``epoch`` 0-based), a function of the epoch alone (resumable)."""
    return 0.5 * base * (1.0 + math.cos(math.pi * epoch / max(epochs, 1)))


@torch.no_grad()
def scan_probabilities(model: InsightModel, cases: list[PreparedCase], slice_context: int,
                       device: torch.device | str = "cpu", cache: list[torch.Tensor] | None = None,
                       amp: bool = False) -> np.ndarray:
    """p(PE) [len(cases)] of each prepared scan, ``model`` in eval mode (all slices, search region applied).

    ``cache``: the encoder's precomputed inputs for ``cases``, if any.
    """
    model.eval()
    device = torch.device(device)
    probabilities = []
    for i, case in enumerate(cases):
        if cache is not None:
            inputs, precomputed = cache[i].float().to(device), True
        else:
            inputs, precomputed = slice_stack(case.volume.float(), slice_context).to(device), False
        region = case.region.to(device) if case.region is not None else None
        with autocast_for(device, amp):
            output = model(inputs, precomputed=precomputed, region=region)
        probabilities.append(float(output.probability[0]))
    return np.asarray(probabilities)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def same_answer_warning(record: dict[str, Any]) -> str | None:
    """A warning when an epoch's validation gave every scan (nearly) the same p(PE), else None.

    ``record`` is one history entry; it needs ``val_p_std`` (no validation: None).
    """
    spread = record.get("val_p_std")
    if spread is None or spread >= SAME_ANSWER_STD:
        return None
    mean = record.get("val_mean_p", 0.5)
    if 0.1 < mean < 0.9:
        return (f"validation p(PE) is the same for every scan (std {spread:.4f} < {SAME_ANSWER_STD}): the model "
                f"answers the label prior, not the scan; it has not learned to detect PE (yet)")
    return (f"validation p(PE) is the same for every scan (std {spread:.4f} < {SAME_ANSWER_STD}) at {mean:.3f}: "
            f"the pooled probability is saturated; check the ranking (val_auroc), and calibrate the model "
            f"(insight calibrate) before using its probabilities")


class InsightTrainer:
    """Trains an :class:`InsightModel` from scan-level labels.

    Args:
        config: model/preprocess/inference settings stored in every checkpoint.
        train_config: epochs, optimizer, seed, augmentation.
        out_dir: where checkpoints and metrics go.
        device: torch device (mixed precision bf16 on CUDA when ``train_config.amp``).
    """

    def __init__(self, config: InsightConfig, train_config: TrainConfig, out_dir: str | Path,
                 device: torch.device | str = "cpu") -> None:
        self.config = config
        self.train_config = train_config
        self.out_dir = Path(out_dir)
        self.device = torch.device(device)
        if train_config.slice_stride > 1 and config.model.context_depth > 1:
            raise InputError(f"slice_stride {train_config.slice_stride} needs a per-slice context module "
                             f"(context_depth 1), got context_depth {config.model.context_depth}")
        if train_config.num_threads > 0:
            torch.set_num_threads(train_config.num_threads)
        seed_everything(train_config.seed)
        self.model = InsightModel(config.model, config.preprocess.in_channels).to(self.device)
        self.loss_fn = InsightLoss(train_config.spectral_lambda, train_config.negative_weight,
                                   train_config.negative_topk_fraction)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=train_config.learning_rate,
                                           weight_decay=train_config.weight_decay)
        self.augmenter = VolumeAugmenter() if train_config.augment else None
        self.history: list[dict[str, Any]] = []
        self._precomputed: list[torch.Tensor] | None = None
        self._seed_instances: SeedInstances | None = None
        self.seed_epochs = train_config.seed_epochs if train_config.seed_instances else 0
        self.start_epoch = 0
        self.best_auroc = -math.inf

    # ----------------------------------------------------------------------------------------------
    def resume(self, checkpoint: str | Path) -> None:
        """Continue from a ``last.pt`` written by this trainer (same config required)."""
        loaded = load_checkpoint(checkpoint, self.device, with_training_state=True)
        if loaded.config != self.config:
            raise ModelError(f"{checkpoint} was trained with a different configuration; cannot resume")
        state = loaded.training
        if "epoch" not in state or "optimizer" not in state:
            raise ModelError(f"{checkpoint} holds no training state (use last.pt to resume)")
        self.model.load_state_dict(loaded.model.state_dict())
        self.optimizer.load_state_dict(state["optimizer"])
        self.history = list(state.get("history", []))
        self.best_auroc = float(state.get("best_auroc", -math.inf))
        self.start_epoch = int(state["epoch"]) + 1
        logger.info("resuming from %s at epoch %d", checkpoint, self.start_epoch + 1)

    def fit(self, train_cases: list[PreparedCase], val_cases: list[PreparedCase] | None = None,
            progress: bool = True) -> TrainSummary:
        if not train_cases:
            raise InputError("no training cases")
        labels = {c.label for c in train_cases}
        if labels != {0, 1}:
            raise InputError(f"training needs both PE and no-PE scans; labels present: {sorted(labels)}")
        total = self.seed_epochs + self.train_config.epochs
        weak_left = self.train_config.epochs > 0 and self.start_epoch < total
        cache_train = (weak_left and self.model.supports_precompute and self.train_config.cache_fixed_features
                       and self._cache_fits(train_cases))
        self._precomputed = self._precompute(train_cases) if cache_train else None
        val_cache = self._precompute(val_cases) if (val_cases and self.model.supports_precompute) else None
        self.out_dir.mkdir(parents=True, exist_ok=True)
        for epoch in range(self.start_epoch, total):
            started = time.perf_counter()
            seeding = epoch < self.seed_epochs
            if seeding:
                self._set_learning_rate(cosine_learning_rate(self.train_config.learning_rate, epoch, self.seed_epochs))
                train_loss = self._seed_epoch(train_cases, epoch, progress)
            else:
                weak_epoch = epoch - self.seed_epochs
                self._set_learning_rate(cosine_learning_rate(self.train_config.weak_rate, weak_epoch,
                                                             self.train_config.epochs))
                train_loss = self._train_epoch(train_cases, epoch, progress)
            record: dict[str, Any] = {"epoch": epoch + 1, "stage": "seed" if seeding else "weak",
                                      "train_loss": train_loss, "learning_rate": self.optimizer.param_groups[0]["lr"]}
            if val_cases:
                record.update(self.validate(val_cases, val_cache))
            record["seconds"] = round(time.perf_counter() - started, 2)
            warning = same_answer_warning(record)
            if warning:
                record["warning"] = warning
                logger.warning("epoch %d: %s", epoch + 1, warning)
            self.history.append(record)
            improved = self._is_improvement(record)
            if improved:
                self.best_auroc = record.get("val_auroc", -math.inf)
            self._save(epoch, improved)
            logger.info("epoch %d/%d %s", epoch + 1, total,
                        " ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()
                                 if k != "epoch"))
        return TrainSummary(self.out_dir / "best.pt", self.out_dir / "last.pt", self.model_version(), self.history)

    # ----------------------------------------------------------------------------------------------
    def _set_learning_rate(self, rate: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = rate

    def _cache_fits(self, cases: list[PreparedCase]) -> bool:
        """Whether the fixed-feature cache of ``cases`` stays under the memory cap (float16)."""
        stride = self.model.stride
        channels = getattr(self.model.encoder, "precomputed_channels", 0)
        size = sum(c.volume.shape[0] * math.ceil(c.volume.shape[1] / stride) * math.ceil(c.volume.shape[2] / stride)
                   for c in cases) * channels * 2
        if size > self.train_config.feature_cache_gb * 1e9:
            logger.warning("the fixed-feature cache would take %.1f GB (> feature_cache_gb %g): computing the "
                           "features every step instead", size / 1e9, self.train_config.feature_cache_gb)
            return False
        return True

    def _seed_epoch(self, cases: list[PreparedCase], epoch: int, progress: bool) -> float:
        """One pass of instance training over the anomaly-seeded instances (selected once per run)."""
        config = self.train_config
        if self._seed_instances is None:
            self._seed_instances = self._select_seed_instances(cases, progress)
            if epoch == 0:
                neutralise_context(self.model)
        instances = self._seed_instances
        self.model.train()
        generator = torch.Generator().manual_seed(config.seed * 100_003 + epoch)
        batches = torch.randperm(len(instances), generator=generator).split(config.seed_batch_size)
        losses = []
        for batch in tqdm(batches, desc=f"seed epoch {epoch + 1}/{self.seed_epochs}", disable=not progress,
                          unit="batch", leave=False):
            patches = instances.patches[batch].float().to(self.device, non_blocking=True)
            target = instances.labels[batch].to(self.device)[:, None].expand(-1, self.config.model.num_classes)
            with autocast_for(self.device, config.amp):
                logits = seed_detection_logits(self.model, patches)
            logits = logits.float()
            loss = (torch.nn.functional.binary_cross_entropy_with_logits(logits, target)
                    + 0.5 * config.spectral_lambda * logits.pow(2).mean())
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm=5.0)
            self.optimizer.step()
            losses.append(float(loss.detach()))
        self.optimizer.zero_grad(set_to_none=True)
        return float(np.mean(losses))

    def _select_seed_instances(self, cases: list[PreparedCase], progress: bool,
                               encoder_inputs: list[torch.Tensor] | None = None) -> SeedInstances:
        """The anomaly-seeded instances of ``cases``.

        By default the fixed features are computed afresh (float32), so the selection does not depend
        on whether weak epochs (and so the float16 training cache) follow: a resumed run selects
        exactly what the uninterrupted one did. ``encoder_inputs``: cached inputs to select from instead.
        """
        config = self.train_config
        return collect_seed_instances(
            self.model, cases, self.config.preprocess.slice_context, config.seed_instances, config.seed_components,
            config.seed_reference_per_scan, config.seed, self.device, progress, encoder_inputs=encoder_inputs)

    def _train_epoch(self, cases: list[PreparedCase], epoch: int, progress: bool) -> float:
        self.model.train()
        if self.train_config.freeze_batch_norm or self.seed_epochs:
            for module in self.model.modules():
                if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                    module.eval()
        generator = torch.Generator().manual_seed(self.train_config.seed * 100_003 + epoch)
        order = torch.randperm(len(cases), generator=generator).tolist()
        if self.augmenter is not None:
            self.augmenter.reseed(self.train_config.seed * 100_003 + epoch)
        losses = []
        bar = tqdm(order, desc=f"epoch {epoch + 1}/{self.seed_epochs + self.train_config.epochs}",
                   disable=not progress, unit="scan", leave=False)
        per_step = self.train_config.scans_per_step
        self.optimizer.zero_grad(set_to_none=True)
        for position, index in enumerate(bar):
            case = cases[index]
            slices, region = self._training_input(index, case, generator)
            stride = self.train_config.slice_stride
            if stride > 1:
                offset = int(torch.randint(stride, (1,), generator=generator))
                slices = slices[offset::stride]
                region = region[offset::stride] if region is not None else None
            slices = slices.to(self.device, non_blocking=True)
            region = region.to(self.device, non_blocking=True) if region is not None else None
            target = torch.full((self.config.model.num_classes,), float(case.label), device=self.device)
            with autocast_for(self.device, self.train_config.amp):
                output = self.model(slices, precomputed=self._precomputed is not None, region=region)
            loss = self.loss_fn(output.probability, target, output.detection_logits, output.heatmap)
            (loss / per_step).backward()
            if (position + 1) % per_step == 0 or position + 1 == len(order):
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm=5.0)
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
            losses.append(float(loss.detach()))
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
            if not progress and len(losses) % _LOG_EVERY == 0:
                logger.info("epoch %d: %d/%d scans, loss %.4f", epoch + 1, len(losses), len(order),
                            np.mean(losses[-_LOG_EVERY:]))
        return float(np.mean(losses))

    def _training_input(self, index: int, case: PreparedCase,
                        generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One scan's input and search region [N, H, W] (or None).

        The input is slice stacks [N, C, H, W], or cached encoder inputs [N, C', h, w]. With
        augmentation, input and region are flipped left-right together half the time; cached inputs
        get only that flip (intensity augmentation would change them).
        """
        flip = self.augmenter is not None and bool(torch.rand(1, generator=generator) < 0.5)
        region = case.region.flip(-1) if (flip and case.region is not None) else case.region
        if self._precomputed is not None:
            cached = self._precomputed[index].float()
            return (cached.flip(-1) if flip else cached), region
        volume = case.volume.float()
        if self.augmenter is not None:
            volume = self.augmenter(volume.flip(-1) if flip else volume)
        return slice_stack(volume, self.config.preprocess.slice_context), region

    @torch.no_grad()
    def _precompute(self, cases: list[PreparedCase]) -> list[torch.Tensor]:
        """The encoder's parameter-free part for every scan, once (float16, on the CPU)."""
        started = time.perf_counter()
        encoder = self.model.encoder
        cached = [encoder.precompute(slice_stack(c.volume.float(), self.config.preprocess.slice_context)
                                     .to(self.device)).to("cpu", torch.float16) for c in cases]
        logger.info("cached the encoder's fixed features of %d scans in %.1f s (%.0f MB)", len(cases),
                    time.perf_counter() - started, sum(t.numel() * 2 for t in cached) / 1e6)
        return cached

    def predict_probabilities(self, cases: list[PreparedCase],
                              cache: list[torch.Tensor] | None = None) -> np.ndarray:
        """Scan probabilities [len(cases)] with the model in eval mode (all slices).

        ``cache``: the encoder's precomputed inputs for ``cases`` (from ``_precompute``), if any.
        """
        return scan_probabilities(self.model, cases, self.config.preprocess.slice_context, self.device, cache,
                                  self.train_config.amp)

    def validate(self, cases: list[PreparedCase], cache: list[torch.Tensor] | None = None) -> dict[str, float]:
        probs = self.predict_probabilities(cases, cache)
        labels = np.asarray([c.label for c in cases])
        clipped = np.clip(probs, 1e-6, 1 - 1e-6)
        bce = float(-np.mean(labels * np.log(clipped) + (1 - labels) * np.log(1 - clipped)))
        metrics = {"val_bce": bce, "val_auroc": auroc(labels, probs), "val_p_std": float(probs.std()),
                   "val_mean_p": float(probs.mean())}
        if labels.any() and not labels.all():
            metrics["val_mean_p_pe"] = float(probs[labels == 1].mean())
            metrics["val_mean_p_no_pe"] = float(probs[labels == 0].mean())
        return metrics

    def _is_improvement(self, record: dict[str, Any]) -> bool:
        value = record.get("val_auroc")
        if value is None or math.isnan(value):
            return True  # no validation: the latest epoch is the best we know
        return value >= self.best_auroc

    def model_version(self) -> str:
        return insight_model_version(self.model)

    def _save(self, epoch: int, improved: bool) -> None:
        version = self.model_version()
        training = {
            "epoch": epoch,
            "optimizer": self.optimizer.state_dict(),
            "history": self.history,
            "best_auroc": self.best_auroc,
            "train_config": {k: v for k, v in vars(self.train_config).items()},
        }
        save_checkpoint(self.out_dir / "last.pt", self.model, self.config, version, training)
        if improved:
            save_checkpoint(self.out_dir / "best.pt", self.model, self.config, version,
                            {"epoch": epoch, "history": self.history, "train_config": training["train_config"]})
        write_json_atomic(self.out_dir / "metrics.json", {"model_version": version, "history": self.history})
