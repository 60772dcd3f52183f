"""``insight segment``: PE label volumes from a trained segmentation model, optionally scored against truth."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from insight.errors import InputError, InsightError

logger = logging.getLogger(__name__)

SUMMARY_FILE = "segment.json"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "segment", help="segment PE with a model from 'insight train-seg'",
        description="For each input (volume file, DICOM series folder, or folder of volumes) write "
                    "<out>/<name>.nii.gz (uint8 label volume on the input's exact grid, 1 = PE) and a summary "
                    f"<out>/{SUMMARY_FILE}. With --truth (folder of <name>_clot.nii.gz, as in a phantom's truth/) "
                    "also Dice, per-embolus sensitivity and false positives per scan.")
    parser.add_argument("inputs", nargs="+", type=Path, metavar="IMAGES_OR_DIR")
    parser.add_argument("--model", required=True, type=Path, help="segmentation checkpoint (best.pt / last.pt)")
    parser.add_argument("--out", required=True, type=Path, help="output folder (not an input folder)")
    parser.add_argument("--truth", type=Path, help="folder of truth clot masks <name>_clot.nii.gz")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import SimpleITK as sitk

    from insight import __version__
    from insight.io import write_image, write_json_atomic
    from insight.pseudo_masks.batch import check_output_folder, expand_inputs
    from insight.pseudo_masks.measure import read_truth_mask, score_mask, summarize_scores
    from insight.segmentation.predictor import SegmentationPredictor

    if args.truth is not None and not args.truth.is_dir():
        raise InputError(f"--truth folder not found: {args.truth}")
    inputs = expand_inputs(args.inputs)
    check_output_folder(args.out, inputs)
    predictor = SegmentationPredictor.from_checkpoint(args.model, args.device)
    cases, failures, scores, peaks = [], [], [], {}
    started = time.perf_counter()
    for path in inputs:
        try:
            result = predictor.predict_file(path)
            write_image(result.label, args.out / f"{result.name}.nii.gz")
            record = result.to_json()
            if args.truth is not None:
                truth = read_truth_mask(args.truth, result.name, result.label)  # the label lies on the input grid
                score = score_mask(sitk.GetArrayViewFromImage(result.label), truth, result.name)
                scores.append(score)
                peaks[result.name] = result.peak_probability
                record["score"] = score.to_dict()
        except InsightError as err:
            logger.error("%s: %s", path, err)
            failures.append({"source": str(path), "error": str(err)})
            continue
        cases.append(record)
        logger.info("%s: %d region(s), %.0f mm3%s", result.name, result.n_regions, result.volume_mm3,
                    f", Dice {record['score']['dice']}" if "score" in record else "")
    metrics = summarize_scores(scores, scan_scores=peaks) if scores else None
    write_json_atomic(args.out / SUMMARY_FILE, {
        "insight_version": __version__, "model": str(args.model), "model_version": predictor.model_version,
        "truth_dir": str(args.truth) if args.truth else None, "seconds": round(time.perf_counter() - started, 2),
        "metrics": metrics, "cases": cases, "failures": failures})
    if metrics:
        logger.info("%d scans: mean Dice (PE scans) %s, per-embolus sensitivity %s, false positives per scan %s, "
                    "scan AUROC of the peak probability %s", metrics["n_scans"], metrics["mean_dice_positive"],
                    metrics["embolus_sensitivity"], metrics["false_positives_per_scan"], metrics["scan_auroc"])
    if failures:
        logger.error("%d of %d inputs failed", len(failures), len(inputs))
        return 1
    return 0
