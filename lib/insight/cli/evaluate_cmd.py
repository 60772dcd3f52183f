"""``insight evaluate``: classification and localization figures of a model on labelled scans."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from insight.cli.predict_cmd import DEFAULT_MODEL

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate", help="measure a model on labelled scans (and clot masks, where present)",
        description="Predict every scan listed in DATA/labels.csv; with DATA/truth/<name>_clot.nii.gz masks "
                    "also measure localization. Writes evaluation.json to --out and logs a summary.")
    parser.add_argument("data", type=Path, help="folder with volumes, labels.csv and optionally truth/")
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--threshold", type=float, default=0.5, help="operating threshold on p(PE)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--no-progress", action="store_true")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from insight.evaluation import evaluate_predictor
    from insight.inference import InsightPredictor
    from insight.io.atomic import write_json_atomic

    predictor = InsightPredictor.from_checkpoint(args.model, args.device)
    report = evaluate_predictor(predictor, args.data, args.threshold, progress=not args.no_progress)
    path = args.out / "evaluation.json"
    write_json_atomic(path, report.to_json())
    for key, value in report.metrics.items():
        logger.info("%-32s %s", key, f"{value:.4f}" if isinstance(value, float) else value)
    logger.info("wrote %s", path)
    return 0
