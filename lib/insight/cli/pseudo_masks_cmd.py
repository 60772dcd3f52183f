"""``insight pseudo-masks``: voxel pseudo-masks from INSIGHT heatmaps (Label up), optionally scored."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from insight.errors import InputError

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    from insight.pseudo_masks.config import THRESHOLD_MODES, PseudoMaskConfig

    defaults = PseudoMaskConfig()
    parser = subparsers.add_parser(
        "pseudo-masks", help="turn INSIGHT heatmaps into voxel pseudo-masks",
        description="For each input (volume file, DICOM series folder, or folder of volumes) write "
                    "<out>/<name>.nii.gz (uint8 label volume on the image grid, 1 = PE) and "
                    "<out>/pseudo_masks.json. Heatmaps come from --heatmaps (<name>_heatmap.nii.gz, as "
                    "'insight predict' writes them) or from --model; with --model, later rounds re-run the "
                    "model on the image with the found regions painted over with blood HU. Scans labelled "
                    "pe=0 (--labels, or labels.csv in an input folder) get empty masks. With --truth, "
                    "masks are scored: Dice, per-embolus sensitivity, false positives per scan.")
    parser.add_argument("inputs", nargs="+", type=Path, metavar="IMAGES_OR_DIR")
    parser.add_argument("--out", required=True, type=Path, help="output folder (not an input folder)")
    parser.add_argument("--model", type=Path, help="INSIGHT checkpoint (needed unless --heatmaps covers every case)")
    parser.add_argument("--heatmaps", type=Path, help="folder of precomputed heatmaps (<name>_heatmap.nii.gz)")
    parser.add_argument("--labels", type=Path,
                        help="CSV with columns image, pe (default: labels.csv in an input folder)")
    parser.add_argument("--no-labels", action="store_true", help="ignore scan-level labels")
    parser.add_argument("--truth", type=Path, help="folder of truth clot masks <name>_clot.nii.gz (phantom truth/)")
    parser.add_argument("--threshold-mode", choices=THRESHOLD_MODES, default=defaults.threshold_mode)
    parser.add_argument("--high", type=float, default=defaults.high_threshold, help="hysteresis high threshold")
    parser.add_argument("--low", type=float, default=defaults.low_threshold, help="hysteresis low threshold")
    parser.add_argument("--min-peak", type=float, default=defaults.min_peak)
    parser.add_argument("--iterations", type=int, default=defaults.max_iterations,
                        help="find / mask / look-again rounds")
    parser.add_argument("--no-vessel-restriction", action="store_true",
                        help="do not restrict masks to voxels near contrast-enhanced blood")
    parser.add_argument("--vessel-dilation-mm", type=float, default=defaults.vessel_dilation_mm)
    parser.add_argument("--min-volume-mm3", type=float, default=defaults.min_region_volume_mm3,
                        help="regions at or below this volume are removed")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (with --model)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from insight.pseudo_masks import PseudoMaskConfig, PseudoMaskGenerator, predictor_heatmap_source
    from insight.pseudo_masks.batch import expand_inputs, read_scan_labels, write_pseudo_masks

    try:
        config = PseudoMaskConfig(threshold_mode=args.threshold_mode, high_threshold=args.high,
                                  low_threshold=args.low, min_peak=args.min_peak, max_iterations=args.iterations,
                                  restrict_to_vessels=not args.no_vessel_restriction,
                                  vessel_dilation_mm=args.vessel_dilation_mm,
                                  min_region_volume_mm3=args.min_volume_mm3)
    except ValueError as err:
        raise InputError(str(err)) from err
    if args.model is None and args.heatmaps is None:
        raise InputError("give --model (an INSIGHT checkpoint) or --heatmaps (a folder of heatmaps), or both")
    if args.heatmaps is not None and not args.heatmaps.is_dir():
        raise InputError(f"--heatmaps folder not found: {args.heatmaps}")
    if args.truth is not None and not args.truth.is_dir():
        raise InputError(f"--truth folder not found: {args.truth}")
    inputs = expand_inputs(args.inputs)
    scan_labels = None if args.no_labels else _scan_labels(args, read_scan_labels)

    extra = {}
    heatmap_source = None
    if args.model is not None:
        from insight.inference import InsightPredictor  # heavy import

        predictor = InsightPredictor.from_checkpoint(args.model, args.device)
        heatmap_source = predictor_heatmap_source(predictor)
        extra = {"model": str(args.model), "model_version": predictor.model_version}
    generator = PseudoMaskGenerator(config, heatmap_source)
    summary = write_pseudo_masks(inputs, args.out, generator, args.heatmaps, args.truth, scan_labels, extra)
    metrics = summary["metrics"]
    if metrics:
        logger.info("%d scans: mean Dice (PE scans) %s, per-embolus sensitivity %s (%d/%d), false positives per "
                    "scan %s", metrics["n_scans"], metrics["mean_dice_positive"], metrics["embolus_sensitivity"],
                    metrics["n_hit"], metrics["n_emboli"], metrics["false_positives_per_scan"])
    logger.info("wrote %d pseudo-mask(s) and pseudo_masks.json to %s", summary["n_cases"], args.out)
    if summary["failures"]:
        logger.error("%d of %d inputs failed", len(summary["failures"]), len(inputs))
        return 1
    return 0


def _scan_labels(args: argparse.Namespace, read_scan_labels) -> dict[str, int] | None:
    """The weak labels to use: --labels, else labels.csv of the (single) input folder that has one."""
    if args.labels is not None:
        return read_scan_labels(args.labels)
    tables = [p / "labels.csv" for p in args.inputs if p.is_dir() and (p / "labels.csv").is_file()]
    if not tables:
        return None
    labels: dict[str, int] = {}
    for table in tables:
        logger.info("using scan-level labels from %s (pe=0 scans get empty masks; --no-labels to ignore)", table)
        labels.update(read_scan_labels(table))
    return labels
