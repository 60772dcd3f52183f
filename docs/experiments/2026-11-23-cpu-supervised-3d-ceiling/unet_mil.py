"""Weak-label MIL with the product's 3D UNet (scan labels only in training; clot masks only for reporting).

    python unet_mil.py prep OUT PHANTOM_DIR [PHANTOM_DIR ...]      # crops on the 2 mm grid -> OUT/<split>/*.npz
    python unet_mil.py train CACHE RUN '{"epochs": 4}' train_a,train_b,train_c val
    python unet_mil.py train CACHE RUN '{"init": "best.pt", "epochs": 0}' train_a val   # score a checkpoint
    python unet_mil.py train CACHE RUN '{"init": "best.pt", "epochs": 1, "shuffle_labels": true}' ...  # control

Each scan is put on the segmentation grid of ``insight.segmentation.SEG_PREPROCESS`` (2 mm, HU window of
the library) and cropped to the bounding box of the library's chest search region (lungs and mediastinum),
padded to a multiple of 8. The UNet (``SegNetworkConfig()`` defaults) gives every voxel a PE logit
(channel 1 minus channel 0). Bag = the scan's voxels inside the chest region. The weak loss is
``mil.weak_bag_loss`` of the session 5 voxel-MIL experiment: the BCE of the pooled logit (top-k mean,
LSE or max) against the scan label, plus, for a no-PE scan, the BCE of its ``hard_m`` highest voxels
against 0. Reported per epoch: scan AUROC (maximum voxel logit in the region), pointing game (the top
voxel lies in a clot, PE scans) and the mean clot-voxel rank. Results on phantoms.
"""
from __future__ import annotations

import csv, json, logging, sys, time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "2026-11-23-cpu-voxel-mil"))
from mil import weak_bag_loss  # noqa: E402  (the one weak loss of the voxel-MIL experiment)

from insight.io.image_io import read_image  # noqa: E402
from insight.metrics import auroc  # noqa: E402
from insight.preprocessing import prepare_volume  # noqa: E402
from insight.segmentation import SEG_PREPROCESS, SegNetworkConfig, build_network  # noqa: E402

logger = logging.getLogger("unet_mil")
DEFAULTS = dict(pool="topk", topk=20, r=5.0, hardneg=1.0, hard_m=200, epochs=4, lr=1e-3, wd=1e-5, seed=0,
                init=None, flip=True, shuffle_labels=False)
PREPROCESS = replace(SEG_PREPROCESS, search_region="chest")


