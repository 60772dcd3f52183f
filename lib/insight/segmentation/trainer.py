"""Patch-based training of the PE segmentation UNet, single-process or DDP.

Writes to ``out_dir`` (rank 0 only, every file atomically): ``last.pt`` (every epoch, with optimizer
state, to resume), ``best.pt`` (best validation Dice on the PE cases; the latest epoch when there is
no validation set), ``metrics.json`` (history) and, under DDP, ``distributed.json`` (each rank's
final weight digest; they must agree).

Reproducible for a seed on one device and process count: the network is initialised from the seed,
and the case order (DistributedSampler) and patch/augmentation draws (MONAI transforms) are reseeded
from (seed, epoch, rank), so a resumed run continues as the uninterrupted one would.
Under DDP every process draws its share of the cases per epoch and gradients are averaged across
processes (so the per-case weights act within each process's batch).
"""

from __future__ import annotations

import logging
import math
import random
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from monai.data import DataLoader, Dataset
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler

from insight.devices import autocast_for
from insight.errors import InputError, ModelError
from insight.io.atomic import write_json_atomic
from insight.metrics import dice
from insight.models.checkpoint import weights_digest
from insight.segmentation.checkpoint import (load_segmentation_checkpoint, save_segmentation_checkpoint,
                                             segmentation_model_version)
from insight.segmentation.config import SegmentationConfig, SegTrainConfig
from insight.segmentation.dataset import PreparedPair, as_training_items, training_transforms
from insight.segmentation.distributed import DistributedContext, init_process_group
from insight.segmentation.losses import WeightedDiceCELoss
from insight.segmentation.network import build_network
from insight.segmentation.windows import pe_probability

__all__ = ["SegTrainSummary", "SegmentationTrainer"]

logger = logging.getLogger(__name__)


@dataclass
class SegTrainSummary:
    """What a finished run produced (paths are rank 0's files)."""

    best_checkpoint: Path
    last_checkpoint: Path
    model_version: str
    history: list[dict[str, Any]] = field(default_factory=list)
    weights_digest: str = ""
    iterations: int = 0
    seconds: float = 0.0

    @property
    def seconds_per_iteration(self) -> float:
        return self.seconds / self.iterations if self.iterations else float("nan")


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


