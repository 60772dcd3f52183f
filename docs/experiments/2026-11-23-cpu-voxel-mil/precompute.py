"""python precompute.py DATA_ROOT...  (VOX=folder for the output, default ./vox; 2 processes;
SPACING=x,y,z sets the model grid in mm, default the library's PreprocessConfig)

Per-voxel fixed 3D features (sup.features) of loose candidate voxels, one npz per scan (clot flags kept for reporting only)."""
import sys, numpy as np, time, multiprocessing as mp, os
from pathlib import Path
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "2026-11-23-cpu-vessel-filters"))  # sup.features: the 22 maps
OUT = Path(os.environ.get("VOX", "vox"))  # one folder per data root, one npz per scan
def work(args):
    root, cases = args
    import torch; torch.set_num_threads(1)
    from sup import case_arrays, cfg
    from insight.config import PreprocessConfig
    if os.environ.get("SPACING"):
        cfg = PreprocessConfig(target_spacing_xyz=tuple(float(v) for v in os.environ["SPACING"].split(",")))
    for c in cases:
        dst = OUT / Path(root).name / f"{c.name}.npz"
        if dst.exists(): continue
        mi, clot, names, F = case_arrays(root, c, cfg)
        ix = {n: i for i, n in enumerate(names)}
        hs, con9 = F[..., ix["hu_s"]], F[..., ix["con9"]]
        cand = mi.region & (hs > -200) & (hs < 300) & (con9 >= 0.05)
        idx = np.argwhere(cand).astype(np.int16)
        tmp = dst.with_suffix(".tmp.npz")
        np.savez(tmp, F=F[cand].astype(np.float16), clot=clot[cand], idx=idx, y=c.label, shape=np.array(cand.shape), nclot=int(clot.sum()), names=np.array(names))
        os.replace(tmp, dst)
if __name__ == "__main__":
    from insight.training import read_label_table
    jobs = []
    for root in sys.argv[1:]:
        (OUT / Path(root).name).mkdir(parents=True, exist_ok=True)
        cs = read_label_table(Path(root))
        jobs += [(root, cs[0::2]), (root, cs[1::2])]
    t0 = time.time()
    with mp.get_context("fork").Pool(2) as pool:
        pool.map(work, jobs, chunksize=1)
    print("done", time.time() - t0, flush=True)
