"""How much segmentation training does the campaign need to learn from *truth* masks on a CPU?

Trains the product's segmentation trainer on the truth clot masks of every pool case (the campaign's
all-corrected upper bound) and scores it on a held-out phantom split with the campaign's own scoring
(:func:`insight.campaign.training.evaluate_on`). Results on synthetic phantoms.

Usage::

    python budget.py OUT.json '{"grid": 3, "patch": 32, "channels": [8, 16, 32], "res": 0,
                                "train": {"epochs": 5, "learning_rate": 0.003}}' [--pool-seed 4100 --pool-n 16
                                --val-seed 4300 --val-n 6]

The prepared pairs are cached per (split, grid) in ``--cache`` so variants share the phantom work.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import tempfile
import time
from pathlib import Path

import torch

from insight.campaign.config import SplitSpec
from insight.campaign.data import _as_image, generate_split
from insight.campaign.training import evaluate_on, train_round
from insight.io import write_image
from insight.phantom import PhantomConfig
from insight.segmentation.config import SEG_PREPROCESS, SegmentationConfig, SegNetworkConfig, SegTrainConfig
from insight.segmentation.dataset import LabeledVolume, prepare_pair

logger = logging.getLogger("budget")


def prepared_pool(split: SplitSpec, phantom: PhantomConfig, grid: float, cache: Path, train: SegTrainConfig):
    path = cache / f"pool_{split.seed}_{split.n}_{grid}.pt"
    if path.exists():
        return torch.load(path, weights_only=False)
    cases = generate_split(split, phantom)
    preprocess = dataclasses.replace(SEG_PREPROCESS, target_spacing_xyz=(grid, grid, grid))
    pairs = []
    with tempfile.TemporaryDirectory() as work:
        for case in cases:
            image_path = write_image(case.image, Path(work) / f"{case.name}.nii.gz")
            label_path = write_image(_as_image(case.truth, case.image), Path(work) / f"{case.name}_label.nii.gz")
            pairs.append(prepare_pair(LabeledVolume(case.name, image_path, label_path, "final",
                                                    train.weight_for("final")), preprocess))
    cache.mkdir(parents=True, exist_ok=True)
    torch.save(pairs, path)
    return pairs


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("variant", help="JSON: grid (mm), patch (voxels), channels, res, train {SegTrainConfig}")
    parser.add_argument("--pool-seed", type=int, default=4100)
    parser.add_argument("--pool-n", type=int, default=16)
    parser.add_argument("--val-seed", type=int, default=4300)
    parser.add_argument("--val-n", type=int, default=6)
    parser.add_argument("--pe-fraction", type=float, default=0.6)
    parser.add_argument("--cache", default="/work/scratch/s10/cache")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    variant = json.loads(args.variant)
    grid = float(variant.get("grid", 2.0))
    patch = int(variant.get("patch", 64))
    train = SegTrainConfig(**variant.get("train", {}))
    config = SegmentationConfig(
        preprocess=dataclasses.replace(SEG_PREPROCESS, target_spacing_xyz=(grid, grid, grid)),
        network=SegNetworkConfig(channels=tuple(variant.get("channels", (8, 16, 32, 64))),
                                 num_res_units=int(variant.get("res", 1))),
        patch_size_zyx=(patch, patch, patch))
    phantom = PhantomConfig(pe_fraction=args.pe_fraction)
    pool = prepared_pool(SplitSpec(args.pool_seed, args.pool_n), phantom, grid, Path(args.cache), train)
    val = generate_split(SplitSpec(args.val_seed, args.val_n), phantom)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as work:
        predictor, info = train_round(pool, config, train, Path(work) / "run", torch.device("cpu"))
    metrics = evaluate_on(predictor, val)
    result = {"variant": variant, "train": dataclasses.asdict(train), "training": info,
              "seconds": round(time.perf_counter() - started, 1),
              "val": {k: metrics[k] for k in ("mean_dice_positive", "embolus_sensitivity", "false_positives_per_scan",
                                              "scan_auroc", "per_case_dice") if k in metrics}}
    Path(args.out).write_text(json.dumps(result, indent=2))
    logger.info("%s", json.dumps(result["val"]))


if __name__ == "__main__":
    main()
