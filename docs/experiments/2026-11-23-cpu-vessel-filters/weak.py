"""Weak-label INSIGHT runs on the vessel_filters encoder with cached prepared scans and fixed features."""
import sys, json, logging, time, torch, dataclasses
from pathlib import Path
from insight.config import InsightConfig, ModelConfig, TrainConfig, PreprocessConfig
from insight.training.dataset import read_label_table, prepare_cases, PreparedCase
from insight.training import InsightTrainer
from insight.preprocessing.search_region import vessel_search_region
import SimpleITK as sitk, numpy as np
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
torch.set_num_threads(2)
W = Path(__import__("os").environ.get("WORK", "."))
def cases(tag, folders):
    f = W / f"{tag}.prep.pt"
    if f.exists():
        return torch.load(f, weights_only=False)
    cs = prepare_cases([c for d in folders for c in read_label_table(d)], PreprocessConfig(), progress=False)
    torch.save(cs, f); return cs
name, spec = sys.argv[1], json.loads(sys.argv[2])
train_tags = spec.get("train_sets", ["train_a"])
tr = [c for t in train_tags for c in cases(t, [f"/work/data/{t}"])]
va = cases("val", ["/work/data/val"])
model = ModelConfig(**{"encoder": "vessel_filters", "encoder_channels": (32, 32), "reduce_channels": 32,
                       "head_widths": (32, 16, 16), "context_depth": 1, **spec.get("model", {})})
cfg = InsightConfig(preprocess=PreprocessConfig(search_region=spec.get("region", "chest")), model=model)
tc = TrainConfig(**{"epochs": 30, "learning_rate": 2e-3, "slice_stride": 2, "num_threads": 2, **spec.get("train", {})})
orig = InsightTrainer._precompute
def cached(self, cs):
    key = W / f"feat_{self.config.model.encoder}_s{self.config.model.encoder_stride}_{cs[0].name}_{len(cs)}.pt"
    if key.exists():
        return torch.load(key, weights_only=False)
    out = orig(self, cs); torch.save(out, key); return out
InsightTrainer._precompute = cached
InsightTrainer(cfg, tc, W / "runs" / name, "cpu").fit(tr, va, progress=False)
