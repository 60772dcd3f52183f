"""Pixel-supervised oracle (small_cnn) on the big-clot phantoms, CPU: can this network find big clots at all?"""
import os, sys, json
os.environ.setdefault("OUT", "/tmp"); os.environ["DEV"] = "cpu"; os.environ["PROCS"] = "2"; os.environ["WORK"] = "/work/scratch/sw"
sys.path.insert(0, "/work/main/scripts/experiments")
import weak_label_sweep as sw
from pathlib import Path
if not (sw.WORK / "train.pt").exists():
    print(sw.prepare([Path("/work/scratch/easy/train")], "train"), sw.prepare([Path("/work/scratch/easy/val")], "val"), flush=True)
spec = {"model": {"encoder": sys.argv[1], "encoder_channels": [16, 32, 32], "reduce_channels": 32, "head_widths": [32, 16, 16],
                  "context_depth": 1}, "train": {"epochs": int(sys.argv[2]), "learning_rate": 2e-3}, "oracle": True}
sw.train_variant("oracle_" + sys.argv[1], spec)
