"""``insight report``: per study a JSON summary, a key-slice montage PNG and (``--seg``) a DICOM SEG."""

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
        "report", help="write a study report: JSON summary, key-slice montage, DICOM SEG of the findings",
        description="For each input (NIfTI/NRRD file or DICOM series folder) write <name>_report.json "
                    "(probability, findings in LPS mm, QA, model version, input identity), "
                    "<name>_montage.png (key slices with the heatmap and findings) and, with --seg and a DICOM "
                    "input, <name>_seg.dcm (the findings as a DICOM SEG referencing the source series).")
    parser.add_argument("inputs", nargs="+", type=Path, metavar="IMAGE_OR_DICOM_DIR")
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="checkpoint (default: the shipped demo model)")
    parser.add_argument("--seg", action="store_true", help="also write the findings as a DICOM SEG (DICOM input only)")
    parser.add_argument("--seg-mode", choices=("findings", "suspicion"), default="findings",
                        help="one segment per finding (default) or one 'PE suspicion' segment")
    parser.add_argument("--threshold", type=float, default=None,
                        help="heatmap threshold for findings (default: the model's finding threshold)")
    parser.add_argument("--max-tiles", type=int, default=6, help="key slices in the montage (default 6)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from insight.inference import InsightPredictor  # heavy imports
    from insight.reports import build_report, predict_for_report, with_threshold

    logging.getLogger("highdicom").setLevel(logging.WARNING)  # it logs every copied module at INFO
    if args.threshold is not None and not 0.0 < args.threshold <= 1.0:
        raise InsightError(f"--threshold must be in (0, 1], got {args.threshold}")
    if args.max_tiles < 1:
        raise InsightError(f"--max-tiles must be at least 1, got {args.max_tiles}")
    if args.out.exists() and not args.out.is_dir():
        raise InsightError(f"--out {args.out} exists and is not a folder")
    predictor = InsightPredictor.from_checkpoint(args.model, args.device)
    failures = 0
    for path in args.inputs:
        try:
            result, image = predict_for_report(predictor, path)
            if args.threshold is not None:
                result = with_threshold(result, args.threshold, predictor.config.inference)
            report = build_report(result, image, seg=args.seg, seg_mode=args.seg_mode, max_tiles=args.max_tiles)
            files = report.write(args.out)
        except InsightError as err:
            failures += 1
            logger.error("%s: %s", path, err)
            continue
        logger.info("%s: p(PE)=%.3f, %d findings -> %s%s", result.name, result.pe_probability, len(result.findings),
                    files.summary, f", {files.seg.name}" if files.seg else "")
    if failures:
        logger.error("%d of %d inputs failed", failures, len(args.inputs))
        return 1
    return 0
