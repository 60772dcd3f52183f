"""``insight calibrate-ood``: calibrate the out-of-distribution QA check of a model and store it beside it."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Sequence

from insight.errors import InputError

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "calibrate-ood", help="calibrate the out-of-distribution QA check",
        description="Embed reference (training) studies and held-out in-distribution studies with the model's "
                    "encoder; set the kNN-distance threshold for the target false-alarm rate on the held-out "
                    "ones; optionally measure false alarms / detections on further sets. Writes "
                    "<model stem>.ood.json beside the model, which predictions then use (QA flag "
                    "out_of_distribution).")
    reference = parser.add_mutually_exclusive_group(required=True)
    reference.add_argument("--reference", nargs="+", type=Path, metavar="INPUT",
                           help="training studies: image files, DICOM series folders or folders of images")
    reference.add_argument("--reference-index", type=Path, metavar="DIR",
                           help="a case index of the training studies (insight index build), built with --model")
    parser.add_argument("--held-out", nargs="+", type=Path, required=True, metavar="INPUT",
                        help="in-distribution studies not in --reference (sets the threshold)")
    parser.add_argument("--evaluate-in", nargs="+", type=Path, default=[], metavar="INPUT",
                        help="further in-distribution studies: their false-alarm rate is measured and stored")
    parser.add_argument("--evaluate-out", nargs="+", type=Path, default=[], metavar="INPUT",
                        help="out-of-distribution studies: their detection rate is measured and stored")
    parser.add_argument("--model", type=Path, help="checkpoint (default: the shipped demo model)")
    parser.add_argument("--target-false-alarm-rate", type=float, default=0.05,
                        help="fraction of in-distribution studies to flag, in (0, 0.5] (default 0.05)")
    parser.add_argument("-k", type=int, default=1, help="neighbour rank of the distance (default 1: nearest)")
    parser.add_argument("--method", choices=("auto", "empirical", "lognormal"), default="auto",
                        help="threshold from the held-out distances (default auto: empirical with >= 2/target "
                             "held-out studies, else a log-normal fit)")
    parser.add_argument("--out", type=Path, help="sidecar path (default: <model stem>.ood.json beside the model)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.set_defaults(func=run)


def _embed_all(embedder, inputs: Sequence[Path], what: str) -> tuple[list, list[str]]:
    from insight.retrieval import gather_images

    images, _ = gather_images(inputs)
    if not images and inputs:
        raise InputError(f"no studies found for {what}")
    vectors, names = [], []
    for path in images:
        case = embedder.embed_file(path)  # an unreadable study stops the calibration: it must be on known data
        vectors.append(case.vector)
        names.append(case.name)
        logger.info("%s: %s embedded in %.1f s", what, case.name, case.seconds)
    return vectors, names


def _from_index(folder: Path, model_version: str) -> tuple[list, list[str]]:
    from insight.retrieval import CaseIndex

    index = CaseIndex.open(folder)
    if index.model_version != model_version:
        raise InputError(f"the index {folder} holds embeddings of model {index.model_version}, not {model_version}")
    if len(index) == 0:
        raise InputError(f"the index {folder} is empty")
    return [index.vector(case_id) for case_id in index.case_ids], index.case_ids


def run(args: argparse.Namespace) -> int:
    from insight.cli.predict_cmd import DEFAULT_MODEL
    from insight.embeddings import CaseEmbedder
    from insight.qa.ood import calibrate_ood, evaluate_ood, ood_sidecar_path

    model = args.model or DEFAULT_MODEL
    embedder = CaseEmbedder.from_checkpoint(model, args.device)
    if args.reference_index is not None:
        reference, reference_names = _from_index(args.reference_index, embedder.model_version)
    else:
        reference, reference_names = _embed_all(embedder, args.reference, "reference")
    held_out, held_out_names = _embed_all(embedder, args.held_out, "held-out")
    calibration = calibrate_ood(reference, reference_names, held_out, held_out_names, embedder.model_version,
                                args.target_false_alarm_rate, args.k, args.method)
    if args.evaluate_in or args.evaluate_out:
        in_vectors, in_names = _embed_all(embedder, args.evaluate_in, "in-distribution evaluation")
        out_vectors, out_names = _embed_all(embedder, args.evaluate_out, "out-of-distribution evaluation")
        evaluate_ood(calibration, in_vectors, in_names, out_vectors, out_names)
    out = args.out or ood_sidecar_path(model)
    calibration.save(out)
    summary = {key: value for key, value in calibration.to_json().items() if key != "reference"}
    summary["reference"] = {"n": len(reference_names)}
    summary["sidecar"] = str(out)
    json.dump(summary, sys.stdout, indent=2)
    sys.stdout.write("\n")
    logger.info("OOD calibration for model %s written to %s (threshold %.4f)", calibration.model_version, out,
                calibration.threshold)
    return 0
