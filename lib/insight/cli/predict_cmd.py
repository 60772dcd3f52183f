"""``insight predict``: PE probability, heatmap and findings for one or more volumes."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from insight.errors import InsightError

logger = logging.getLogger(__name__)

#: The demo model shipped in the repository, used when --model is not given.
DEFAULT_MODEL = Path(__file__).resolve().parents[3] / "sample-data" / "models" / "pe_insight_demo.pt"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "predict", help="predict PE probability, heatmap and findings",
        description="For each input (NIfTI/NRRD file or DICOM series folder) write <name>_heatmap.nii.gz "
                    "(float32 on the input grid) and <name>.json to --out. The model is loaded once.")
    parser.add_argument("inputs", nargs="+", type=Path, metavar="IMAGE")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="checkpoint (default: the shipped demo model)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from insight.inference import InsightPredictor  # heavy import

    predictor = InsightPredictor.from_checkpoint(args.model, args.device)
    failures = 0
    for path in args.inputs:
        try:
            result = predictor.predict_file(path)
            _, json_path = result.write(args.out)
        except InsightError as err:
            failures += 1
            logger.error("%s: %s", path, err)
            continue
        logger.info("%s: p(PE)=%.3f, %d findings -> %s", result.name, result.pe_probability, len(result.findings),
                    json_path)
    if failures:
        logger.error("%d of %d inputs failed", failures, len(args.inputs))
        return 1
    return 0
