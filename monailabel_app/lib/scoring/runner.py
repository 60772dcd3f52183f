"""Runs scoring methods in the server process, one at a time, in a background thread.

Why not MONAI Label's way: 0.8.5 starts every scoring run as a subprocess that initializes the
whole app again (about 15 s and a second copy of every model here) and, with
``MONAI_LABEL_AUTO_UPDATE_SCORING``, after every /activelearning call. Here the methods share the
models /infer serves (so scores come from exactly the served version) and skip images already scored
by it, which makes the automatic runs (at start, after each training, after each sample) cheap.

Tasks are recorded like MONAI Label's (``id``, ``status`` SUBMITTED/RUNNING/DONE/ERROR/STOPPED,
``request``, ``start_ts``, ``end_ts``) plus ``result`` or ``error``. A method already waiting in the
queue is not queued twice (the waiting task is returned). ``stop()`` asks the running method to stop
after the current image. The worker is a daemon thread: a server shutting down does not wait for a
long scoring run (every datastore write is atomic, so nothing is left half-written).
"""

from __future__ import annotations

import datetime as dt
import logging
import queue
import threading
import uuid
from collections import deque
from typing import Any, Callable

from insight.errors import InsightError

__all__ = ["ScoringRunner"]

logger = logging.getLogger(__name__)

#: How many finished tasks are remembered for ``GET /scoring/?all=true``.
_HISTORY = 50


def _now() -> str:
    return dt.datetime.now().strftime("%Y-%m-%d %H:%M:%S")


class ScoringRunner:
    """A single worker thread running scoring methods on the app's datastore.

    Args:
        methods: name -> scoring method (``method(request, datastore, should_stop=...)``).
        datastore: returns the datastore to score.
    """

    def __init__(self, methods: dict[str, Any], datastore: Callable[[], Any]) -> None:
        self.methods = methods
        self._datastore = datastore
        self._lock = threading.Lock()
        self._tasks: deque[dict[str, Any]] = deque(maxlen=_HISTORY)
        self._done: dict[str, threading.Event] = {}
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._stop = threading.Event()
        self._worker = threading.Thread(target=self._work, name="SCORING", daemon=True)
        self._worker.start()

    def submit(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """Queue ``method``; returns its task record (an already waiting one for the same request).

        Raises:
            KeyError: no such method.
        """
        if method not in self.methods:
            raise KeyError(method)
        request = {"method": method, **(params or {})}
        with self._lock:
            for task in self._tasks:
                if task["status"] == "SUBMITTED" and task["request"] == request:
                    return task
            task = {"id": str(uuid.uuid4()), "status": "SUBMITTED", "request": request, "start_ts": _now()}
            self._tasks.append(task)
            self._done[task["id"]] = threading.Event()
        self._queue.put(task)
        return task

    def _work(self) -> None:
        while True:
            task = self._queue.get()
            if task is None:
                return
            self._run(task)

    def _run(self, task: dict[str, Any]) -> dict[str, Any]:
        method = self.methods[task["request"]["method"]]
        self._stop.clear()
        task["status"] = "RUNNING"
        task["run_ts"] = _now()
        try:
            result = method(dict(task["request"]), self._datastore(), should_stop=self._stop.is_set)
            task["result"] = result
            task["status"] = "STOPPED" if result.get("stopped") else "DONE"
        except InsightError as err:
            task["error"] = str(err)
            task["status"] = "ERROR"
            logger.warning("scoring %s: %s", task["request"]["method"], err)
        except Exception as err:  # a bug must not kill the worker thread; the task says what happened
            task["error"] = f"{type(err).__name__}: {err}"
            task["status"] = "ERROR"
            logger.exception("scoring %s failed", task["request"]["method"])
        finally:
            task["end_ts"] = _now()
            with self._lock:
                done = self._done.pop(task["id"], None)
            if done is not None:
                done.set()
        return task

    def wait(self, task: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
        """Block until ``task`` has finished (or ``timeout`` seconds pass); returns its record."""
        with self._lock:
            done = self._done.get(task["id"])
        if done is not None:
            done.wait(timeout)
        return task

    def tasks(self) -> list[dict[str, Any]]:
        """Every remembered task, oldest first (JSON-ready copies)."""
        with self._lock:
            return [dict(t) for t in self._tasks]

    def running(self) -> dict[str, Any] | None:
        with self._lock:
            return next((dict(t) for t in self._tasks if t["status"] == "RUNNING"), None)

    def stop(self) -> dict[str, Any] | None:
        """Ask the running method to stop after its current image; returns its task (None if idle)."""
        task = self.running()
        if task is not None:
            self._stop.set()
        return task

    def shutdown(self) -> None:
        """Stop the running method after its current image and end the worker after it."""
        self._stop.set()
        self._queue.put(None)
