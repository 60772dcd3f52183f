"""``POST /train/{model}``, checked before a training process starts.

MONAI Label 0.8.5 accepted any model name ("SUBMITTED") and started a subprocess that could only
fail. The replacement (same path and parameters) answers instead:

- 404 when the model has no trainer (the message lists the ones that do);
- 422 when the trainer says the request or the data cannot work (``validate_request(params)`` and
  ``check_trainable(datastore)``, when the train task has them: e.g. a bad ``epochs`` or no PE and
  no-PE weak labels for ``pe_insight``);
- then MONAI Label's own ``run_model`` (429 while another training runs), in a worker thread.
"""

from __future__ import annotations

from typing import Any, Optional

from fastapi import Depends, HTTPException
from monailabel.config import settings
from monailabel.endpoints.train import run_model
from monailabel.endpoints.user.auth import RBAC, User
from monailabel.interfaces.utils.app import app_instance
from starlette.concurrency import run_in_threadpool

from insight.errors import InputError

__all__ = ["api_run_model_checked", "check_train_request"]


def check_train_request(model: str, params: dict[str, Any] | None) -> None:
    """Raise HTTPException 404 / 422 when training ``model`` with ``params`` cannot work."""
    instance = app_instance()
    trainers = instance.info().get("trainers", {})
    if model not in trainers:
        with_trainer = ", ".join(sorted(trainers)) or "none"
        infer_only = sorted(set(instance.info().get("models", {})) - set(trainers))
        note = f"; infer models without a trainer: {', '.join(infer_only)}" if infer_only else ""
        raise HTTPException(status_code=404, detail=f"no trainer for model {model!r} on this server (models with a "
                                                    f"trainer: {with_trainer}{note})")
    task = instance.train_task(model) if hasattr(instance, "train_task") else None
    try:
        if hasattr(task, "validate_request"):
            task.validate_request(params or {})
        if hasattr(task, "check_trainable"):
            task.check_trainable(instance.datastore())
    except InputError as err:
        raise HTTPException(status_code=422, detail=f"training {model}: {err}") from err


def _run_checked(model: str, params: Optional[dict], run_sync: bool, enqueue: bool) -> Any:
    check_train_request(model, params)
    return run_model(model, params, run_sync, enqueue)


async def api_run_model_checked(
    model: str,
    params: Optional[dict] = None,
    run_sync: Optional[bool] = False,
    enqueue: Optional[bool] = False,
    user: User = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_ADMIN)),
):
    """Start training ``model`` (404 without a trainer, 422 for a request that cannot work)."""
    return await run_in_threadpool(_run_checked, model, params, bool(run_sync), bool(enqueue))
