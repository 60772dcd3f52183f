"""``insight dicomweb``: analyze a study on a PACS over DICOMweb and store the findings back as DICOM SEG.

``insight dicomweb analyze --url URL --study UID [--store] [--out DIR]`` fetches the study's CT
series (QIDO-RS, WADO-RS), predicts it, prints the report summary (JSON) on stdout, writes the
report files with ``--out`` and, with ``--store``, stores the DICOM SEG of the findings in the
same study (STOW-RS). ``insight dicomweb store --url URL FOLDER`` uploads DICOM files.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from insight.errors import InsightError

logger = logging.getLogger(__name__)

#: The demo model shipped in the repository, used when --model is not given.
DEFAULT_MODEL = Path(__file__).resolve().parents[3] / "sample-data" / "models" / "pe_insight_demo.pt"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("dicomweb", help="analyze a study on a PACS (DICOMweb), store the SEG back",
                                   description=__doc__.split("\n\n", 1)[1] if __doc__ else None)
    actions = parser.add_subparsers(dest="dicomweb_command", metavar="ACTION", required=True)

    analyze = actions.add_parser("analyze", help="fetch a study's CT series, predict, report, optionally store the SEG")
    analyze.add_argument("--url", required=True, help="DICOMweb root, e.g. http://127.0.0.1:8042/dicom-web")
    analyze.add_argument("--study", required=True, metavar="UID", help="StudyInstanceUID")
    analyze.add_argument("--series", metavar="UID", help="SeriesInstanceUID (default: the largest usable CT series)")
    analyze.add_argument("--store", action="store_true", help="store the findings as a DICOM SEG in the study (STOW-RS)")
    analyze.add_argument("--out", type=Path, help="also write the report files (JSON, montage PNG, SEG) here")
    analyze.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="checkpoint (default: the shipped demo model)")
    analyze.add_argument("--threshold", type=float, default=None,
                         help="heatmap threshold for findings (default: the model's finding threshold)")
    analyze.add_argument("--seg-mode", choices=("findings", "suspicion"), default="findings",
                         help="one segment per finding (default) or one 'PE suspicion' segment")
    analyze.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    analyze.add_argument("--timeout", type=float, default=120.0, help="seconds per HTTP request (default 120)")
    analyze.set_defaults(func=run_analyze)

    store = actions.add_parser("store", help="upload the DICOM files under a folder (STOW-RS)")
    store.add_argument("folder", type=Path)
    store.add_argument("--url", required=True, help="DICOMweb root")
    store.add_argument("--timeout", type=float, default=120.0, help="seconds per HTTP request (default 120)")
    store.set_defaults(func=run_store)


def run_analyze(args: argparse.Namespace) -> int:
    from insight.dicomweb import PacsClient, analyze_study  # heavy imports
    from insight.inference import InsightPredictor

    logging.getLogger("highdicom").setLevel(logging.WARNING)  # it logs every copied module at INFO
    if args.threshold is not None and not 0.0 < args.threshold <= 1.0:
        raise InsightError(f"--threshold must be in (0, 1], got {args.threshold}")
    if args.out is not None and args.out.exists() and not args.out.is_dir():
        raise InsightError(f"--out {args.out} exists and is not a folder")
    client = PacsClient(args.url, timeout_s=args.timeout)
    predictor = InsightPredictor.from_checkpoint(args.model, args.device)
    analysis = analyze_study(client, args.study, predictor, series_instance_uid=args.series, store=args.store,
                             threshold=args.threshold, seg_mode=args.seg_mode)
    if args.out is not None:
        analysis.report.write(args.out)
    result = analysis.result
    logger.info("study %s series %s: p(PE)=%.3f, %d findings%s", args.study, analysis.series_instance_uid,
                result.pe_probability, len(result.findings),
                f"; SEG {analysis.stored_seg_uid} stored" if analysis.stored_seg_uid else "")
    json.dump(analysis.report.summary, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


def run_store(args: argparse.Namespace) -> int:
    from insight.dicomweb import PacsClient

    stored = PacsClient(args.url, timeout_s=args.timeout).store_folder(args.folder)
    logger.info("stored %d instance(s) from %s on %s", len(stored), args.folder, args.url)
    return 0
