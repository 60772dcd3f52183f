"""Diagnostic: anomaly-seeded MIL on fixed per-voxel features (scan labels only; clots only for reporting).

1. GMM of candidate voxels from no-PE training scans (as anomaly.py); score = -log-likelihood.
2. Instances = the top-M voxels by the current score in every training scan, labelled with their scan label.
3. Fit a gradient-boosting classifier on them; the new score is its logit. Repeat step 2-3 `rounds` times.
Reported after each round on the eval splits: scan AUROC (max score), pointing game, voxel AUROC.
    python anomaly_mil.py VOX OUT '{"k": 64, "m": 200, "rounds": 3}' train_a,train_b,train_c val,test
"""
import json, pickle, sys, time, logging
from pathlib import Path
import numpy as np
from sklearn.mixture import GaussianMixture
from sklearn.ensemble import HistGradientBoostingClassifier
from insight.metrics import auroc

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
log = logging.getLogger("anomaly_mil")
vox, out = Path(sys.argv[1]), Path(sys.argv[2])
cfg = {"k": 64, "per_scan": 1000, "m": 200, "rounds": 3, "seed": 0, "ref": "normal", "shuffle_labels": False, "crossfit": 0, "clf": "gb",
       **json.loads(sys.argv[3])}
out.mkdir(parents=True, exist_ok=True)
rng = np.random.default_rng(cfg["seed"])


def load(tags):
    bags = []
    for t in tags.split(","):
        for f in sorted((vox / t).glob("*.npz")):
            z = np.load(f)
            bags.append(dict(name=f.stem, F=z["F"].astype(np.float32), clot=z["clot"], y=int(z["y"])))
    return bags


train, evals = load(sys.argv[4]), {t: load(t) for t in sys.argv[5].split(",")}
if cfg["shuffle_labels"]:  # control: labels permuted across training scans
    for b, y in zip(train, np.random.default_rng(cfg["seed"] + 12345).permutation([b["y"] for b in train])):
        b["y"] = int(y)
gmm_file = out / f"gmm_k{cfg['k']}_{cfg['ref']}_{cfg['shuffle_labels']}.pkl"
if gmm_file.exists():
    mu, sd, gmm = pickle.loads(gmm_file.read_bytes())
else:
    ref = np.concatenate([b["F"][rng.choice(len(b["F"]), min(cfg["per_scan"], len(b["F"])), replace=False)]
                          for b in train if b["y"] == 0 or cfg["ref"] == "all"])
    mu, sd = ref.mean(0), ref.std(0) + 1e-6
    t0 = time.time()
    gmm = GaussianMixture(cfg["k"], random_state=cfg["seed"], max_iter=200, reg_covar=1e-3).fit((ref - mu) / sd)
    log.info("GMM on %s reference voxels: %.0f s", ref.shape, time.time() - t0)
    gmm_file.write_bytes(pickle.dumps((mu, sd, gmm)))


def fit_classifier(X, Y):
    """Gradient boosting ("gb") or a torch MLP 22-32-16-1 ("mlp", the shape of INSIGHT's detection module)
    on instances X [n, 22] with their scan labels Y [n]; returns a function F [m, 22] -> logits [m]."""
    if cfg["clf"] == "gb":
        clf = HistGradientBoostingClassifier(max_iter=200, learning_rate=0.1, max_leaf_nodes=31,
                                             l2_regularization=1.0, random_state=cfg["seed"]).fit(X, Y)
        return clf.decision_function
    import torch
    torch.manual_seed(cfg["seed"])
    net = torch.nn.Sequential(torch.nn.Linear(X.shape[1], 32), torch.nn.GELU(), torch.nn.Linear(32, 16),
                              torch.nn.GELU(), torch.nn.Linear(16, 1))
    Xt, Yt = torch.from_numpy((X - mu) / sd).float(), torch.from_numpy(Y).float()
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=1e-4)
    g = torch.Generator().manual_seed(cfg["seed"])
    for _ in range(cfg.get("mlp_epochs", 20)):
        for idx in torch.randperm(len(Xt), generator=g).split(512):
            loss = torch.nn.functional.binary_cross_entropy_with_logits(net(Xt[idx])[:, 0], Yt[idx])
            opt.zero_grad(); loss.backward(); opt.step()
    net.eval()
    def score(F):
        with torch.no_grad():
            return net(torch.from_numpy((F - mu) / sd).float())[:, 0].numpy()
    return score


def report(tag, bags, score_fn, label):
    ys, sc, hits, vy, vs = [], [], [], [], []
    r = np.random.default_rng(1)
    for b in bags:
        s = score_fn(b["F"])
        ys.append(b["y"]); sc.append(float(s.max()))
        if b["y"] and b["clot"].any():
            hits.append(bool(b["clot"][int(s.argmax())]))
        sub = r.choice(len(s), min(2000, len(s)), replace=False)
        vy += list(b["clot"][sub]) + [True] * int(b["clot"].sum()); vs += list(s[sub]) + list(s[b["clot"]])
    res = dict(split=tag, stage=label, scan_auroc=round(auroc(ys, sc), 3), pointing=round(float(np.mean(hits)), 3),
               voxel_auroc=round(auroc(np.array(vy, int), vs), 3))
    log.info(json.dumps(res))
    return res


anomaly = lambda F: -gmm.score_samples((F - mu) / sd)
results = [report(t, b, anomaly, "anomaly") for t, b in evals.items()]
score_file = gmm_file.with_suffix(".train_scores.npz")
if score_file.exists():
    cached = np.load(score_file)
    for b in train:
        b["s"] = cached[b["name"]]
else:
    for b in train:
        b["s"] = anomaly(b["F"])
    np.savez(score_file, **{b["name"]: b["s"] for b in train})
for rnd in range(1, cfg["rounds"] + 1):
    X, Y = [], []
    for b in train:
        top = np.argsort(-b["s"])[:cfg["m"]]
        X.append(b["F"][top]); Y.append(np.full(len(top), b["y"]))
    X, Y = np.concatenate(X), np.concatenate(Y)
    clot_share = np.mean([b["clot"][np.argsort(-b["s"])[:cfg["m"]]].mean() for b in train if b["y"]])
    t0 = time.time()
    score = fit_classifier(X, Y)
    log.info("round %d: %d instances, clot share of PE-scan instances %.3f, fit %.0f s", rnd, len(X), clot_share,
             time.time() - t0)
    results += [report(t, b, score, f"round {rnd}") for t, b in evals.items()]
    if cfg["crossfit"]:  # re-select with classifiers that did not see the scan (K folds of scans)
        fold = np.arange(len(train)) % cfg["crossfit"]
        for k in range(cfg["crossfit"]):
            keep = np.repeat(fold != k, cfg["m"])
            other = fit_classifier(X[keep], Y[keep])
            for b in (b for b, f in zip(train, fold) if f == k):
                b["s"] = other(b["F"])
    else:
        for b in train:
            b["s"] = score(b["F"])
(out / f"history_{json.dumps(cfg, sort_keys=True).replace(' ', '')[:120].replace('/', '_')}.json").write_text(
    json.dumps({"cfg": cfg, "results": results}, indent=1))
