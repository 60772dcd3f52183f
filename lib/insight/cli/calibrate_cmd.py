"""``insight calibrate``: Platt-scale a model's p(PE) on labelled scans and write the calibrated checkpoint."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from insight.errors import InputError

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "calibrate", help="calibrate a model's p(PE) on labelled scans (Platt scaling)",
        description="Fit p' = sigmoid(a * logit(p) + b) on folders of volumes with labels.csv (image, pe), fold it "
                    "into the detection module's last layer, and write the calibrated checkpoint: heatmap, findings "
                    "and p(PE) then all use the calibrated scale. Max-pooling models only (as anomaly-seeded "
                    "ones); the command checks that the ranking of the scans is unchanged. Use scans the model was "
                    "not trained on (its validation set, or a site's own labelled studies). Masks are never read.")
    parser.add_argument("--model", required=True, type=Path, help="checkpoint to calibrate")
    parser.add_argument("--labelled", required=True, type=Path, nargs="+",
                        help="folders of volumes with labels.csv (columns image, pe)")
    parser.add_argument("--out", required=True, type=Path, help="the calibrated checkpoint to write (not --model)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (logs only)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from insight.devices import resolve_device
    from insight.io.atomic import write_json_atomic
    from insight.metrics.classification import auroc, expected_calibration_error
    from insight.models.checkpoint import insight_model_version, load_checkpoint, save_checkpoint
    from insight.training import prepare_cases, read_label_table
    from insight.training.calibration import fit_platt_scaling, fold_into_detection
    from insight.training.trainer import scan_probabilities

    if args.out.resolve() == args.model.resolve():
        raise InputError("--out must differ from --model: the uncalibrated checkpoint is kept")
    device = resolve_device(args.device)
    loaded = load_checkpoint(args.model, device, with_training_state=True)
    if loaded.config.model.pooling != "max":
        raise InputError(f"{args.model} pools with {loaded.config.model.pooling!r}: calibration is folded into the "
                         "detection module, which keeps the scan ranking only under max pooling")
    labelled = [case for folder in args.labelled for case in read_label_table(folder)]
    cases = prepare_cases(labelled, loaded.config.preprocess, not args.no_progress, "preparing")
    labels = np.asarray([c.label for c in cases])
    context = loaded.config.preprocess.slice_context
    before = scan_probabilities(loaded.model, cases, context, device)
    scaling = fit_platt_scaling(before, labels)
    fold_into_detection(loaded.model, scaling)
    after = scan_probabilities(loaded.model, cases, context, device)

    def summary(p: np.ndarray) -> dict:
        return {"auroc": auroc(labels, p), "expected_calibration_error": expected_calibration_error(labels, p),
                "mean_p_pe": float(p[labels == 1].mean()), "mean_p_no_pe": float(p[labels == 0].mean())}

    measured = {"before": summary(before), "after": summary(after)}
    if abs(measured["after"]["auroc"] - measured["before"]["auroc"]) > 1e-6:
        raise InputError(f"calibrating {args.model} would change its ranking of these scans (AUROC "
                         f"{measured['before']['auroc']:.3f} -> {measured['after']['auroc']:.3f}): its context module "
                         "is not neutral enough for a folded calibration; nothing written")
    report = {"calibrated_from": loaded.model_version, "slope": scaling.slope, "intercept": scaling.intercept,
              "scans": len(cases), "pe_scans": int(labels.sum()), "folders": [str(f) for f in args.labelled],
              **measured}
    version = insight_model_version(loaded.model)
    training = {k: v for k, v in loaded.training.items() if k != "optimizer"}
    training["calibration"] = report
    save_checkpoint(args.out, loaded.model, loaded.config, version, training)
    write_json_atomic(args.out.with_suffix(".calibration.json"), {"model_version": version, **report})
    logger.info("calibrated %s -> %s (%s): slope %.3f, intercept %.3f; on %d scans mean p(PE) %.3f/%.3f -> %.3f/%.3f "
                "(PE/no PE), ECE %.3f -> %.3f", args.model, args.out, version, scaling.slope, scaling.intercept,
                len(cases), report["before"]["mean_p_pe"], report["before"]["mean_p_no_pe"],
                report["after"]["mean_p_pe"], report["after"]["mean_p_no_pe"],
                report["before"]["expected_calibration_error"], report["after"]["expected_calibration_error"])
    json.dump({"model_version": version, **report}, sys.stdout, indent=1)
    sys.stdout.write("\n")
    return 0
