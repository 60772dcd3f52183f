"""Is the clot detector a good solution of the weak MIL objective? (diagnostic; uses the clot masks)

VOX=vox python oracle_mil.py EPOCHS [TRAIN_TAGS EVAL_TAGS]   (default train_a,train_b,train_c val,test)

Trains mil.py's network on the clot flags (all clot voxels against the 500 highest and 500 random other
voxels of each scan, 12 scans per step), and after each epoch scores it with mil.py's *weak* objective
(top-20 pooling plus hard negatives) on the training bags, to compare with the weak runs' losses.
"""
import sys, json, numpy as np, torch
from mil import setup, weak_bag_loss, evaluate, report, bce

WEAK = json.dumps({"pool": "topk", "topk": 20, "hardneg": 1.0, "epochs": 0, "tag": "oracle"})


def weak_objective(net, bags, cfg):
    """Mean weak loss per bag, without gradients."""
    with torch.no_grad():
        return sum(float(weak_bag_loss(net(b["X"]).squeeze(1), b["y"], cfg)) for b in bags) / len(bags)


def main(epochs, train_tags="train_a,train_b,train_c", eval_tags="val,test"):
    cfg, train, evals, net, opt, _ = setup(WEAK, train_tags, eval_tags)
    for ep in range(epochs):
        for step in np.array_split(np.random.permutation(len(train)), max(1, len(train) // 12)):
            loss = 0
            for j in step:
                b = train[j]; l = net(b["X"]).squeeze(1); c = torch.from_numpy(b["clot"])
                neg = l[~c]; neg = torch.cat([neg.topk(500).values, neg[torch.randint(len(neg), (500,))]])
                loss = loss + bce(neg, torch.zeros_like(neg))
                if c.any():
                    loss = loss + bce(l[c], torch.ones(int(c.sum())))
            opt.zero_grad(); (loss / len(step)).backward(); opt.step()
        print(f"oracle ep {ep} weak-objective on train {weak_objective(net, train, cfg):.4f}" + report(net, evals)
              + f" | train AUROC {evaluate(net, train)[0]:.3f}", flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]), *sys.argv[2:4])
