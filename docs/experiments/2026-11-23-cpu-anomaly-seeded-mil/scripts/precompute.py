"""Per-voxel fixed 3D features (sup.features) of loose candidate voxels, one npz per scan (clot flags kept for reporting only)."""
import sys, numpy as np, time, multiprocessing as mp, os
from pathlib import Path
sys.path.insert(0, "/work/scratch/s4")
OUT = Path("/work/scratch/s5/vox")
def work(args):
    root, cases = args
    import torch; torch.set_num_threads(1)
    import SimpleITK as sitk
    from sup import features, cfg
    from insight.preprocessing import prepare_volume
    from insight.io.image_io import read_image
    for c in cases:
        dst = OUT / Path(root).name / f"{c.name}.npz"
        if dst.exists(): continue
        mi = prepare_volume(read_image(c.image_path), cfg)
        truth = sitk.ReadImage(str(Path(root) / "truth" / f"{c.name}_clot.nii.gz"))
        tm = sitk.Resample(sitk.Cast(truth, sitk.sitkFloat32), mi.grid, sitk.Transform(), sitk.sitkLinear, 0.0)
        clot = sitk.GetArrayFromImage(tm) > 0.3
        names, F = features(mi.windowed.astype(np.float32))
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
