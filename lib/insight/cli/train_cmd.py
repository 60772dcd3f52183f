"""``insight train``: train INSIGHT from images and scan-level labels only (never masks)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from insight.config import (ENCODER_NAMES, FIXED_FEATURE_STRIDES, SEARCH_REGION_NAMES, InsightConfig, ModelConfig,
                            PreprocessConfig, TrainConfig)
from insight.errors import InputError

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train", help="train INSIGHT from scan-level labels",
        description="Train INSIGHT on a folder of volumes with labels.csv (columns image, pe). "
                    "Masks are never read. Writes best.pt, last.pt and metrics.json to --out.")
    parser.add_argument("--train", required=True, type=Path, nargs="+",
                        help="training folder(s), each with volumes + labels.csv")
    parser.add_argument("--val", type=Path, help="validation folder (volumes + labels.csv); AUROC per epoch")
    parser.add_argument("--out", required=True, type=Path, help="output folder for checkpoints and metrics")
    parser.add_argument("--epochs", type=int, default=TrainConfig.epochs)
    parser.add_argument("--lr", type=float, default=TrainConfig.learning_rate, help="AdamW learning rate")
    parser.add_argument("--weak-lr", type=float, default=None,
                        help="peak learning rate of the weak-label epochs that follow --seed-epochs (default: --lr)")
    parser.add_argument("--seed", type=int, default=TrainConfig.seed)
    parser.add_argument("--encoder", choices=ENCODER_NAMES, default=ModelConfig.encoder)
    parser.add_argument("--encoder-channels", type=int, nargs="+", default=list(ModelConfig.encoder_channels),
                        help="small_cnn stage widths")
    parser.add_argument("--encoder-stride", type=int, choices=FIXED_FEATURE_STRIDES, default=ModelConfig.encoder_stride,
                        help="feature-map stride: 4 or 8 for every encoder, 1 or 2 too for filter_bank and vessel_filters")
    parser.add_argument("--encoder-weights", type=Path, help="local weights file for the encoder (optional)")
    parser.add_argument("--reduce-channels", type=int, default=ModelConfig.reduce_channels)
    parser.add_argument("--head-widths", type=int, nargs=3, default=list(ModelConfig.head_widths))
    parser.add_argument("--context-depth", type=int, default=ModelConfig.context_depth,
                        help="slices the context module sees (1 = per slice as in the paper)")
    parser.add_argument("--no-context", action="store_true", help="detection module alone (paper's Baseline)")
    parser.add_argument("--pooling", choices=("smoothmax", "max"), default=ModelConfig.pooling)
    parser.add_argument("--smoothmax-alpha", type=float, default=ModelConfig.smoothmax_alpha,
                        help="SmoothMax sharpness a (paper: 8); with ~1e5 heatmap locations per scan a=8 "
                             "pools close to the mean, a larger a lets a few locations decide")
    parser.add_argument("--no-augment", action="store_true")
    parser.add_argument("--slice-stride", type=int, default=TrainConfig.slice_stride,
                        help="train on every k-th slice (random offset per step); needs --context-depth 1")
    parser.add_argument("--negative-weight", type=float, default=TrainConfig.negative_weight,
                        help="weight of the hard-negative instance term (every location of a 'no PE' scan is a "
                             "known negative); 0 = the paper's loss alone")
    parser.add_argument("--negative-topk", type=float, default=TrainConfig.negative_topk_fraction,
                        help="fraction of a negative scan's hottest locations the term pushes down")
    parser.add_argument("--scans-per-step", type=int, default=TrainConfig.scans_per_step,
                        help="scans whose losses are averaged per optimizer step")
    parser.add_argument("--no-feature-cache", action="store_true",
                        help="filter_bank / vessel_filters: compute the fixed features every step from the augmented "
                             "scan instead of once per scan (slower; noise and intensity augmentation then reach them)")
    parser.add_argument("--search-region", choices=SEARCH_REGION_NAMES, default=PreprocessConfig.search_region,
                        help="where heatmap mass may lie (stored in the checkpoint, used at inference too); "
                             "filling_defects = soft tissue next to contrast-enhanced blood")
    parser.add_argument("--seed-instances", type=int, default=TrainConfig.seed_instances,
                        help="anomaly seeding: keep the M most anomalous search-region locations of every training "
                             "scan (under a Gaussian mixture fitted to the no-PE scans) as instances labelled with "
                             "their scan's label, and train on them first; 0 = off. Needs filter_bank or vessel_filters")
    parser.add_argument("--seed-epochs", type=int, default=TrainConfig.seed_epochs,
                        help="instance-training epochs before the --epochs weak-label epochs (which may then be 0)")
    parser.add_argument("--seed-components", type=int, default=TrainConfig.seed_components,
                        help="Gaussian mixture components of the normal appearance model")
    parser.add_argument("--seed-reference", type=int, default=TrainConfig.seed_reference_per_scan,
                        help="locations sampled from each no-PE training scan to fit the mixture")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    parser.add_argument("--resume", type=Path, help="continue from a last.pt written by an earlier run")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (logs only)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from insight.devices import resolve_device  # heavy imports (torch) only when the command runs
    from insight.training import InsightTrainer, prepare_cases, read_label_table

    try:
        model_config = ModelConfig(
            encoder=args.encoder, encoder_channels=tuple(args.encoder_channels), encoder_stride=args.encoder_stride,
            encoder_weights=str(args.encoder_weights) if args.encoder_weights else None,
            reduce_channels=args.reduce_channels, head_widths=tuple(args.head_widths),
            use_context=not args.no_context, context_depth=args.context_depth, pooling=args.pooling,
            smoothmax_alpha=args.smoothmax_alpha)
        train_config = TrainConfig(epochs=args.epochs, learning_rate=args.lr, weak_learning_rate=args.weak_lr,
                                   seed=args.seed,
                                   augment=not args.no_augment, num_threads=args.threads,
                                   slice_stride=args.slice_stride, negative_weight=args.negative_weight,
                                   negative_topk_fraction=args.negative_topk, scans_per_step=args.scans_per_step,
                                   cache_fixed_features=not args.no_feature_cache,
                                   seed_instances=args.seed_instances, seed_epochs=args.seed_epochs,
                                   seed_components=args.seed_components, seed_reference_per_scan=args.seed_reference)
        preprocess_config = PreprocessConfig(search_region=args.search_region)
    except ValueError as err:
        raise InputError(str(err)) from err
    config = InsightConfig(preprocess=preprocess_config, model=model_config)
    device = resolve_device(args.device)
    progress = not args.no_progress
    labeled = [case for folder in args.train for case in read_label_table(folder)]
    train_cases = prepare_cases(labeled, config.preprocess, progress, "preparing train")
    val_cases = prepare_cases(read_label_table(args.val), config.preprocess, progress, "preparing val") if args.val else None
    logger.info("training on %d scans (%d PE), validating on %d, device %s", len(train_cases),
                sum(c.label for c in train_cases), len(val_cases or []), device)
    trainer = InsightTrainer(config, train_config, args.out, device)
    if args.resume:
        trainer.resume(args.resume)
    summary = trainer.fit(train_cases, val_cases, progress=progress)
    logger.info("done: %s (best %s, model version %s)", args.out, summary.best_checkpoint, summary.model_version)
    return 0
