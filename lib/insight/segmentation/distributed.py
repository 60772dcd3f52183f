"""Multi-process training with torch.distributed (DDP): the process context, and a local launcher.

Two ways to run several processes:

- ``torchrun --nproc_per_node N -m insight.cli train-seg ...``: torchrun sets ``RANK``,
  ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; :meth:`DistributedContext.from_env`
  reads them;
- :func:`spawn_processes` (``insight train-seg --nproc N``, MONAI Label's trainer): starts N local
  processes with ``torch.multiprocessing.start_processes`` (fork or spawn) on a free loopback port.

Backend: ``nccl`` when each process drives a GPU, ``gloo`` on CPU (what the tests use).
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

__all__ = ["DistributedContext", "init_process_group", "spawn_processes", "free_loopback_port"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistributedContext:
    """Where this process stands: its rank among ``world_size`` processes (1 = no DDP)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 writes checkpoints and logs progress."""
        return self.rank == 0

    @classmethod
    def from_env(cls) -> "DistributedContext":
        """Read torchrun's variables; a single process when they are absent."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
        if world < 1 or not 0 <= rank < world:
            raise ValueError(f"bad torch.distributed environment: RANK={rank}, WORLD_SIZE={world}")
        return cls(rank, world, local)


def init_process_group(context: DistributedContext, device: torch.device) -> None:
    """Join the process group (env:// rendezvous) unless single-process or already joined."""
    if not context.enabled or dist.is_initialized():
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend, init_method="env://", rank=context.rank, world_size=context.world_size)
    logger.info("rank %d/%d joined the %s process group", context.rank, context.world_size, backend)


def free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def spawn_processes(world_size: int, target: Callable[..., Any], args: tuple = (),
                    threads_per_process: int | None = None, start_method: str = "spawn") -> None:
    """Run ``target(context, *args)`` in ``world_size`` new local processes and wait for all.

    ``start_method``: ``spawn`` (fresh interpreters; ``target`` must be importable, tensors in
    ``args`` travel through shared memory; the only choice with CUDA) or ``fork`` (CPU, Linux: the
    processes start at once with this one's memory). Each process gets ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``
    and a common
    ``MASTER_ADDR=127.0.0.1``/``MASTER_PORT``; ``threads_per_process`` (default: cores / processes)
    caps its torch CPU threads. Raises when any process fails (torch.multiprocessing's
    ``ProcessRaisedException`` carries the child's traceback).
    """
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    threads = threads_per_process or max(1, (os.cpu_count() or 1) // world_size)
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ["MASTER_PORT"] = str(free_loopback_port())
    logger.info("starting %d training processes (rendezvous 127.0.0.1:%s, %d CPU thread(s) each)", world_size,
                os.environ["MASTER_PORT"], threads)
    torch.multiprocessing.start_processes(_process_main, args=(world_size, threads, target, args), nprocs=world_size,
                                          join=True, start_method=start_method)


def _process_main(rank: int, world_size: int, threads: int, target: Callable[..., Any], args: tuple) -> None:
    os.environ.update({"RANK": str(rank), "WORLD_SIZE": str(world_size), "LOCAL_RANK": str(rank)})
    torch.set_num_threads(threads)
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s rank{rank} %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    try:
        target(DistributedContext(rank, world_size, rank), *args)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