class SegmentationTrainer:
    """Trains the UNet on prepared image + mask pairs.

    Args:
        config: network, grid and patch size (stored in every checkpoint).
        train_config: epochs, optimizer, weights of final labels and pseudo-masks, seed.
        out_dir: checkpoints and metrics.
        device: torch device; bf16 autocast on CUDA when ``train_config.amp``.
        context: this process's place in a DDP job (default: a single process). Under DDP the
            process group is joined here and the network wrapped in DistributedDataParallel.
    """

    def __init__(self, config: SegmentationConfig, train_config: SegTrainConfig, out_dir: str | Path,
                 device: torch.device | str = "cpu", context: DistributedContext | None = None) -> None:
        self.config = config
        self.train_config = train_config
        self.out_dir = Path(out_dir)
        self.device = torch.device(device)
        self.context = context or DistributedContext()
        if train_config.num_threads > 0:
            torch.set_num_threads(train_config.num_threads)
        init_process_group(self.context, self.device)
        _seed_everything(train_config.seed)
        self.network = build_network(config.network).to(self.device)
        self.model: torch.nn.Module = self.network
        if self.context.enabled:
            device_ids = [self.device.index] if self.device.type == "cuda" and self.device.index is not None else None
            self.model = DistributedDataParallel(self.network, device_ids=device_ids)
        self.optimizer = torch.optim.AdamW(self.network.parameters(), lr=train_config.learning_rate,
                                           weight_decay=train_config.weight_decay)
        self.loss_fn = WeightedDiceCELoss()
        self.history: list[dict[str, Any]] = []
        self.start_epoch = 0
        self.best_dice = -math.inf

    # ----------------------------------------------------------------------------------------------
    def resume(self, checkpoint: str | Path) -> None:
        """Continue from a ``last.pt`` written by this trainer (same configuration required)."""
        loaded = load_segmentation_checkpoint(checkpoint, self.device, with_training_state=True)
        if loaded.config != self.config:
            raise ModelError(f"{checkpoint} was trained with a different configuration; cannot resume")
        state = loaded.training
        if "epoch" not in state or "optimizer" not in state:
            raise ModelError(f"{checkpoint} holds no training state (resume from last.pt)")
        self.network.load_state_dict(loaded.model.state_dict())
        self.optimizer.load_state_dict(state["optimizer"])
        self.history = list(state.get("history", []))
        self.best_dice = float(state.get("best_dice", -math.inf))
        self.start_epoch = int(state["epoch"]) + 1
        if self.context.is_main:
            logger.info("resuming from %s after epoch %d", checkpoint, self.start_epoch)

    def initialize_from(self, checkpoint: str | Path) -> None:
        """Start from another run's weights (fine-tuning); its network settings must equal this one's."""
        loaded = load_segmentation_checkpoint(checkpoint, self.device)
        if loaded.config.network != self.config.network:
            raise ModelError(f"{checkpoint} holds a different network ({loaded.config.network}); cannot start from it")
        self.network.load_state_dict(loaded.model.state_dict())
        if self.context.is_main:
            logger.info("starting from the weights of %s (%s)", checkpoint, loaded.model_version)

    def fit(self, pairs: list[PreparedPair], val_pairs: list[PreparedPair] | None = None,
            until_epoch: int | None = None) -> SegTrainSummary:
        """Train for the remaining epochs; returns the summary (on every rank).

        ``until_epoch`` stops after that many epochs (of ``train_config.epochs``, whose learning-rate
        schedule stays the same): a run split in parts and resumed ends as the uninterrupted one.
        """
        if not pairs:
            raise InputError("no training cases")
        transform = training_transforms(self.config.patch_size_zyx, self.train_config)
        dataset = Dataset(as_training_items(pairs), transform=transform)
        sampler = DistributedSampler(dataset, num_replicas=self.context.world_size, rank=self.context.rank,
                                     shuffle=True, seed=self.train_config.seed, drop_last=False)
        loader = DataLoader(dataset, batch_size=self.train_config.cases_per_batch, sampler=sampler, num_workers=0)
        if self.context.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        epochs = self.train_config.epochs
        stop = epochs if until_epoch is None else min(int(until_epoch), epochs)
        total_iterations, total_seconds = 0, 0.0
        for epoch in range(self.start_epoch, stop):
            started = time.perf_counter()
            self._set_learning_rate(epoch)
            sampler.set_epoch(epoch)
            transform.set_random_state(seed=self._epoch_seed(epoch))
            loss, iterations, train_seconds = self._train_epoch(loader)
            total_iterations += iterations
            total_seconds += train_seconds
            record: dict[str, Any] = {"epoch": epoch + 1, "train_loss": round(loss, 5), "iterations": iterations,
                                      "seconds_per_iteration": round(train_seconds / max(iterations, 1), 4),
                                      "learning_rate": self.optimizer.param_groups[0]["lr"]}
            if val_pairs and self.context.is_main:
                record["val_dice"] = round(self.validate(val_pairs), 4)
            record["seconds"] = round(time.perf_counter() - started, 2)
            self.history.append(record)
            if self.context.is_main:
                improved = record.get("val_dice", math.inf) >= self.best_dice
                if improved and "val_dice" in record:
                    self.best_dice = record["val_dice"]
                self._save(epoch, improved)
                logger.info("epoch %d/%d %s", epoch + 1, epochs, " ".join(f"{k}={v}" for k, v in record.items()
                                                                            if k != "epoch"))
        digest = self._check_ranks_agree()
        return SegTrainSummary(self.out_dir / "best.pt", self.out_dir / "last.pt",
                               segmentation_model_version(self.network), self.history, digest, total_iterations,
                               total_seconds)

    @torch.no_grad()
    def validate(self, val_pairs: list[PreparedPair]) -> float:
        """Mean Dice (threshold 0.5 on the segmentation grid) over the ``val_pairs`` that hold PE.

        Cases without PE are left out: their Dice is 1 for an empty prediction, so a mean over all
        cases would reward the all-background network and choose it as ``best.pt`` (it did: half the
        validation scans of a campaign are PE-free). When no validation case holds PE, the mean runs
        over all of them (then it measures false positives: 1 = none anywhere).
        """
        self.network.eval()
        scores, has_pe = [], []
        for pair in val_pairs:
            probability = pe_probability(self.network, pair.image, self.config, self.device, self.train_config.amp)
            truth = pair.label[0].numpy()
            scores.append(dice(probability.numpy() >= 0.5, truth))
            has_pe.append(bool(truth.any()))
        self.network.train()
        positive = [score for score, pe in zip(scores, has_pe) if pe]
        return float(np.mean(positive if positive else scores))

    # ----------------------------------------------------------------------------------------------
    def _epoch_seed(self, epoch: int) -> int:
        return (self.train_config.seed * 1_000_003 + epoch * 1_009 + self.context.rank) % (2**31)

    def _set_learning_rate(self, epoch: int) -> None:
        """Cosine decay from the base rate over ``epochs``: a function of the epoch alone (resumable)."""
        rate = 0.5 * self.train_config.learning_rate * (1.0 + math.cos(math.pi * epoch / self.train_config.epochs))
        for group in self.optimizer.param_groups:
            group["lr"] = rate

    def _train_epoch(self, loader: DataLoader) -> tuple[float, int, float]:
        """One pass; returns (loss averaged over steps and processes, steps, seconds in steps)."""
        self.model.train()
        losses: list[float] = []
        seconds = 0.0
        with warnings.catch_warnings():
            # an empty mask (a no-PE case) makes RandCropByPosNegLabeld warn that it samples negatives only
            warnings.filterwarnings("ignore", message=".*Num foregrounds 0.*")
            for batch in loader:
                started = time.perf_counter()
                images = batch["image"].to(self.device, non_blocking=True)
                labels = batch["label"].to(self.device, non_blocking=True)
                weights = torch.as_tensor(batch["weight"], dtype=torch.float32, device=self.device)
                with autocast_for(self.device, self.train_config.amp):
                    logits = self.model(images)
                loss = self.loss_fn(logits, labels, weights)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.network.parameters(), max_norm=5.0)
                self.optimizer.step()
                losses.append(float(loss.detach()))
                seconds += time.perf_counter() - started
        mean = torch.tensor([float(np.mean(losses)) if losses else 0.0])
        if self.context.enabled:
            dist.all_reduce(mean)
            mean /= self.context.world_size
        return float(mean), len(losses), seconds

    def _save(self, epoch: int, improved: bool) -> None:
        training = {
            "epoch": epoch,
            "optimizer": self.optimizer.state_dict(),
            "history": self.history,
            "best_dice": self.best_dice,
            "train_config": dict(vars(self.train_config)),
            "world_size": self.context.world_size,
        }
        version = save_segmentation_checkpoint(self.out_dir / "last.pt", self.network, self.config, training)
        if improved:
            save_segmentation_checkpoint(self.out_dir / "best.pt", self.network, self.config,
                                         {"epoch": epoch, "history": self.history,
                                          "train_config": training["train_config"]})
        write_json_atomic(self.out_dir / "metrics.json", {"model_version": version, "history": self.history})

    def _check_ranks_agree(self) -> str:
        """This process's weight digest; under DDP rank 0 also writes every rank's to distributed.json."""
        digest = weights_digest(self.network)
        if not self.context.enabled:
            return digest
        digests: list[Any] = [None] * self.context.world_size
        dist.all_gather_object(digests, digest)
        if self.context.is_main:
            agree = len(set(digests)) == 1
            write_json_atomic(self.out_dir / "distributed.json", {
                "world_size": self.context.world_size, "backend": dist.get_backend(),
                "weights_digests": digests, "ranks_agree": agree})
            if not agree:
                logger.error("DDP ranks ended with different weights: %s", digests)
        dist.barrier()
        return digest
