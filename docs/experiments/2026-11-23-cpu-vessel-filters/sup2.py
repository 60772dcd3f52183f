import sys, numpy as np, scipy.ndimage as nd, time, json
from pathlib import Path
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import roc_auc_score
sys.path.insert(0, __import__("os").path.dirname(__file__))
from sup import load, features
rng = np.random.default_rng(0)
def samples(root, n=None):
    names, data = load(root, n)
    X, Y = [], []
    for d in data:
        reg, clot, F = d["region"], d["clot"], d["F"]
        pos = F[clot & reg]; negidx = np.argwhere(reg & ~clot)
        pick = negidx[rng.choice(len(negidx), 6000, replace=False)]
        neg = F[tuple(pick.T)]
        X += [pos, neg]; Y += [np.ones(len(pos)), np.zeros(len(neg))]
    return names, np.concatenate(X), np.concatenate(Y)
names, X, Y = samples(sys.argv[1])
clf = HistGradientBoostingClassifier(max_iter=300, learning_rate=0.1, class_weight="balanced", random_state=0).fit(X, Y)
print("trained", X.shape, Y.sum(), flush=True)
for root in sys.argv[2:]:
    _, data = load(root)
    ys, s_max, s_sm, s_comp, vp, vn = [], [], [], [], [], []
    for d in data:
        reg = d["region"]; p = np.zeros(reg.shape, np.float32)
        p[reg] = clf.predict_proba(d["F"][reg])[:, 1]
        ps = nd.gaussian_filter(p, 1.0)
        ys.append(d["y"]); s_max.append(p.max()); s_sm.append(ps.max())
        lab, n = nd.label(p > 0.5)
        s_comp.append(np.bincount(lab.ravel())[1:].max() if n else 0)
        if d["clot"].any(): vp += p[d["clot"] & reg].tolist()
        vn += p[reg & ~d["clot"]][::50].tolist()
    print(root, "voxel AUROC %.3f" % roc_auc_score([1]*len(vp)+[0]*len(vn), vp+vn),
          "scan AUROC max %.3f smooth-max %.3f largest-comp %.3f" % (roc_auc_score(ys, s_max), roc_auc_score(ys, s_sm), roc_auc_score(ys, s_comp)), flush=True)
