"""Curriculum phantoms (diagnostic): large main/lobar clots, no flow artifacts, streaks or lymph nodes.

    python gen_easy.py OUT_DIR N SEED [easy|noconf]
easy   = main/lobar clots only, 20-40 mm long stretches, no confounders
noconf = default emboli (main, lobar, segmental), no confounders
"""
import sys
from pathlib import Path
import insight.phantom.emboli as emboli
from insight.phantom import PhantomConfig, write_dataset

out, n, seed, kind = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
if kind == "easy":
    emboli._SITES = {1: (0.5, (25.0, 40.0)), 2: (0.5, (20.0, 35.0))}
    emboli._KIND_P = {1: (0.5, 0.3, 0.2), 2: (0.6, 0.3, 0.1)}
    cfg = PhantomConfig(p_flow_artifact=0.0, p_streaks=0.0, p_lymph_nodes=0.0, max_emboli=3)
elif kind == "noconf":
    cfg = PhantomConfig(p_flow_artifact=0.0, p_streaks=0.0, p_lymph_nodes=0.0)
else:
    raise SystemExit(f"unknown kind {kind}")
write_dataset(out, n, seed, cfg, progress=False)
