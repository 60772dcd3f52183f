"""p(PE) of a checkpoint on cached val features vs the phantoms' scan metadata (what did the weak model learn?)."""
import sys, torch, numpy as np, pandas as pd
from pathlib import Path
from insight.models.checkpoint import load_checkpoint
from scipy.stats import spearmanr
torch.set_num_threads(1)
W = Path(__import__("os").environ.get("WORK", "."))
ck = load_checkpoint(sys.argv[1], "cpu"); model = ck.model.eval()
prep = torch.load(W / "val.prep.pt", weights_only=False)
feats = torch.load(W / f"feat_vessel_filters_s{ck.config.model.encoder_stride}_phantom_s201_0000_24.pt", weights_only=False)
ps = []
with torch.no_grad():
    for c, f in zip(prep, feats):
        ps.append(float(model(f.float(), precomputed=True, region=c.region).probability[0]))
meta = pd.read_csv("/work/data/val/labels.csv").set_index("image").loc[[c.name for c in prep]]
meta["p"] = ps
for col in ["pe", "contrast_hu", "noise_sd_hu", "flow_artifacts", "streaks", "lymph_nodes", "blur_sigma_mm", "n_emboli"]:
    r, pv = spearmanr(meta["p"], meta[col]); print(f"{col:15s} spearman {r:+.2f} (p={pv:.3f})")
