"""``insight triage``: a reading worklist ordered by PE probability and QA state."""

from __future__ import annotations

import argparse
import logging
import math
import sys
from pathlib import Path

from insight.errors import InputError, InsightError

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "triage", help="order studies for reading by PE probability and QA state",
        description="Build a worklist from prediction JSONs (insight predict) and/or images (predicted here). "
                    "Order: suspected PE (QA readable, p >= threshold), QA failed (not_ctpa, ...), not "
                    "analysed, routine; highest probability first within each. No study is left out.")
    parser.add_argument("inputs", nargs="+", type=Path, metavar="INPUT",
                        help="folders of prediction JSONs or images, JSON files, image files or DICOM folders")
    parser.add_argument("--model", type=Path, help="checkpoint for images (default: the shipped demo model)")
    parser.add_argument("--threshold", type=float, default=None,
                        help="PE probability from which a study is 'suspected PE' (default 0.5)")
    parser.add_argument("--json", type=Path, help="also write the worklist to this JSON file")
    parser.add_argument("--predictions-out", type=Path,
                        help="write the predictions of images (JSON + heatmap) to this folder")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from insight.io.atomic import write_json_atomic
    from insight.io.image_io import IMAGE_SUFFIXES, case_name, find_images
    from insight.triage import DEFAULT_FLAG_THRESHOLD, WorklistEntry, build_worklist, entry_from_prediction
    from insight.triage import read_prediction_file, read_prediction_folder

    threshold = DEFAULT_FLAG_THRESHOLD if args.threshold is None else args.threshold
    if not (math.isfinite(threshold) and 0.0 <= threshold <= 1.0):
        raise InputError(f"--threshold must be a probability in [0, 1], got {args.threshold}")
    entries, skipped, images = [], {}, []
    for path in args.inputs:
        if not path.exists():
            raise InputError(f"input not found: {path}")
        if path.is_dir():
            found_entries, found_skipped = read_prediction_folder(path, threshold)
            entries += found_entries
            skipped.update(found_skipped)
            found_images = find_images(path)
            images += found_images
            if not found_entries and not found_images and not any(path.glob("*.json")):
                images.append(path)  # a DICOM series folder
        elif path.name.lower().endswith(".json"):
            entry = read_prediction_file(path, threshold)
            if entry is None:
                skipped[str(path)] = "not a prediction (no pe_probability, qa or error key)"
            else:
                entries.append(entry)
        elif path.name.lower().endswith(IMAGE_SUFFIXES) or path.is_file():
            images.append(path)
    if images:
        from insight.cli.predict_cmd import DEFAULT_MODEL
        from insight.inference import InsightPredictor

        predictor = InsightPredictor.from_checkpoint(args.model or DEFAULT_MODEL, args.device)
        for image in images:
            try:
                result = predictor.predict_file(image)
                if args.predictions_out is not None:
                    result.write(args.predictions_out)
                entries.append(entry_from_prediction(result.to_json(), threshold))
            except InsightError as err:
                logger.error("%s: %s", image, err)
                entries.append(WorklistEntry(case_name(image), "not_analysed", f"not analysed: {err}",
                                             source=str(image), error=str(err)))
    if not entries:
        raise InputError("no studies found: give prediction JSONs, images or folders of them")
    worklist = build_worklist(entries, threshold, skipped)
    if args.json is not None:
        write_json_atomic(args.json, worklist.to_json())
    sys.stdout.write(worklist.to_table() + "\n")
    counts = ", ".join(f"{n} {p}" for p, n in worklist.counts.items() if n)
    logger.info("worklist of %d studies: %s", len(worklist.entries), counts)
    return 0
