"""Diagnostic: can weak-label INSIGHT learn when every embolus is a large main-artery clot and no confounders?"""
import sys, logging, json, torch
from pathlib import Path
import insight.phantom.emboli as emboli
from insight.phantom import PhantomConfig, write_dataset
from insight.config import InsightConfig, ModelConfig, TrainConfig, PreprocessConfig
from insight.training import InsightTrainer, prepare_cases, read_label_table
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
root = Path(sys.argv[1]); mode = sys.argv[2]; variant = sys.argv[3]; epochs = int(sys.argv[4])
torch.set_num_threads(1)
if mode == "gen":
    emboli._SITES = {1: (0.5, (25.0, 40.0)), 2: (0.5, (20.0, 35.0))}
    emboli._KIND_P = {1: (0.5, 0.3, 0.2), 2: (0.6, 0.3, 0.1)}
    cfg = PhantomConfig(p_flow_artifact=0.0, p_streaks=0.0, p_lymph_nodes=0.0, max_emboli=3)
    name, n, seed = sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
    write_dataset(root / name, n, seed, cfg, progress=False)
    sys.exit()
v = json.loads(variant)
pre = PreprocessConfig(search_region=v.get("region", "chest"))
tr = prepare_cases(read_label_table(root / "train"), pre, False)
va = prepare_cases(read_label_table(root / "val"), pre, False)
if v.get("soft"):  # leave out voxels of aerated lung/air (windowed 0: below -250 HU)
    for c in tr + va:
        c.region = c.region & (c.volume > 0)
model = ModelConfig(encoder=v.get("encoder", "filter_bank"), encoder_channels=tuple(v.get("channels", (32, 32))), reduce_channels=32,
                    head_widths=(32, 16, 16), context_depth=1, pooling=v.get("pooling", "max"),
                    use_context=v.get("context", True), smoothmax_alpha=v.get("alpha", 8.0), otsu_in_training=v.get("otsu", True))
InsightTrainer(InsightConfig(model=model, preprocess=pre),
               TrainConfig(epochs=epochs, learning_rate=v.get("lr", 2e-3), num_threads=1,
                           scans_per_step=v.get("sps", 1), spectral_lambda=v.get("sd", 0.01), negative_weight=v.get("neg", 0.0), negative_topk_fraction=v.get("topk", 0.01)),
               root / ("run_" + v["name"]), "cpu").fit(tr, va, progress=False)
