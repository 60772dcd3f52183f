"""``/scoring`` routes served by the in-process scoring runner (:mod:`lib.scoring.runner`).

Same paths, parameters and task records as MONAI Label 0.8.5's, which ran each scoring as a
subprocess re-initializing the whole app:

- ``POST /scoring/{method}?run_sync=false`` with an optional JSON body (``{"force": true}``,
  ``{"images": [...]}``): queues the method; answers its task (``id``, ``status``, ...), or with
  ``run_sync=true`` waits for it and answers the finished task with its ``result``. 404 for an
  unknown method, 409 when it cannot run on this server (e.g. ``disagreement`` without
  ``pe_segmentation``).
- ``POST /scoring/``: queues every method that can run; answers ``{method: {"result": task}}``.
- ``GET /scoring/?all=false&check_if_running=false``: the last task (all of them with ``all``; the
  running one with ``check_if_running``); 404 when there is none.
- ``DELETE /scoring/``: asks the running method to stop after its current image.
"""

from __future__ import annotations

from typing import Any, Optional

from fastapi import Depends, HTTPException
from monailabel.config import settings
from monailabel.endpoints.user.auth import RBAC, User
from monailabel.interfaces.utils.app import app_instance
from starlette.concurrency import run_in_threadpool

__all__ = ["api_run_scoring_method", "api_run_all_scoring", "api_scoring_status", "api_stop_scoring"]


def _runner():
    runner = getattr(app_instance(), "scoring_runner", None)
    if runner is None:
        raise HTTPException(status_code=503, detail="scoring is not running on this server yet")
    return runner


def submit_checked(method: str, params: dict[str, Any] | None) -> dict[str, Any]:
    """Queue ``method``; HTTP 404 / 409 / 422 when it does not exist, cannot run, or params are bad."""
    runner = _runner()
    task = runner.methods.get(method)
    if task is None:
        raise HTTPException(status_code=404, detail=f"no scoring method {method!r} on this server (available: "
                                                    f"{', '.join(sorted(runner.methods)) or 'none'})")
    reason = task.unavailable_reason() if hasattr(task, "unavailable_reason") else None
    if reason:
        raise HTTPException(status_code=409, detail=reason)
    images = (params or {}).get("images")
    if images is not None and not (isinstance(images, list) and all(isinstance(i, str) for i in images)):
        raise HTTPException(status_code=422, detail="images must be a list of image ids")
    return runner.submit(method, params)


def _run(method: str, params: dict[str, Any] | None, run_sync: bool) -> dict[str, Any]:
    task = submit_checked(method, params)
    if run_sync:
        _runner().wait(task)
    return dict(task)


async def api_run_scoring_method(
    method: str,
    params: Optional[dict] = None,
    run_sync: Optional[bool] = False,
    user: User = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_ANNOTATOR)),
):
    """Run one scoring method (in the server's scoring thread)."""
    return await run_in_threadpool(_run, method, params, bool(run_sync))


def _run_all(params: Optional[dict], run_sync: bool) -> dict[str, Any]:
    runner = _runner()
    results: dict[str, Any] = {}
    for method, task in runner.methods.items():
        reason = task.unavailable_reason() if hasattr(task, "unavailable_reason") else None
        if reason:
            results[method] = {"result": None, "detail": reason}
            continue
        submitted = runner.submit(method, (params or {}).get(method))
        results[method] = {"result": submitted, "detail": None}
    if run_sync:
        for entry in results.values():
            if entry["result"] is not None:
                runner.wait(entry["result"])
    return {m: {"result": dict(e["result"]) if e["result"] else None, "detail": e["detail"]}
            for m, e in results.items()}


async def api_run_all_scoring(
    params: Optional[dict] = None,
    run_sync: Optional[bool] = False,
    user: User = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_ANNOTATOR)),
):
    """Run every scoring method that can run."""
    return await run_in_threadpool(_run_all, params, bool(run_sync))


async def api_scoring_status(
    all: bool = False,
    check_if_running: bool = False,
    user: User = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_USER)),
):
    """The last (or running, or every) scoring task."""
    runner = _runner()
    if check_if_running:
        task = runner.running()
        if task is None:
            raise HTTPException(status_code=404, detail="No Scoring Tasks are currently Running")
        return task
    tasks = runner.tasks()
    if not tasks:
        raise HTTPException(status_code=404, detail="No Scoring Tasks Found")
    return tasks if all else tasks[-1]


async def api_stop_scoring(user: User = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_ANNOTATOR))):
    """Ask the running scoring method to stop after its current image."""
    return _runner().stop() or {}
