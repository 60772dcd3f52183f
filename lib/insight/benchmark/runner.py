"""``run_benchmark``: data, training of every method, evaluation, and the written results.

Output folder layout::

    OUT/data/{train,val,test}/   phantom splits (reused on a rerun with the same settings)
    OUT/runs/<method>/           each method's checkpoints and training metrics
    OUT/results.json             everything measured (config, hardware, per-method figures and per-scan rows)
    OUT/results.md               the table
    OUT/roc.png, OUT/froc.png, OUT/montage.png
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import os
import platform
import time
from pathlib import Path
from typing import Any

import torch

from insight import __version__
from insight.benchmark.config import BenchmarkConfig
from insight.benchmark.data import ensure_splits, split_summary
from insight.benchmark.evaluation import evaluate_split
from insight.benchmark.methods import FeatureCache, TrainedMethod, train_method
from insight.benchmark.plots import plot_froc, plot_montage, plot_roc
from insight.benchmark.report import markdown_report
from insight.benchmark.summary import summarize_method
from insight.devices import resolve_device
from insight.errors import InputError
from insight.io.atomic import write_json_atomic, write_text_atomic
from insight.training import prepare_cases, read_label_table

__all__ = ["RESULT_FILES", "run_benchmark", "describe_hardware", "default_workers"]

logger = logging.getLogger(__name__)

#: Files a finished run writes into its output folder.
RESULT_FILES = ("results.json", "results.md", "roc.png", "froc.png", "montage.png")


def _cpu_name() -> str:
    """The CPU model (from /proc/cpuinfo on Linux), else the architecture."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _json_safe(value: Any) -> Any:
    """``value`` with every NaN or infinite float replaced by None (strict JSON)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def describe_hardware(device: torch.device) -> dict[str, Any]:
    """What the run ran on: device, CPU, thread count and library versions."""
    cpu = _cpu_name()
    info: dict[str, Any] = {"device": str(device), "cpu": cpu, "cpu_count": os.cpu_count(),
                            "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
                            "python": platform.python_version()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["description"] = f"{info['gpu']} (CUDA), {info['cpu_count']} CPU cores"
    else:
        info["description"] = f"CPU only ({cpu}, {info['cpu_count']} cores, torch threads: {info['torch_threads']})"
    return info


def default_workers() -> int:
    """Phantom-generation processes: the CPU count, at most 8."""
    return max(1, min(8, os.cpu_count() or 1))


def run_benchmark(config: BenchmarkConfig, out_dir: str | Path, device: str | None = None,
                  progress: bool = True, command: str | None = None, workers: int | None = None) -> dict[str, Any]:
    """Run the whole benchmark and write :data:`RESULT_FILES` into ``out_dir``; returns the results.

    Args:
        config: the parsed configuration.
        out_dir: output folder (created; its ``data/`` is reused when it matches the config).
        device: overrides ``config.device`` (auto, cpu, cuda, cuda:N).
        progress: progress bars.
        command: the command line to record in the results (default: a reconstruction).
        workers: processes generating phantoms (default :func:`default_workers`).
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    threads = torch.get_num_threads()  # training may change it (TrainConfig.num_threads): restored after
    try:
        return _run(config, out, device, progress, command, workers)
    finally:
        torch.set_num_threads(threads)


def _run(config: BenchmarkConfig, out: Path, device: str | None, progress: bool, command: str | None,
         workers: int | None) -> dict[str, Any]:
    started = time.perf_counter()
    torch_device = resolve_device(device or config.device)
    folders = ensure_splits(config, out / "data", progress, workers or default_workers())
    train_cases = prepare_cases(read_label_table(folders["train"]), config.preprocess, progress, "preparing train")
    val_cases = prepare_cases(read_label_table(folders["val"]), config.preprocess, progress, "preparing val")
    methods: list[TrainedMethod] = []
    cache = FeatureCache()  # every method has the same encoder: its fixed part is computed once
    for spec in config.methods:
        methods.append(train_method(spec, config, train_cases, val_cases, out / "runs" / spec.slug, torch_device,
                                    progress, cache))
    del train_cases, val_cases, cache
    test_labels = read_label_table(folders["test"])
    montage_names = {c.name for c in sorted(test_labels, key=lambda c: c.name) if c.label == 1}
    montage_names = set(sorted(montage_names)[: config.evaluation.montage_cases])
    val_eval = evaluate_split(methods, folders["val"], config.preprocess, config.evaluation, None, progress)
    test_eval = evaluate_split(methods, folders["test"], config.preprocess, config.evaluation, montage_names, progress)

    summaries = []
    for method in methods:
        name = method.spec.name
        summary = summarize_method(test_eval.results[name], val_eval.results[name], config.evaluation)
        summaries.append({"name": name, "kind": method.spec.kind, "threshold_rule": method.spec.threshold.describe(),
                          "model": method.spec.to_json()["model"], "parameters": method.n_parameters,
                          "model_version": method.model_version, "training": method.training, **summary})
    first = test_eval.results[methods[0].spec.name]
    results = {
        "benchmark": config.name,
        "description": config.description,
        "note": "Results on synthetic CTPA phantoms, not on patients.",
        "command": command or f"insight benchmark --config <{config.name}.json> --out {out}",
        "created_utc": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "insight_version": __version__,
        "hardware": describe_hardware(torch_device),
        "data": {name: {"seed": config.splits[name].seed, **split_summary(folder)} for name, folder in folders.items()},
        "test_emboli": int(sum(r.n_emboli for r in first)),
        "preprocess_s_mean": float(sum(test_eval.preprocess_s) / len(test_eval.preprocess_s)),
        "evaluation": {"operating_threshold": config.evaluation.operating_threshold,
                       "bootstrap": config.evaluation.bootstrap, "fp_rates": list(config.evaluation.fp_rates),
                       "pointing_tolerance_voxels": config.evaluation.pointing_tolerance_voxels,
                       "peak_tolerance_voxels": config.evaluation.peak_tolerance_voxels},
        "config": config.to_json(),
        "methods": summaries,
    }
    results["seconds_total"] = round(time.perf_counter() - started, 1)
    results = _json_safe(results)
    write_json_atomic(out / "results.json", results)
    write_text_atomic(out / "results.md", markdown_report(results))
    plot_roc(summaries, out / "roc.png")
    plot_froc(summaries, list(config.evaluation.fp_rates), out / "froc.png")
    plot_montage(test_eval.montage, summaries, out / "montage.png")
    logger.info("benchmark %s done in %.0f s: %s", config.name, results["seconds_total"],
                ", ".join(str(out / f) for f in RESULT_FILES))
    return results
