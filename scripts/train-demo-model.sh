#!/usr/bin/env bash
# Reproduce the shipped demo model (sample-data/models/pe_insight_demo.pt) and its model-card figures.
# Everything runs on synthetic phantoms whose seeds differ from the sample studies' (seed 7).
# CPU (2 cores): phantoms ~40 min, training ~75 min (anomaly seeding: 63 min selecting instances,
# 1 min per epoch), calibration ~4 min, evaluation ~5 min.
# WORK=/path for the data and the run; DEVICE=cuda to train on a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
WORK="${WORK:-runs/demo-model}"
insight=".venv/bin/insight"

# 1. data: 396 training scans (three seeds, generated in parallel), 24 validation, 40 test
$insight phantom --n 48 --seed 101 --out "$WORK/train_a" --no-progress &
$insight phantom --n 48 --seed 102 --out "$WORK/train_b" --no-progress &
wait
$insight phantom --n 300 --seed 103 --out "$WORK/train_c" --no-progress
$insight phantom --n 24 --seed 201 --out "$WORK/val" --no-progress &
$insight phantom --n 40 --seed 301 --out "$WORK/test" --no-progress &
wait

# 2. weak-label training (images + labels.csv only; the truth/ masks are never read):
#    anomaly-seeded instance training (lib/insight/training/anomaly_seed.py), no MIL epochs after it
$insight train --train "$WORK/train_a" "$WORK/train_b" "$WORK/train_c" --val "$WORK/val" --out "$WORK/run" \
    --encoder vessel_filters --encoder-stride 1 --encoder-channels 32 32 --reduce-channels 32 \
    --head-widths 32 16 16 --context-depth 1 --pooling max --search-region filling_defects \
    --seed-instances 200 --seed-epochs 10 --epochs 0 --lr 0.003 --seed 0 --threads 2 \
    --device "${DEVICE:-cpu}" --no-progress

# 3. calibrate p(PE) on the validation phantoms (Platt scaling folded into the detection module)
$insight calibrate --model "$WORK/run/best.pt" --labelled "$WORK/val" --out "$WORK/run/calibrated.pt" --no-progress

# 4. figures on the unseen test phantoms (masks used only here, to measure)
$insight evaluate "$WORK/test" --model "$WORK/run/calibrated.pt" --out "$WORK/eval" --no-progress
echo "demo model: $WORK/run/calibrated.pt; figures: $WORK/eval/evaluation.json"
echo "to ship it: cp $WORK/run/calibrated.pt sample-data/models/pe_insight_demo.pt, then insight calibrate-ood"
echo "(command in sample-data/models/MODEL_CARD.md) and update MODEL_CARD.md"
