"""Weak-label training sweep: generate phantoms, prepare them once, train variants side by side.

Made for a one-GPU machine with 16 cores (an H100 here); it also runs on CPU (DEV=cpu, PROCS=2),
slowly. Environment: OUT (unused but required by the device tool), WORK (default /tmp/work),
DEV (cuda | cpu), PROCS (processes for generation/preparation), TRAIN_SEEDS (48-scan training
sets, default 10 = 480 scans), TRAIN_SECONDS (wall-clock budget; variants still running are stopped),
PHANTOM_ARGS (extra `insight phantom` arguments, e.g. "--shape 256 256 160 --spacing 1.25 1.25 1.5"),
PREPROCESS_JSON (PreprocessConfig fields for the prepared tensors, e.g. '{"target_spacing_xyz": [1.25, 1.25, 1.5]}';
a variant's model grid must match it).

    python scripts/experiments/weak_label_sweep.py data                 # phantoms + prepared tensors
    python scripts/experiments/weak_label_sweep.py train VARIANTS.json  # one process per variant

A variant is {"model": ModelConfig fields, "train": TrainConfig fields, "region": "chest"|"vessels",
"oracle": true for the pixel-supervised upper bound (reads the clot masks: never a product model)}.
Results of the 2026-11-23 runs: docs/experiments/2026-11-23-h100-weak-label-sweep/.
"""
import dataclasses, json, os, sys, time, subprocess, multiprocessing as mp, logging
from pathlib import Path
import torch

WORK = Path(os.environ.get("WORK", "/tmp/work"))
DEV = os.environ.get("DEV", "cuda")
OUT = Path(os.environ["OUT"])
DEADLINE = time.time() + float(os.environ.get("TRAIN_SECONDS", "330"))


def gen(args):
    n, seed, out = args
    from insight.cli import main
    main(["phantom", "--n", str(n), "--seed", str(seed), "--out", str(out), "--no-progress",
          *os.environ.get("PHANTOM_ARGS", "").split()])


def preprocess_config():
    from insight.config import PreprocessConfig
    return PreprocessConfig(**json.loads(os.environ.get("PREPROCESS_JSON", "{}")))


def prep_one(args):
    from insight.io.image_io import read_image
    from insight.preprocessing import prepare_volume
    import numpy as np
    torch.set_num_threads(1)
    import SimpleITK as sitk
    name, path, label = args
    mi = prepare_volume(read_image(path), preprocess_config())
    clot_path = Path(path).parent / "truth" / f"{name}_clot.nii.gz"
    clot = np.zeros(mi.windowed.shape, np.uint8)
    if clot_path.exists():
        m = sitk.Resample(sitk.Cast(sitk.ReadImage(str(clot_path)), sitk.sitkFloat32), mi.grid, sitk.Transform(), sitk.sitkLinear, 0.0)
        clot = (sitk.GetArrayFromImage(m) > 0.25).astype(np.uint8)
    from insight.preprocessing.search_region import vessel_search_region
    vessels = vessel_search_region(sitk.GetArrayViewFromImage(mi.grid), mi.grid.GetSpacing()[::-1], 5.0)
    return (name, torch.from_numpy(np.ascontiguousarray(mi.windowed)).to(torch.float16), label,
            torch.from_numpy(np.ascontiguousarray(mi.region)), torch.from_numpy(clot), torch.from_numpy(vessels))


def prepare(folders, tag):
    from insight.training.dataset import read_label_table
    cases = [c for f in folders for c in read_label_table(f)]
    with mp.Pool(int(os.environ.get("PROCS", "16"))) as pool:
        got = pool.map(prep_one, [(c.name, c.image_path, c.label) for c in cases])
    torch.save(got, WORK / f"{tag}.pt")
    return len(got)


def train_variant(name, spec):
    logging.basicConfig(level=logging.INFO, format="%(asctime)s " + name + " %(message)s", datefmt="%H:%M:%S")
    from insight.config import InsightConfig, ModelConfig, TrainConfig
    from insight.training.dataset import PreparedCase
    from insight.training import InsightTrainer
    torch.set_num_threads(2)
    ri = 5 if spec.get("region") == "vessels" else 3
    tr = [PreparedCase(*t[:3], t[ri]) for t in torch.load(WORK / "train.pt")]
    va = [PreparedCase(*t[:3], t[ri]) for t in torch.load(WORK / "val.pt")]
    preprocess = dataclasses.replace(preprocess_config(), search_region=spec.get("region", "chest"))
    cfg = InsightConfig(preprocess=preprocess, model=ModelConfig(**spec["model"]))
    tc = TrainConfig(**spec["train"])
    if spec.get("oracle"):
        return oracle(name, cfg, tc, [t[4] for t in torch.load(WORK / "train.pt")], tr, va)
    InsightTrainer(cfg, tc, WORK / "runs" / name, DEV).fit(tr, va, progress=False)


