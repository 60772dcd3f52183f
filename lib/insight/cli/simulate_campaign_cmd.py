"""``insight simulate-campaign``: the measured active-learning loop on phantoms (see :mod:`insight.campaign`)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from insight.errors import InputError

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "simulate-campaign", help="simulate an annotation campaign on phantoms: strategies vs random selection",
        description="Start from scan labels only: INSIGHT heatmaps of a phantom pool -> pseudo-masks -> segmentation "
                    "model (round 0); then, per strategy, rounds of k cases corrected with the truth clot masks (a "
                    "simulated clinician) and retraining from scratch. Records test Dice, per-embolus sensitivity "
                    "and false positives per scan per round, against random selection. Writes campaign.json, "
                    "campaign_curves.png and campaign_summary.md to --out. Results on phantoms.")
    parser.add_argument("--config", required=True, type=Path,
                        help="campaign configuration (JSON), e.g. benchmarks/configs/campaign_small.json")
    parser.add_argument("--out", required=True, type=Path, help="output folder (created; files in it are replaced)")
    parser.add_argument("--device", help="auto, cpu, cuda or cuda:N (default: the config's)")
    parser.add_argument("--insight-model", type=Path, help="INSIGHT checkpoint (default: the config's, else the "
                                                           "shipped demo model)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import dataclasses

    from insight.campaign.config import load_campaign_config
    from insight.campaign.report import write_campaign_outputs
    from insight.campaign.runner import run_campaign

    if args.out.exists() and not args.out.is_dir():
        raise InputError(f"--out {args.out} exists and is not a folder")
    config = load_campaign_config(args.config)
    if args.insight_model is not None:
        if not args.insight_model.is_file():
            raise InputError(f"--insight-model not found: {args.insight_model}")
        config = dataclasses.replace(config, insight=dataclasses.replace(config.insight,
                                                                         checkpoint=str(args.insight_model)))
    results = run_campaign(config, device=args.device)
    paths = write_campaign_outputs(results, args.out)
    logger.info("%s", results["comparison"]["statement"])
    logger.info("wrote %s", ", ".join(str(p) for p in paths.values()))
    return 0
