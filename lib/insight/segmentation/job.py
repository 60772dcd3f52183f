"""One entry point for a training run: prepare the cases, then train in 1 or N processes.

Used by ``insight train-seg`` and the MONAI Label ``pe_segmentation`` trainer. With ``nproc > 1``
the cases are prepared once here, then :func:`insight.segmentation.distributed.spawn_processes`
starts the DDP processes, which receive the prepared tensors through shared memory. Under torchrun
(``WORLD_SIZE`` set) each process prepares its own copy and trains as its rank.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from insight.devices import resolve_device
from insight.errors import InputError
from insight.models.checkpoint import weights_digest
from insight.segmentation.checkpoint import load_segmentation_checkpoint
from insight.segmentation.config import SegmentationConfig, SegTrainConfig
from insight.segmentation.dataset import LabeledVolume, PreparedPair, prepare_pair
from insight.segmentation.distributed import DistributedContext, spawn_processes
from insight.segmentation.trainer import SegmentationTrainer, SegTrainSummary

__all__ = ["SegTrainingJob", "prepare_pairs", "run_training"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SegTrainingJob:
    """What to train and where.

    Attributes:
        config: network, grid, patch size.
        train_config: epochs, optimizer, weights, seed.
        out_dir: where last.pt, best.pt, metrics.json (and distributed.json) go.
        device: ``auto``, ``cpu``, ``cuda``; with several processes on CUDA each takes ``cuda:<rank>``.
        resume: a last.pt to continue from (weights, optimizer, epoch).
        init_weights: a checkpoint whose weights start the run (fine-tuning; same network required).
    """

    config: SegmentationConfig
    train_config: SegTrainConfig
    out_dir: Path
    device: str = "auto"
    resume: Path | None = None
    init_weights: Path | None = None


def prepare_pairs(cases: list[LabeledVolume], job: SegTrainingJob, what: str = "training") -> list[PreparedPair]:
    """Every case on the segmentation grid (read once)."""
    started = time.perf_counter()
    pairs = [prepare_pair(case, job.config.preprocess) for case in cases]
    logger.info("prepared %d %s case(s) in %.1f s", len(pairs), what, time.perf_counter() - started)
    return pairs


def run_training(job: SegTrainingJob, cases: list[LabeledVolume], val_cases: list[LabeledVolume] | None = None,
                 nproc: int = 1, start_method: str | None = None) -> SegTrainSummary:
    """Train on ``cases`` (validating on ``val_cases``) in ``nproc`` processes; returns rank 0's summary.

    ``start_method`` of the processes: default ``fork`` for CPU training on Linux (the processes start
    at once, sharing this one's imports and prepared data), else ``spawn`` (required with CUDA, which
    cannot be forked; each process re-imports torch and MONAI, tens of seconds on a busy machine).

    Raises:
        InputError: no cases, ``nproc < 1``, or more CUDA processes than GPUs.
    """
    if not cases:
        raise InputError("no training cases")
    if nproc < 1:
        raise InputError(f"nproc must be >= 1, got {nproc}")
    device = resolve_device(job.device)
    if device.type == "cuda" and nproc > torch.cuda.device_count():
        raise InputError(f"{nproc} processes asked for but only {torch.cuda.device_count()} GPU(s) present")
    context = DistributedContext.from_env()
    if nproc > 1 and context.enabled:
        raise InputError("already running under torchrun (WORLD_SIZE is set): do not also ask for --nproc")
    pairs = prepare_pairs(cases, job)
    val_pairs = prepare_pairs(val_cases, job, "validation") if val_cases else None
    if nproc == 1:
        return _train(context, job, pairs, val_pairs)
    if start_method is None:
        start_method = "fork" if device.type == "cpu" and sys.platform.startswith("linux") else "spawn"
    if start_method != "fork":  # forked processes see this memory as it is
        for pair in pairs + (val_pairs or []):
            pair.image.share_memory_()
            pair.label.share_memory_()
    started = time.perf_counter()
    spawn_processes(nproc, _spawned_worker, (job, pairs, val_pairs), start_method=start_method)
    return _summary_from_files(job.out_dir, time.perf_counter() - started)


def _train(context: DistributedContext, job: SegTrainingJob, pairs: list[PreparedPair],
           val_pairs: list[PreparedPair] | None) -> SegTrainSummary:
    device = resolve_device(job.device)
    if device.type == "cuda" and context.enabled:
        device = torch.device("cuda", context.local_rank)
        torch.cuda.set_device(device)
    trainer = SegmentationTrainer(job.config, job.train_config, job.out_dir, device, context)
    if job.init_weights is not None:
        trainer.initialize_from(job.init_weights)
    if job.resume is not None:
        trainer.resume(job.resume)
    return trainer.fit(pairs, val_pairs)


def _spawned_worker(context: DistributedContext, job: SegTrainingJob, pairs: list[PreparedPair],
                    val_pairs: list[PreparedPair] | None) -> None:
    _train(context, job, pairs, val_pairs)


def _summary_from_files(out_dir: Path, seconds: float) -> SegTrainSummary:
    """Rank 0's summary after the processes ended, read back from what it wrote."""
    last = out_dir / "last.pt"
    loaded = load_segmentation_checkpoint(last, "cpu", with_training_state=True)
    history = loaded.training.get("history", [])
    metrics_file = out_dir / "metrics.json"
    if metrics_file.is_file():
        history = json.loads(metrics_file.read_text(encoding="utf-8")).get("history", history)
    iterations = sum(int(r.get("iterations", 0)) for r in history)
    train_seconds = sum(float(r.get("seconds_per_iteration", 0.0)) * int(r.get("iterations", 0)) for r in history)
    return SegTrainSummary(out_dir / "best.pt", last, loaded.model_version, history, weights_digest(loaded.model),
                           iterations, train_seconds or seconds)