def oracle(name, cfg, tc, clots, tr, va):
    """Pixel-supervised upper bound: same network, clot masks as cell targets (never shipped)."""
    import torch.nn.functional as F, numpy as np
    from insight.models.insight_model import InsightModel
    from insight.preprocessing import slice_stack
    from insight.metrics.classification import auroc
    log = logging.getLogger(name)
    model = InsightModel(cfg.model, 3).to(DEV)
    opt = torch.optim.AdamW(model.parameters(), lr=tc.learning_rate)
    out_dir = WORK / "runs" / name; out_dir.mkdir(parents=True, exist_ok=True)
    hist = []
    for epoch in range(tc.epochs):
        model.train(); t = time.time(); losses = []
        for i in torch.randperm(len(tr)).tolist():
            c = tr[i]
            x = slice_stack(c.volume.float(), 1).to(DEV); r = c.region.to(DEV)
            with torch.autocast(DEV, dtype=torch.bfloat16):
                o = model(x, region=r)
            cells = F.max_pool2d(clots[i][:, None].float().to(DEV), model.stride, ceil_mode=True)
            rc = model.region_cells(r, cells.shape[-2:])
            logit = o.detection_logits.float()
            loss = F.binary_cross_entropy_with_logits(logit[rc], cells[rc], pos_weight=torch.tensor(20.0, device=DEV))
            opt.zero_grad(); loss.backward(); opt.step(); losses.append(float(loss))
        model.eval(); probs = []
        with torch.no_grad():
            for c in va:
                o = model(slice_stack(c.volume.float(), 1).to(DEV), region=c.region.to(DEV))
                # only cells in the search region: cells outside it were never supervised
                rc = model.region_cells(c.region.to(DEV), o.detection_logits.shape[-2:])
                probs.append(float(torch.sigmoid(o.detection_logits.float()[rc]).amax()))
        auc = auroc(np.array([c.label for c in va]), np.array(probs))
        hist.append({"epoch": epoch + 1, "train_loss": float(np.mean(losses)), "val_auroc": auc, "seconds": time.time() - t})
        log.info("epoch %d loss %.4f val_auroc(max det) %.3f", epoch + 1, np.mean(losses), auc)
        (out_dir / "metrics.json").write_text(json.dumps({"history": hist}))
        torch.save(model.state_dict(), out_dir / "oracle_state.pt")


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "data":
        jobs = [(48, s, WORK / f"train_{s}") for s in range(1001, 1001 + int(os.environ.get("TRAIN_SEEDS", "10")))]
        jobs += [(48, 201, WORK / "val"), (40, 301, WORK / "test")]
        # split each job into chunks? phantom seeds are per (seed, i): keep whole jobs, run 12 at once
        t = time.time()
        with mp.Pool(int(os.environ.get("PROCS", "16"))) as pool:
            pool.map(gen, jobs)
        print("generated", time.time() - t, flush=True)
        t = time.time()
        print("train", prepare([j[2] for j in jobs[:-2]], "train"), "val", prepare([WORK / "val"], "val"),
              time.time() - t, flush=True)
    elif mode == "train":
        variants = json.loads(Path(sys.argv[2]).read_text())
        procs = {n: subprocess.Popen([sys.executable, __file__, "one", sys.argv[2], n],
                                     stdout=open(WORK / f"{n}.log", "w"), stderr=subprocess.STDOUT)
                 for n in variants}
        while time.time() < DEADLINE and any(p.poll() is None for p in procs.values()):
            time.sleep(5)
        for n, p in procs.items():
            if p.poll() is None:
                p.terminate()
            p.wait()
            print(n, "rc", p.returncode, flush=True)
    elif mode == "one":
        variants = json.loads(Path(sys.argv[2]).read_text())
        train_variant(sys.argv[3], variants[sys.argv[3]])
