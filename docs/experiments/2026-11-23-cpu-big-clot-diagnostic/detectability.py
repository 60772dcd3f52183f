"""Diagnostic: is clot detectable on the model grid by simple fixed features? (uses truth masks)"""
import sys, numpy as np, SimpleITK as sitk, torch, torch.nn.functional as F
from pathlib import Path
from insight.config import PreprocessConfig
from insight.preprocessing import prepare_volume
from insight.io.image_io import read_image
from insight.training import read_label_table
from sklearn.metrics import roc_auc_score
torch.set_num_threads(2)
root = Path(sys.argv[1]); n = int(sys.argv[2]); region_kind = sys.argv[3] if len(sys.argv) > 3 else "chest"
spacing = tuple(float(x) for x in sys.argv[4].split(",")) if len(sys.argv) > 4 else (2.5, 2.5, 3.0)
cfg = PreprocessConfig(search_region=region_kind, target_spacing_xyz=spacing)
def dil(x, r):
    s = 2*r+1
    return F.max_pool2d(F.pad(x, (r,)*4, mode="replicate"), s, stride=1)
def ero(x, r): return -dil(-x, r)
def feats(vol):
    x = torch.from_numpy(vol)[:, None].float()
    out = {"intensity_inv": 1 - x}
    for r in (1, 2, 3):
        out[f"bth{r}"] = ero(dil(x, r), r) - x
    clotness = torch.exp(-((x - 0.44) / 0.08) ** 2)
    for r in (1, 2, 3):
        out[f"clot_bth{r}"] = out[f"bth{r}"] * clotness
    # enclosed by contrast: min over the ring max of neighbours > 0.7
    out["clot_in_bright"] = clotness * (dil(x, 2) > 0.7).float()
    hu = x * 700 - 250
    c = ((hu - 150) / 150).clamp(0, 1)
    soft = torch.exp(-((hu - 60) / 70) ** 2)
    for r in (1, 2, 3):
        tc = ero(dil(c, r), r) - c
        out[f"ctop{r}"] = tc
        out[f"ctop{r}_soft"] = tc * soft
    # 3D: closing over z too (volume as [1,1,Z,Y,X])
    c3 = c[:, 0][None, None]
    for r in (1, 2):
        d3 = F.max_pool3d(F.pad(c3, (r, r, r, r, 1, 1), mode="replicate"), (3, 2*r+1, 2*r+1), stride=1)
        e3 = -F.max_pool3d(F.pad(-d3, (r, r, r, r, 1, 1), mode="replicate"), (3, 2*r+1, 2*r+1), stride=1)
        out[f"ctop3d{r}_soft"] = ((e3 - c3)[0, 0][:, None]) * soft
    return {k: v[:, 0].numpy() for k, v in out.items()}
rows = []
cases = read_label_table(root)[:n]
res = {}
for c in cases:
    img = read_image(c.image_path)
    mi = prepare_volume(img, cfg)
    truth = sitk.ReadImage(str(root / "truth" / f"{c.name}_clot.nii.gz")) if (root / "truth" / f"{c.name}_clot.nii.gz").exists() else None
    if truth is None:
        cand = list((root / "truth").glob(f"{c.name}*clot*"))
        truth = sitk.ReadImage(str(cand[0]))
    tm = sitk.Resample(sitk.Cast(truth, sitk.sitkFloat32), mi.grid, sitk.Transform(), sitk.sitkLinear, 0.0)
    clot = sitk.GetArrayFromImage(tm) > 0.3
    reg = mi.region
    fs = feats(mi.windowed.astype(np.float32))
    for k, f in fs.items():
        d = res.setdefault(k, {"max": [], "y": [], "pix_pos": [], "pix_neg": [], "rank": []})
        vals = f[reg]
        d["max"].append(float(vals.max())); d["y"].append(c.label)
        if clot.any():
            cv = f[clot & reg] if (clot & reg).any() else f[clot]
            d["pix_pos"].extend(cv.tolist())
            d["rank"].append(float((vals > cv.max()).sum()))
        d["pix_neg"].extend(np.random.default_rng(0).choice(f[reg & ~clot], 2000).tolist())
    print(c.name, c.label, "clot vox on grid", int(clot.sum()), "in region", int((clot & reg).sum()), "region vox", int(reg.sum()), flush=True)
for k, d in res.items():
    pa = roc_auc_score([1]*len(d["pix_pos"]) + [0]*len(d["pix_neg"]), d["pix_pos"] + d["pix_neg"])
    sa = roc_auc_score(d["y"], d["max"])
    print(f"{k:16s} pixel AUROC {pa:.3f}  scan AUROC(max) {sa:.3f}  median #region voxels above best clot voxel {np.median(d['rank']):.0f}")
