"""Does a lower learning rate for the weak-label epochs keep the anomaly-seeded detector? (CPU)

The published CPU benchmark (``benchmarks/configs/cpu.json``) restarted the weak-label epochs at the
seed stage's peak rate (3e-3) and its one weak epoch dropped INSIGHT's validation AUROC from 0.76 to
0.49. This script trains the same INSIGHT model on the same phantoms: the seed stage once, then the
weak epochs from its last checkpoint at several peak rates. Results on synthetic phantoms.

Usage::

    python weak_lr.py seed DATA OUT                 # DATA/train and DATA/val: insight phantom folders
    python weak_lr.py weak DATA OUT/seed OUT/lr3e-4 0.0003 3
    python weak_lr.py weak DATA OUT/seed OUT/context-only 0.003 2 context-only   # detection path frozen
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from insight.config import InsightConfig, ModelConfig, PreprocessConfig, TrainConfig
from insight.training import InsightTrainer, prepare_cases, read_label_table

#: cpu.json's model and training settings (INSIGHT method).
MODEL = ModelConfig(encoder="vessel_filters", encoder_channels=(32, 32), encoder_stride=1, reduce_channels=32,
                    head_widths=(32, 16, 16), context_depth=1)
PREPROCESS = PreprocessConfig(search_region="filling_defects")
TRAIN = dict(learning_rate=0.003, seed=0, slice_stride=2, feature_cache_gb=8, seed_instances=200, seed_epochs=4,
             seed_batch_size=256, num_threads=1)


def _cases(data: Path):
    config = InsightConfig(preprocess=PREPROCESS, model=MODEL)
    train = prepare_cases(read_label_table(data / "train"), config.preprocess, False)
    val = prepare_cases(read_label_table(data / "val"), config.preprocess, False)
    return config, train, val


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    stage, data = sys.argv[1], Path(sys.argv[2])
    config, train, val = _cases(data)
    if stage == "seed":
        out = Path(sys.argv[3])
        trainer = InsightTrainer(config, TrainConfig(epochs=0, **TRAIN), out, "cpu")
    else:
        seed_run, out, rate, epochs = Path(sys.argv[3]), Path(sys.argv[4]), float(sys.argv[5]), int(sys.argv[6])
        trainer = InsightTrainer(config, TrainConfig(epochs=epochs, weak_learning_rate=rate, **TRAIN), out, "cpu")
        trainer.resume(seed_run / "last.pt")
        if sys.argv[7:] == ["context-only"]:  # weak epochs train the context module (and pooling) only
            for module in (trainer.model.encoder, trainer.model.reduce, trainer.model.detection):
                module.requires_grad_(False)
    summary = trainer.fit(train, val, progress=False)
    keep = ("epoch", "stage", "learning_rate", "train_loss", "val_auroc", "val_p_std", "seconds")
    rows = [{k: h[k] for k in keep if k in h} for h in summary.history]
    (out / "history.json").write_text(json.dumps(rows, indent=1))
    for row in rows:
        logging.info("%s", row)


if __name__ == "__main__":
    main()
