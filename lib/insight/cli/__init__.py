"""The ``insight`` command line: one module per subcommand, each exposing ``register(subparsers)``.

A subcommand's ``register`` adds its parser and sets ``func`` (called with the parsed namespace,
returns an exit code). Errors derived from :class:`insight.errors.InsightError` are reported as
one clear line on stderr with exit code 2, never as a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from insight import __version__
from insight.errors import InsightError

__all__ = ["main", "build_parser"]

logger = logging.getLogger(__name__)

#: Subcommand modules under ``insight.cli``, in the order ``insight --help`` lists them.
SUBCOMMAND_MODULES = ("phantom_cmd", "train_cmd", "predict_cmd", "evaluate_cmd", "ingest_cmd", "pseudo_masks_cmd", "train_seg_cmd", "segment_cmd", "report_cmd", "dicomweb_cmd", "benchmark_cmd", "index_cmd", "similar_cmd", "calibrate_cmd", "calibrate_ood_cmd", "triage_cmd", "simulate_campaign_cmd")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="insight",
        description="Explainable, weakly supervised PE analysis of CT pulmonary angiograms.",
    )
    parser.add_argument("--version", action="version", version=f"insight {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in SUBCOMMAND_MODULES:
        module = importlib.import_module(f"insight.cli.{name}")
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        return int(args.func(args) or 0)
    except InsightError as err:
        print(f"insight {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"insight {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
