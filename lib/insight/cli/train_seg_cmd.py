"""``insight train-seg``: train the PE segmentation UNet on final labels and pseudo-masks (1 or N processes)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from insight.errors import InputError

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    from insight.segmentation.config import SegmentationConfig, SegNetworkConfig, SegTrainConfig

    net, train, cfg = SegNetworkConfig(), SegTrainConfig(), SegmentationConfig()
    parser = subparsers.add_parser(
        "train-seg", help="train the PE segmentation network on masks (final labels outweigh pseudo-masks)",
        description="Train a MONAI 3D UNet on volumes in --images with masks named like them (<name>.nii.gz) in "
                    "--final-labels (clinician-corrected, weight --final-weight) and/or --pseudo-labels (from "
                    "'insight pseudo-masks'). A case with both uses its final label. Writes last.pt, best.pt and "
                    "metrics.json to --out. Several processes (DDP): --nproc N here, or launch under torchrun.")
    parser.add_argument("--images", required=True, type=Path, help="folder of training volumes")
    parser.add_argument("--final-labels", type=Path, help="folder of clinician-corrected masks")
    parser.add_argument("--pseudo-labels", type=Path, help="folder of pseudo-masks")
    parser.add_argument("--val-images", type=Path, help="folder of validation volumes (Dice per epoch)")
    parser.add_argument("--val-labels", type=Path, help="folder of validation masks named like the volumes")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--epochs", type=int, default=train.epochs)
    parser.add_argument("--lr", type=float, default=train.learning_rate)
    parser.add_argument("--seed", type=int, default=train.seed)
    parser.add_argument("--final-weight", type=float, default=train.final_weight,
                        help="loss weight of a final label relative to a pseudo-mask (weight 1)")
    parser.add_argument("--channels", type=int, nargs="+", default=list(net.channels), help="UNet widths per level")
    parser.add_argument("--res-units", type=int, default=net.num_res_units)
    parser.add_argument("--patch", type=int, nargs=3, metavar=("Z", "Y", "X"), default=list(cfg.patch_size_zyx),
                        help="training patch / inference window in voxels of the segmentation grid")
    parser.add_argument("--spacing", type=float, nargs=3, metavar=("X", "Y", "Z"),
                        default=list(cfg.preprocess.target_spacing_xyz), help="segmentation grid spacing, mm")
    parser.add_argument("--samples-per-case", type=int, default=train.samples_per_case)
    parser.add_argument("--cases-per-batch", type=int, default=train.cases_per_batch)
    parser.add_argument("--no-augment", action="store_true")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--nproc", type=int, default=1, help="training processes (DDP; gloo on CPU, nccl on CUDA)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads per process (0 = default)")
    parser.add_argument("--resume", type=Path, help="continue from a last.pt of an earlier run")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import dataclasses

    from insight.segmentation.config import SegmentationConfig, SegNetworkConfig, SegTrainConfig
    from insight.segmentation.dataset import collect_label_pairs
    from insight.segmentation.distributed import DistributedContext
    from insight.segmentation.job import SegTrainingJob, run_training

    if args.final_labels is None and args.pseudo_labels is None:
        raise InputError("give --final-labels and/or --pseudo-labels (folders of masks named like the images)")
    if (args.val_images is None) != (args.val_labels is None):
        raise InputError("--val-images and --val-labels go together")
    try:
        base = SegmentationConfig()
        config = SegmentationConfig(
            preprocess=dataclasses.replace(base.preprocess, target_spacing_xyz=tuple(args.spacing)),
            network=SegNetworkConfig(channels=tuple(args.channels), num_res_units=args.res_units),
            patch_size_zyx=tuple(args.patch))
        train_config = SegTrainConfig(epochs=args.epochs, learning_rate=args.lr, seed=args.seed,
                                      final_weight=args.final_weight, samples_per_case=args.samples_per_case,
                                      cases_per_batch=args.cases_per_batch, augment=not args.no_augment,
                                      num_threads=args.threads)
    except ValueError as err:
        raise InputError(str(err)) from err
    cases = collect_label_pairs(args.images, train_config, pseudo_dir=args.pseudo_labels, final_dir=args.final_labels)
    val_cases = (collect_label_pairs(args.val_images, train_config, final_dir=args.val_labels)
                 if args.val_images else None)
    job = SegTrainingJob(config, train_config, args.out, args.device, args.resume)
    summary = run_training(job, cases, val_cases, nproc=args.nproc)
    if DistributedContext.from_env().is_main:  # under torchrun every rank returns here
        logger.info("done: %s (model version %s, %d iterations, %.3f s/iteration)", args.out,
                    summary.model_version, summary.iterations, summary.seconds_per_iteration)
    return 0
