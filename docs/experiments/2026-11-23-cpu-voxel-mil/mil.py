"""Weak-label MIL over per-voxel fixed features: scan labels only in training; clot flags only for reporting.

VOX=vox python mil.py '{"pool": "topk", "topk": 20, "hardneg": 1.0, "epochs": 15}' train_a,train_b,train_c val,test
(the folder names under VOX, as precompute.py wrote them)

A bag is one scan: ``X`` [n_voxels, n_features] standardised features of its candidate voxels, ``y`` its
scan label, ``clot`` [n_voxels] bool (reporting only). The network gives each voxel a logit.
"""
import os, sys, json, time, numpy as np, torch, torch.nn as nn
from pathlib import Path
from sklearn.metrics import roc_auc_score

DEFAULTS = dict(pool="lse", r=5.0, topk=20, hardneg=1.0, hard_m=200, epochs=30, lr=3e-3, wd=1e-4, bags=16,
                hidden=32, drop=[], noise=0.0, seed=0)
bce = nn.BCEWithLogitsLoss()


def load_bags(tags, vox=Path(os.environ.get("VOX", "vox"))):
    """The npz files of the comma-separated folders ``tags`` under ``vox``, as a list of bag dicts."""
    bags = []
    for t in tags.split(","):
        for f in sorted((vox / t).glob("*.npz")):
            z = np.load(f)
            bags.append(dict(name=f.stem, F=z["F"], clot=z["clot"], y=int(z["y"]), names=list(z["names"])))
    return bags


def standardise(train, others, drop):
    """Adds ``X`` to every bag: the kept features, standardised with the training voxels' mean and std."""
    keep = [i for i, n in enumerate(train[0]["names"]) if n not in drop]
    sub = np.concatenate([b["F"][::50, keep] for b in train]).astype(np.float32)
    mu, sd = torch.tensor(sub.mean(0)), torch.tensor(sub.std(0) + 1e-6)
    for b in train + [b for bags in others for b in bags]:
        b["X"] = (torch.from_numpy(b["F"][:, keep].astype(np.float32)) - mu) / sd
    return keep, mu, sd


def make_net(n_features, hidden):
    """A linear voxel scorer (hidden == 0) or an MLP n-hidden-16-1."""
    if hidden == 0:
        return nn.Linear(n_features, 1)
    return nn.Sequential(nn.Linear(n_features, hidden), nn.ReLU(), nn.Linear(hidden, 16), nn.ReLU(), nn.Linear(16, 1))


def pool(l, cfg):
    """The bag logit from voxel logits ``l`` [n]: max, top-k mean, or LSE-mean over logits."""
    if cfg["pool"] == "max":
        return l.max()
    if cfg["pool"] == "topk":
        return l.topk(min(cfg["topk"], len(l))).values.mean()
    r = cfg["r"]
    return (torch.logsumexp(r * l, 0) - np.log(len(l))) / r


def weak_bag_loss(l, y, cfg):
    """Weak loss of one bag: BCE of the pooled logit against the scan label ``y``, plus, for a no-PE scan,
    ``hardneg`` times the BCE of its ``hard_m`` highest voxels against 0."""
    loss = bce(pool(l, cfg).view(1), torch.tensor([float(y)]))
    if y == 0 and cfg["hardneg"]:
        h = l.topk(min(cfg["hard_m"], len(l))).values
        loss = loss + cfg["hardneg"] * bce(h, torch.zeros_like(h))
    return loss


def evaluate(net, bags):
    """(scan AUROC by the maximum voxel, pointing game over PE bags, voxel AUROC clot vs every 100th other)."""
    net.eval(); ys, s, hits, ip, ineg = [], [], [], [], []
    with torch.no_grad():
        for b in bags:
            l = net(b["X"]).squeeze(1)
            ys.append(b["y"]); s.append(float(l.max()))
            if b["clot"].any():
                hits.append(bool(b["clot"][int(l.argmax())]))
                ip += l[torch.from_numpy(b["clot"])].tolist()
            ineg += l[torch.from_numpy(~b["clot"])][::100].tolist()
    net.train()
    return roc_auc_score(ys, s), float(np.mean(hits)) if hits else 0.0, roc_auc_score([1]*len(ip)+[0]*len(ineg), ip+ineg)


def report(net, evals):
    """One log fragment per evaluation set."""
    msg = ""
    for t, v in evals.items():
        a, h, ia = evaluate(net, v); msg += f" | {t} AUROC {a:.3f} point {h:.2f} voxAUROC {ia:.3f}"
    return msg


def setup(cfg_json, train_tags, eval_tags):
    """Config, bags and a fresh network with its optimiser."""
    cfg = dict(DEFAULTS, **json.loads(cfg_json))
    torch.manual_seed(cfg["seed"]); np.random.seed(cfg["seed"])
    train = load_bags(train_tags); evals = {t: load_bags(t) for t in eval_tags.split(",")}
    keep, mu, sd = standardise(train, list(evals.values()), cfg["drop"])
    print("train bags", len(train), "pos", sum(b["y"] for b in train), "features", len(keep), flush=True)
    net = make_net(len(keep), cfg["hidden"])
    opt = torch.optim.AdamW(net.parameters(), lr=cfg["lr"], weight_decay=cfg["wd"])
    return cfg, train, evals, net, opt, (keep, mu, sd)


def main(cfg_json, train_tags, eval_tags):
    cfg, train, evals, net, opt, (keep, mu, sd) = setup(cfg_json, train_tags, eval_tags)
    for ep in range(cfg["epochs"]):
        t0 = time.time(); order = np.random.permutation(len(train)); tot = 0
        for i in range(0, len(order), cfg["bags"]):
            step = order[i:i + cfg["bags"]]; loss = 0
            for j in step:
                x = train[j]["X"]
                if cfg["noise"]:
                    x = x + cfg["noise"] * torch.randn_like(x)
                loss = loss + weak_bag_loss(net(x).squeeze(1), train[j]["y"], cfg)
            loss = loss / len(step)
            opt.zero_grad(); loss.backward(); opt.step(); tot += float(loss.detach())
        print(f"ep {ep} loss {tot / (len(order) / cfg['bags']):.4f} {time.time()-t0:.0f}s" + report(net, evals), flush=True)
    torch.save(dict(net=net.state_dict(), mu=mu, sd=sd, keep=keep, cfg=cfg), f"mil_{cfg.get('tag', 'run')}.pt")


if __name__ == "__main__":
    main(*sys.argv[1:4])