def prep_case(args: tuple[Path, str, int, Path]) -> str:
    """One scan -> ``out``/<name>.npz with image (float16 [Z, Y, X]), region (bool), clot (bool), y."""
    folder, name, label, out = args
    image = read_image(folder / f"{name}.nii.gz")
    prepared = prepare_volume(image, PREPROCESS)
    clot = sitk.Resample(read_image(folder / "truth" / f"{name}_clot.nii.gz"), prepared.grid, sitk.Transform(),
                         sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    clot = sitk.GetArrayFromImage(clot) != 0
    region = prepared.region
    idx = np.argwhere(region)
    lo, hi = idx.min(0), idx.max(0) + 1
    size = ((hi - lo + 7) // 8) * 8
    lo = np.clip(hi - size, 0, None)
    hi = lo + size
    crop = tuple(slice(a, b) for a, b in zip(lo, hi))
    pad = [(0, int(s - (min(b, d) - a))) for s, a, b, d in zip(size, lo, hi, region.shape)]
    arrays = {k: np.pad(v[crop], pad) for k, v in (("image", prepared.windowed.astype(np.float16)),
                                                   ("region", region), ("clot", clot))}
    np.savez(out / f"{name}.npz", y=label, **arrays)
    return f"{name} {arrays['image'].shape} clot-in-region {int((arrays['clot'] & arrays['region']).sum())}/{int(clot.sum())}"


def prep(out: Path, folders: list[Path]) -> None:
    jobs = []
    for folder in folders:
        (out / folder.name).mkdir(parents=True, exist_ok=True)
        with (folder / "labels.csv").open() as handle:
            jobs += [(folder, row["image"], int(row["pe"]), out / folder.name) for row in csv.DictReader(handle)]
    started = time.perf_counter()
    with ProcessPoolExecutor(2) as pool:
        for line in pool.map(prep_case, jobs):
            logger.info(line)
    logger.info("prepared %d scans in %.0f s", len(jobs), time.perf_counter() - started)


def load(cache: Path, tags: str) -> list[dict]:
    bags = []
    for tag in tags.split(","):
        for f in sorted((cache / tag).glob("*.npz")):
            z = np.load(f)
            bags.append(dict(name=f.stem, image=torch.from_numpy(z["image"]), region=torch.from_numpy(z["region"]),
                             clot=torch.from_numpy(z["clot"]), y=int(z["y"])))
    return bags


def voxel_logits(net: torch.nn.Module, image: torch.Tensor) -> torch.Tensor:
    """[Z, Y, X] PE logits (channel 1 - channel 0) of a windowed crop [Z, Y, X]."""
    out = net(image.float()[None, None])
    return out[0, 1] - out[0, 0]


@torch.no_grad()
def evaluate(net: torch.nn.Module, bags: list[dict]) -> dict:
    net.eval()
    ys, scores, hits, ranks = [], [], [], []
    for b in bags:
        logits = voxel_logits(net, b["image"])
        inside = logits[b["region"]]
        ys.append(b["y"])
        scores.append(float(inside.max()))
        if b["y"]:
            clot_in = b["clot"] & b["region"]
            top = torch.zeros_like(b["region"]).view(-1)
            top[int(torch.where(b["region"].view(-1), logits.view(-1), torch.tensor(-1e9)).argmax())] = True
            hits.append(bool((top.view_as(clot_in) & clot_in).any()))
            if clot_in.any():
                best_clot = float(logits[clot_in].max())
                ranks.append(int((inside > best_clot).sum()))
    net.train()
    return {"auroc": round(auroc(ys, scores), 4), "pointing": round(float(np.mean(hits)), 3) if hits else None,
            "median_voxels_above_best_clot": int(np.median(ranks)) if ranks else None}


def train(cache: Path, run: Path, cfg: dict, train_tags: str, eval_tags: str) -> None:
    torch.manual_seed(cfg["seed"])
    net = build_network(SegNetworkConfig())
    if cfg["init"]:
        net.load_state_dict(torch.load(cfg["init"], map_location="cpu", weights_only=False)["state_dict"])
    train_bags = load(cache, train_tags)
    if cfg["shuffle_labels"]:  # control: the same scans and label counts, labels permuted across scans
        labels = np.random.default_rng(cfg["seed"] + 12345).permutation([b["y"] for b in train_bags])
        kept = sum(int(b["y"] == y) for b, y in zip(train_bags, labels))
        for b, y in zip(train_bags, labels):
            b["y"] = int(y)
        logger.info("labels shuffled: %d of %d scans keep their own label", kept, len(train_bags))
    evals = {tag: load(cache, tag) for tag in eval_tags.split(",")}
    run.mkdir(parents=True, exist_ok=True)
    optimizer = torch.optim.AdamW(net.parameters(), lr=cfg["lr"], weight_decay=cfg["wd"])
    history = []
    for epoch in range(cfg["epochs"] + 1):
        record = {"epoch": epoch, **{f"{t} {k}": v for t, bags in evals.items() for k, v in evaluate(net, bags).items()}}
        if epoch == cfg["epochs"]:
            history.append(record)
            logger.info(json.dumps(record))
            break
        started, losses = time.perf_counter(), []
        order = np.random.default_rng(cfg["seed"] * 1000 + epoch).permutation(len(train_bags))
        for i in order:
            b = train_bags[i]
            image, region = b["image"], b["region"]
            if cfg["flip"] and np.random.default_rng(cfg["seed"] * 7 + epoch * 100_000 + i).random() < 0.5:
                image, region = image.flip(-1), region.flip(-1)
            loss = weak_bag_loss(voxel_logits(net, image)[region], b["y"], cfg)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 5.0)
            optimizer.step()
            losses.append(float(loss.detach()))
        record.update(train_loss=round(float(np.mean(losses)), 4), seconds=round(time.perf_counter() - started, 1))
        history.append(record)
        logger.info(json.dumps(record))
        torch.save({"state_dict": net.state_dict(), "cfg": cfg, "history": history}, run / "last.pt")
    (run / "history.json").write_text(json.dumps({"cfg": cfg, "history": history}, indent=1))


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    torch.set_num_threads(2)
    if argv[0] == "prep":
        prep(Path(argv[1]), [Path(p) for p in argv[2:]])
    else:
        train(Path(argv[1]), Path(argv[2]), {**DEFAULTS, **json.loads(argv[3])}, argv[4], argv[5])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
