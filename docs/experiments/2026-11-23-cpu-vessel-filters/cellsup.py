"""Supervised cell-level check (uses clot masks; diagnostic only).

python cellsup.py STRIDE              # cached vessel_filters features (written by weak.py)
python cellsup.py 4 filter_bank       # the filter_bank encoder's fixed features, computed here
python cellsup.py 4 vessels           # vessel_filters, cells of the "vessels" search region only
"""
import numpy as np, torch, SimpleITK as sitk, torch.nn.functional as F
from pathlib import Path
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import roc_auc_score
from insight.config import PreprocessConfig
from insight.preprocessing import prepare_volume
from insight.io.image_io import read_image
from insight.training.dataset import read_label_table
W = Path(__import__("os").environ.get("WORK", "."))
import sys
S = int(sys.argv[1])
FILTER_BANK = len(sys.argv) > 2 and sys.argv[2] == "filter_bank"
VESSELS = len(sys.argv) > 2 and sys.argv[2] == "vessels"
def load(tag, n):
    prep = torch.load(W / f"{tag}.prep.pt", weights_only=False)
    if FILTER_BANK:
        from insight.models.filter_bank import FilterBankEncoder
        from insight.preprocessing import slice_stack
        enc = FilterBankEncoder(3, 8, S)
        feats = [enc.precompute(slice_stack(c.volume.float(), 1)) for c in prep]
    else:
        feats = torch.load(W / f"feat_vessel_filters_s{S}_{read_label_table(f'/work/data/{tag}')[0].name}_{n}.pt", weights_only=False)
    out = []
    for c, lc, f in zip(prep, read_label_table(f"/work/data/{tag}"), feats):
        mi = prepare_volume(read_image(lc.image_path), PreprocessConfig(search_region="vessels" if VESSELS else "chest"))
        t = sitk.ReadImage(f"/work/data/{tag}/truth/{c.name}_clot.nii.gz")
        clot = torch.from_numpy(sitk.GetArrayFromImage(sitk.Resample(sitk.Cast(t, sitk.sitkFloat32), mi.grid, sitk.Transform(), sitk.sitkLinear, 0.0)) > 0.3).float()
        cc = F.max_pool2d(clot[:, None], S, ceil_mode=True)[:, 0] > 0
        region = torch.from_numpy(mi.region) if VESSELS else c.region
        rc = F.max_pool2d(region.float()[:, None], S, ceil_mode=True)[:, 0] > 0
        X = f.float().permute(0, 2, 3, 1).numpy()
        out.append((c.label, X, cc.numpy(), rc.numpy()))
    return out
tr, va = load("train_a", 48), load("val", 24)
rng = np.random.default_rng(0)
Xs, Ys = [], []
for y, X, cc, rc in tr:
    pos = X[cc & rc]; neg = X[rc & ~cc]; neg = neg[rng.choice(len(neg), min(3000, len(neg)), replace=False)]
    Xs += [pos, neg]; Ys += [np.ones(len(pos)), np.zeros(len(neg))]
clf = HistGradientBoostingClassifier(max_iter=300, class_weight="balanced", random_state=0).fit(np.concatenate(Xs), np.concatenate(Ys))
ys, ms, vp, vn = [], [], [], []
for y, X, cc, rc in va:
    p = clf.predict_proba(X[rc])[:, 1]
    ys.append(y); ms.append(p.max())
    m = np.zeros(rc.shape); m[rc] = p
    vp += m[cc & rc].tolist(); vn += m[rc & ~cc].tolist()
print(("filter_bank " if FILTER_BANK else "vessel_filters ") + ("vessel region " if VESSELS else "") + f"stride {S}: " + "cell AUROC %.3f scan AUROC(max) %.3f" % (roc_auc_score([1]*len(vp)+[0]*len(vn), vp+vn), roc_auc_score(ys, ms)))
print("region cells per scan", np.mean([rc.sum() for _, _, _, rc in va]), "clot cells per PE scan", np.mean([cc.sum() for y, _, cc, _ in va if y]),
      "of which in the region", np.mean([(cc & rc).sum() for y, _, cc, rc in va if y]))
