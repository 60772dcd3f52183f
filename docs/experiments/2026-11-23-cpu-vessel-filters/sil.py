"""Single-instance learning check: cells labelled with their scan's label (no masks in training)."""
import sys, numpy as np, torch
from pathlib import Path
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
import torch.nn.functional as F
W = Path(__import__("os").environ.get("WORK", ".")); S = int(sys.argv[1]); trkey = sys.argv[2]
def load(key, prep_tags):
    feats = torch.load(W / key, weights_only=False)
    prep = [c for t in prep_tags for c in torch.load(W / f"{t}.prep.pt", weights_only=False)]
    out = []
    for c, f in zip(prep, feats):
        rc = F.max_pool2d(c.region.float()[:, None], S, ceil_mode=True)[:, 0].numpy() > 0
        out.append((c.label, f.float().permute(0, 2, 3, 1).numpy()[rc]))
    return out
tr = load(trkey, sys.argv[3].split(","))
# optional 4th argument "test": score the 40 test phantoms (seed 301) instead of val
EVAL = sys.argv[4] if len(sys.argv) > 4 else "val"
va = load({"val": f"feat_vessel_filters_s{S}_phantom_s201_0000_24.pt",
           "test": f"feat_vessel_filters_s{S}_phantom_s301_0000_40.pt"}[EVAL], [EVAL])
rng = np.random.default_rng(0)
X = np.concatenate([x[rng.choice(len(x), 4000, replace=False)] for _, x in tr])
Y = np.concatenate([np.full(4000, y) for y, _ in tr])
for name, clf in [("hgb", HistGradientBoostingClassifier(max_iter=200, max_leaf_nodes=15, random_state=0)),
                  ("logreg", LogisticRegression(C=0.1, max_iter=2000))]:
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    clf = make_pipeline(StandardScaler(), clf).fit(X, Y)
    for setname, data in (("train", tr), (EVAL, va)):
        ys, mx, top = [], [], []
        for y, x in data:
            p = clf.predict_proba(x)[:, 1]
            ys.append(y); mx.append(p.max()); top.append(np.sort(p)[-50:].mean())
        print(name, setname, "scan AUROC max %.3f top50 %.3f" % (roc_auc_score(ys, mx), roc_auc_score(ys, top)), flush=True)
