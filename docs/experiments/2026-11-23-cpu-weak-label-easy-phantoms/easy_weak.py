"""Can the weak-label pipeline learn at all when the phantom has no confounders? (CPU diagnostic)"""
import sys, time, logging, torch
from pathlib import Path
from insight.phantom import PhantomConfig, write_dataset
from insight.config import InsightConfig, ModelConfig, TrainConfig
from insight.training import InsightTrainer, prepare_cases, read_label_table
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
root = Path(sys.argv[1]); epochs = int(sys.argv[2]); easy = sys.argv[3] == "easy"
cfg = PhantomConfig(shape_xyz=(96, 96, 48), p_flow_artifact=0.0 if easy else 0.5, p_streaks=0.0 if easy else 0.4,
                    p_lymph_nodes=0.0 if easy else 0.75)
torch.set_num_threads(2)
for name, n, seed in (("train", 64, 71), ("val", 24, 72)):
    if not (root / name / "labels.csv").exists():
        write_dataset(root / name, n, seed, cfg, progress=False)
tr = prepare_cases(read_label_table(root / "train"), InsightConfig().preprocess, False)
va = prepare_cases(read_label_table(root / "val"), InsightConfig().preprocess, False)
model = ModelConfig(encoder="small_cnn", encoder_channels=(16, 32, 32), reduce_channels=32, head_widths=(32, 16, 16),
                    context_depth=1, pooling="max")
InsightTrainer(InsightConfig(model=model), TrainConfig(epochs=epochs, learning_rate=2e-3, num_threads=2),
               root / "run", "cpu").fit(tr, va, progress=False)
