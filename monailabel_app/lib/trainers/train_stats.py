"""The train-stats JSON file each trainer keeps beside its published model (shown in /info)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from insight.io.atomic import write_json_atomic

__all__ = ["read_stats_file", "record_training_error"]

logger = logging.getLogger(__name__)


def read_stats_file(path: str | Path) -> dict[str, Any]:
    """The stats in ``path`` ({} when none ran; ``{"error": ...}`` for an unreadable file)."""
    path = Path(path)
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        return {"error": f"cannot read {path}: {err}"}


def record_training_error(path: str | Path, model: str, message: str, started: str, finished: str) -> None:
    """Add ``last_error`` (``error``, ``started``, ``finished``: ISO 8601 UTC) to the stats in ``path``,
    keeping the last good run's fields; a write failure is logged, not raised."""
    stats = {k: v for k, v in read_stats_file(path).items() if k != "error"}
    stats["last_error"] = {"error": message, "started": started, "finished": finished}
    stats.setdefault("status", "error")
    try:
        write_json_atomic(path, stats)
    except OSError as err:
        logger.error("cannot write train stats: %s", err)
    logger.error("%s training failed: %s", model, message)
