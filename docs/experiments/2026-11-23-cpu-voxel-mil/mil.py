"""Weak-label MIL over per-voxel fixed features: scan labels only in training; clot flags only for reporting.

VOX=vox python mil.py '{"pool": "topk", "topk": 20, "hardneg": 1.0, "epochs": 15}' train_a,train_b,train_c val,test
(the folder names under VOX, as precompute.py wrote them)
"""
import sys, json, time, numpy as np, torch, torch.nn as nn
from pathlib import Path
from sklearn.metrics import roc_auc_score
torch.manual_seed(0); np.random.seed(0)
V = Path(__import__("os").environ.get("VOX", "vox"))
cfg = dict(pool="lse", r=5.0, topk=20, hardneg=1.0, hard_m=200, epochs=30, lr=3e-3, wd=1e-4, bags=16, hidden=32, drop=[], noise=0.0, seed=0)
cfg.update(json.loads(sys.argv[1]))
torch.manual_seed(cfg["seed"])
def load(tags):
    bags = []
    for t in tags.split(","):
        for f in sorted((V / t).glob("*.npz")):
            z = np.load(f)
            bags.append(dict(name=f.stem, F=z["F"], clot=z["clot"], y=int(z["y"]), names=list(z["names"])))
    return bags
train = load(sys.argv[2]); evals = {t: load(t) for t in sys.argv[3].split(",")}
names = train[0]["names"]; keep = [i for i, n in enumerate(names) if n not in cfg["drop"]]
sub = np.concatenate([b["F"][::50, keep] for b in train]).astype(np.float32)
mu, sd = torch.tensor(sub.mean(0)), torch.tensor(sub.std(0) + 1e-6)
def T(b): return (torch.from_numpy(b["F"][:, keep].astype(np.float32)) - mu) / sd
for b in train:
    b["X"] = T(b)
for v in evals.values():
    for b in v: b["X"] = T(b)
print("train bags", len(train), "pos", sum(b["y"] for b in train), "features", len(keep), flush=True)
net = nn.Linear(len(keep), 1) if cfg["hidden"] == 0 else nn.Sequential(nn.Linear(len(keep), cfg["hidden"]), nn.ReLU(), nn.Linear(cfg["hidden"], 16), nn.ReLU(), nn.Linear(16, 1))
opt = torch.optim.AdamW(net.parameters(), lr=cfg["lr"], weight_decay=cfg["wd"])
def pool(l):
    if cfg["pool"] == "max": return l.max()
    if cfg["pool"] == "topk": return l.topk(min(cfg["topk"], len(l))).values.mean()
    r = cfg["r"]; return (torch.logsumexp(r * l, 0) - np.log(len(l))) / r + 0  # LSE-mean over logits
bce = nn.BCEWithLogitsLoss()
def evaluate(bags):
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
for ep in range(cfg["epochs"]):
    t0 = time.time(); order = np.random.permutation(len(train)); tot = 0
    for i in range(0, len(order), cfg["bags"]):
        loss = 0
        for j in order[i:i+cfg["bags"]]:
            b = train[j]; x = b["X"]
            if cfg["noise"]: x = x + cfg["noise"] * torch.randn_like(x)
            l = net(x).squeeze(1)
            loss = loss + bce(pool(l).view(1), torch.tensor([float(b["y"])]))
            if b["y"] == 0 and cfg["hardneg"]:
                h = l.topk(min(cfg["hard_m"], len(l))).values
                loss = loss + cfg["hardneg"] * bce(h, torch.zeros_like(h))
        loss = loss / len(order[i:i+cfg["bags"]])
        opt.zero_grad(); loss.backward(); opt.step(); tot += float(loss)
    msg = f"ep {ep} loss {tot / (len(order) / cfg['bags']):.4f} {time.time()-t0:.0f}s"
    for t, v in evals.items():
        a, h, ia = evaluate(v); msg += f" | {t} AUROC {a:.3f} point {h:.2f} voxAUROC {ia:.3f}"
    print(msg, flush=True)
torch.save(dict(net=net.state_dict(), mu=mu, sd=sd, keep=keep, cfg=cfg), f"mil_{cfg.get('tag','run')}.pt")
