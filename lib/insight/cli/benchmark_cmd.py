"""``insight benchmark``: train INSIGHT and its baselines on phantom splits, write table, JSON and plots."""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from pathlib import Path

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "benchmark", help="compare INSIGHT with its baselines on synthetic phantoms",
        description="Generate train/validation/test phantom splits from separate seeds, train every method in "
                    "the config with the same encoder, data and budget, evaluate on the test split against the "
                    "clot masks, and write results.md, results.json, roc.png, froc.png and montage.png to --out. "
                    "Results on synthetic phantoms, not patients.")
    parser.add_argument("--config", type=Path, required=True, help="benchmark config (JSON), e.g. "
                                                                     "benchmarks/configs/small.json")
    parser.add_argument("--out", type=Path, required=True, help="output folder (its data/ is reused on reruns)")
    parser.add_argument("--device", help="override the config's device: auto, cpu, cuda or cuda:N")
    parser.add_argument("--workers", type=int, help="processes generating phantoms (default: CPU count, at most 8)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (logs only)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from insight.benchmark import load_benchmark_config, run_benchmark  # heavy imports only when run
    from insight.errors import InputError

    if args.workers is not None and args.workers < 1:
        raise InputError(f"--workers must be at least 1, got {args.workers}")
    config = load_benchmark_config(args.config)
    command = "insight " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:2] == ["benchmark"] else None
    command = command or (f"insight benchmark --config {shlex.quote(str(args.config))} "
                          f"--out {shlex.quote(str(args.out))}")
    results = run_benchmark(config, args.out, device=args.device, progress=not args.no_progress, command=command,
                            workers=args.workers)
    for method in results["methods"]:
        cls, loc = method["classification"], method["localization"]
        logger.info("%-20s AUROC %s  Dice(own) %s  pointing %s", method["name"],
                    f"{cls['auroc']:.3f}" if cls["auroc"] is not None else "n/a",
                    f"{loc['dice_own_mean']:.3f}" if loc["dice_own_mean"] is not None else "n/a",
                    f"{loc['pointing_game']:.2f}" if loc["pointing_game"] is not None else "n/a")
    logger.info("wrote %s", args.out / "results.md")
    return 0
