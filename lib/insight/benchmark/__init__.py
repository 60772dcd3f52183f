"""``insight benchmark``: INSIGHT against its baselines on phantom splits with known clot masks.

Results on synthetic phantoms are results on phantoms. Public API::

    from insight.benchmark import load_benchmark_config, run_benchmark
    results = run_benchmark(load_benchmark_config("benchmarks/configs/small.json"), "out/")

The runner (torch, matplotlib) is imported on first use, so the phantom-generation worker
processes, which import this package, start light.
"""

from __future__ import annotations

from typing import Any

from insight.benchmark.config import BenchmarkConfig, MethodSpec, load_benchmark_config, parse_benchmark_config

__all__ = ["BenchmarkConfig", "MethodSpec", "load_benchmark_config", "parse_benchmark_config", "run_benchmark",
           "RESULT_FILES"]


def __getattr__(name: str) -> Any:
    if name in ("run_benchmark", "RESULT_FILES"):
        from insight.benchmark import runner

        return getattr(runner, name)
    raise AttributeError(f"module 'insight.benchmark' has no attribute {name!r}")
