"""A background thread that loads newly published checkpoints, so /info shows them without an /infer call.

Every ``interval_s`` seconds it calls ``refresh()`` on each infer task that has one (one ``stat``
each when nothing changed; see :meth:`lib.infers.pe_insight.PEInsightInfer.refresh`). The infer
tasks also refresh at the start of each call, so an inference never waits for this thread.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable

__all__ = ["ModelWatcher"]

logger = logging.getLogger(__name__)


class ModelWatcher:
    """Polls ``tasks()`` (name -> infer task) for changed checkpoints in a daemon thread."""

    def __init__(self, tasks: Callable[[], dict[str, Any]], interval_s: float = 2.0) -> None:
        if not interval_s > 0:
            raise ValueError(f"model watch interval must be > 0 s, got {interval_s}")
        self._tasks = tasks
        self.interval_s = float(interval_s)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="MODEL-WATCH", daemon=True)

    def start(self) -> "ModelWatcher":
        self._thread.start()
        logger.info("watching published checkpoints every %.1f s", self.interval_s)
        return self

    def stop(self) -> None:
        self._stop.set()

    def check_once(self) -> list[str]:
        """Refresh every task now; returns the names of those that now serve a new model."""
        changed = []
        for name, task in self._tasks().items():
            refresh = getattr(task, "refresh", None)
            if not callable(refresh):
                continue
            try:
                if refresh():
                    changed.append(name)
            except Exception:  # never let one task's problem end the watcher
                logger.exception("checking %s for a new checkpoint failed", name)
        return changed

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.check_once()
