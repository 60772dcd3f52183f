"""Supervised separability of clot cells from the filter bank's fixed features (diagnostic, uses truth)."""
import sys, torch, numpy as np, SimpleITK as sitk, torch.nn.functional as F
from pathlib import Path
from sklearn.linear_model import LogisticRegression
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import roc_auc_score
from insight.config import PreprocessConfig
from insight.preprocessing import prepare_volume, slice_stack
from insight.io.image_io import read_image
from insight.training import read_label_table
from insight.models.filter_bank import FilterBankEncoder
torch.set_num_threads(1)
root = Path(sys.argv[1]); region_kind = sys.argv[2]
pre = PreprocessConfig(search_region=region_kind)
enc = FilterBankEncoder(3, 32, 4)
def load(split, n):
    X, Y, S, L = [], [], [], []
    for i, c in enumerate(read_label_table(root / split)[:n]):
        mi = prepare_volume(read_image(c.image_path), pre)
        t = sitk.ReadImage(str(root / split / "truth" / f"{c.name}_clot.nii.gz"))
        clot = sitk.GetArrayFromImage(sitk.Resample(sitk.Cast(t, sitk.sitkFloat32), mi.grid, sitk.Transform(), sitk.sitkLinear, 0.0)) > 0.3
        x = slice_stack(torch.from_numpy(mi.windowed).float(), 1)
        f = enc.precompute(x)  # [N, 16, h, w]
        cells = F.max_pool2d(torch.from_numpy(clot)[:, None].float(), 4, ceil_mode=True)[:, 0] > 0
        reg = F.max_pool2d(torch.from_numpy(mi.region)[:, None].float(), 4, ceil_mode=True)[:, 0] > 0
        feats = f.permute(0, 2, 3, 1)[reg].numpy()
        X.append(feats); Y.append(cells[reg].numpy()); S.append(np.full(len(feats), i)); L.append(c.label)
    return np.concatenate(X), np.concatenate(Y), np.concatenate(S), np.array(L)
Xtr, Ytr, Str, Ltr = load("train", 24)
Xva, Yva, Sva, Lva = load("val", 24)
print("cells per scan", len(Xtr) / 24, "clot cells", Ytr.sum(), "feature dims", Xtr.shape[1])
for name, clf in (("logreg", LogisticRegression(max_iter=2000, class_weight="balanced")),
                  ("gbm", HistGradientBoostingClassifier(max_iter=200))):
    clf.fit(Xtr, Ytr)
    s = clf.predict_proba(Xva)[:, 1]
    scan = np.array([s[Sva == i].max() for i in range(len(Lva))])
    ranks = [int((s[Sva == i] > s[(Sva == i) & Yva].max()).sum()) for i in range(len(Lva)) if Yva[Sva == i].any()]
    print(name, "cell AUROC %.3f" % roc_auc_score(Yva, s), "scan AUROC(max) %.3f" % roc_auc_score(Lva, scan),
          "cells above best clot cell per PE scan", ranks)
