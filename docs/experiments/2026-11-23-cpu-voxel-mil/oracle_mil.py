"""Is the clot detector a good solution of the weak MIL objective? Train the same MLP on clot flags (diagnostic,
uses masks), then score it with mil.py's weak objective on the training bags and compare with the weak run's loss.
python oracle_mil.py EPOCHS"""
import sys, json, numpy as np, torch, torch.nn as nn
sys.argv = [sys.argv[0], json.dumps({"pool": "topk", "topk": 20, "hardneg": 1.0, "epochs": 0, "tag": "oracle"}), "train_a,train_b,train_c", "val,test", *sys.argv[1:]]
EP = int(sys.argv[4])
exec(open(__import__("os").path.join(__import__("os").path.dirname(__file__), "mil.py")).read().split("for ep in range")[0])
def weak_loss(bags):
    tot = 0
    with torch.no_grad():
        for b in bags:
            l = net(b["X"]).squeeze(1)
            loss = bce(pool(l).view(1), torch.tensor([float(b["y"])]))
            if b["y"] == 0:
                h = l.topk(min(cfg["hard_m"], len(l))).values; loss = loss + bce(h, torch.zeros_like(h))
            tot += float(loss)
    return tot / len(bags)
for ep in range(EP):
    for i in np.random.permutation(len(train)).reshape(-1, 12):
        loss = 0
        for j in i:
            b = train[j]; l = net(b["X"]).squeeze(1); c = torch.from_numpy(b["clot"]).float()
            neg = l[c == 0]; neg = torch.cat([neg.topk(500).values, neg[torch.randint(len(neg), (500,))]])
            loss = loss + bce(neg, torch.zeros_like(neg))
            if c.any(): loss = loss + bce(l[c == 1], torch.ones(int(c.sum())))
        opt.zero_grad(); (loss / len(i)).backward(); opt.step()
    msg = f"oracle ep {ep} weak-objective on train {weak_loss(train):.4f}"
    for t, v in evals.items():
        a, h, ia = evaluate(v); msg += f" | {t} AUROC {a:.3f} point {h:.2f} voxAUROC {ia:.3f}"
    msg += f" | train AUROC {evaluate(train)[0]:.3f}"
    print(msg, flush=True)
