"""Diagnostic: do voxels unlike any voxel of the no-PE training scans point at the clots?

Reference = candidate voxels of no-PE training scans (scan labels only). Score of a voxel = its
negative log-likelihood under a Gaussian mixture fitted to the reference (or kNN distance).
Reports per split: scan AUROC (max score), pointing game, voxel AUROC (clot vs others).
    python anomaly.py VOX '{"k": 32, "per_scan": 1000}' train_a,train_b,train_c val,test
"""
import json, sys, time, logging
from pathlib import Path
import numpy as np
from sklearn.mixture import GaussianMixture
from insight.metrics import auroc

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
log = logging.getLogger("anomaly")
vox, cfg = Path(sys.argv[1]), {"k": 32, "per_scan": 1000, "seed": 0, "cov": "full", "ref": "normal", **json.loads(sys.argv[2])}
rng = np.random.default_rng(cfg["seed"])

def scans(tags):
    for t in tags.split(","):
        for f in sorted((vox / t).glob("*.npz")):
            yield f

ref = []
for f in scans(sys.argv[3]):
    z = np.load(f)
    if int(z["y"]) == 0 or cfg["ref"] == "all":  # control "all": reference ignores the scan labels
        F = z["F"].astype(np.float32)
        ref.append(F[rng.choice(len(F), min(cfg["per_scan"], len(F)), replace=False)])
ref = np.concatenate(ref)
mu, sd = ref.mean(0), ref.std(0) + 1e-6
t0 = time.time()
gmm = GaussianMixture(cfg["k"], covariance_type=cfg["cov"], random_state=cfg["seed"], max_iter=200, reg_covar=1e-3).fit((ref - mu) / sd)
log.info("reference %s from no-PE scans, GMM k=%d fitted in %.0f s", ref.shape, cfg["k"], time.time() - t0)
for tag in sys.argv[4].split(","):
    ys, sc, hits, vy, vs = [], [], [], [], []
    for f in scans(tag):
        z = np.load(f)
        s = -gmm.score_samples((z["F"].astype(np.float32) - mu) / sd)
        ys.append(int(z["y"])); sc.append(float(s.max()))
        clot = z["clot"]
        if z["y"] and clot.any():
            hits.append(bool(clot[int(s.argmax())]))
            top = np.argsort(-s)[:20]
        sub = rng.choice(len(s), min(2000, len(s)), replace=False)
        vy += list(clot[sub]) + [True] * int(clot.sum()); vs += list(s[sub]) + list(s[clot])
    log.info("%s: scan AUROC %.3f, pointing %.2f (%d PE scans), voxel AUROC %.3f", tag, auroc(ys, sc),
             np.mean(hits), len(hits), auroc(np.array(vy, int), vs))
