#!/usr/bin/env bash
# Reproduce the shipped demo model (sample-data/models/pe_insight_demo.pt) and its model-card figures.
# Everything runs on synthetic phantoms whose seeds differ from the sample studies' (seed 7).
# CPU: about 45 minutes on 2 cores (training ~37 s per epoch on one thread); WORK=/path for the data.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
WORK="${WORK:-runs/demo-model}"
EPOCHS="${EPOCHS:-60}"
insight=".venv/bin/insight"

# 1. data: 96 training scans (two seeds, generated in parallel), 24 validation, 40 test
$insight phantom --n 48 --seed 101 --out "$WORK/train_a" --no-progress &
$insight phantom --n 48 --seed 102 --out "$WORK/train_b" --no-progress &
wait
$insight phantom --n 24 --seed 201 --out "$WORK/val" --no-progress &
$insight phantom --n 40 --seed 301 --out "$WORK/test" --no-progress &
wait

# 2. weak-label training (images + labels.csv only; the truth/ masks are never read)
$insight train --train "$WORK/train_a" "$WORK/train_b" --val "$WORK/val" --out "$WORK/run" \
    --epochs "$EPOCHS" --lr 0.002 --seed 0 --encoder filter_bank --encoder-channels 32 32 --reduce-channels 32 \
    --head-widths 32 16 16 --context-depth 1 --slice-stride 2 --pooling max --threads 1 \
    --device "${DEVICE:-auto}" --no-progress

# 3. figures on the unseen test phantoms (masks used only here, to measure)
$insight evaluate "$WORK/test" --model "$WORK/run/best.pt" --out "$WORK/eval" --no-progress
echo "demo model: $WORK/run/best.pt; figures: $WORK/eval/evaluation.json"
echo "to ship it: cp $WORK/run/best.pt sample-data/models/pe_insight_demo.pt (and update MODEL_CARD.md)"
