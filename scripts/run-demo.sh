#!/usr/bin/env bash
# Set up (first run only) and start the MONAI Label server on the sample studies with the shipped
# demo model, bound to 127.0.0.1 only. PORT=8000 by default.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

PORT="${PORT:-8000}"
STUDIES="${STUDIES:-sample-data/studies}"
MODEL="${INSIGHT_MODEL_PATH:-sample-data/models/pe_insight_demo.pt}"
echo "SlicerInsight: serving $STUDIES with model $MODEL"
echo "SlicerInsight: server URL http://127.0.0.1:${PORT}  (stop with Ctrl-C)"
exec .venv/bin/python -m monailabel.main start_server --app monailabel_app --studies "$STUDIES" \
    --host 127.0.0.1 --port "$PORT" --conf model_path "$MODEL"
