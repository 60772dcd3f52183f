"""Supervised upper bound with rich fixed 3D features on the model grid (uses clot masks; diagnostic only)."""
import sys, numpy as np, SimpleITK as sitk, scipy.ndimage as nd, pickle, time
from pathlib import Path
from skimage.feature import hessian_matrix, hessian_matrix_eigvals
from insight.config import PreprocessConfig
from insight.preprocessing import prepare_volume
from insight.io.image_io import read_image
from insight.training import read_label_table

cfg = PreprocessConfig()
lo, hi = cfg.hu_window

def features(w):
    hu = w * (hi - lo) + lo
    c = np.clip(hu, -100, 450).astype(np.float32)
    f = {"hu": hu, "hu_s": nd.gaussian_filter(hu, 0.7)}
    for s in (1.0, 1.6, 2.5):
        H = hessian_matrix(c, sigma=s, order="rc", use_gaussian_derivatives=False)
        ev = hessian_matrix_eigvals(H)
        for i in range(3):
            f[f"eig{s}_{i}"] = ev[i] * s * s
    for r in (1, 2, 3):
        fp = np.ones((3, 2 * r + 1, 2 * r + 1), bool)
        f[f"bth{r}"] = nd.grey_closing(c, footprint=fp) - c
        f[f"max{r}"] = nd.maximum_filter(c, footprint=fp)
    f["min2"] = nd.minimum_filter(hu, size=(3, 5, 5))
    con = (hu > 200).astype(np.float32); lung = (hu < -400).astype(np.float32)
    for s in (5, 9):
        f[f"con{s}"] = nd.uniform_filter(con, size=(3, s, s))
        f[f"lung{s}"] = nd.uniform_filter(lung, size=(3, s, s))
    names = sorted(f)
    return names, np.stack([f[k].astype(np.float32) for k in names], -1)

def load(root, n=None):
    out = []
    for c in read_label_table(Path(root))[:n]:
        t0 = time.time()
        mi = prepare_volume(read_image(c.image_path), cfg)
        truth = sitk.ReadImage(str(Path(root) / "truth" / f"{c.name}_clot.nii.gz"))
        tm = sitk.Resample(sitk.Cast(truth, sitk.sitkFloat32), mi.grid, sitk.Transform(), sitk.sitkLinear, 0.0)
        clot = sitk.GetArrayFromImage(tm) > 0.3
        names, F = features(mi.windowed.astype(np.float32))
        out.append(dict(name=c.name, y=c.label, F=F, clot=clot, region=mi.region))
        print(c.name, c.label, F.shape, int(clot.sum()), f"{time.time()-t0:.1f}s", flush=True)
    return names, out

if __name__ == "__main__":
    names, data = load(sys.argv[1], int(sys.argv[3]) if len(sys.argv) > 3 else None)
    pickle.dump((names, data), open(sys.argv[2], "wb"), protocol=4)
