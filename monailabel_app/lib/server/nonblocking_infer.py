"""A POST /infer/{model} route that does not block the server's event loop.

Why: in monailabel 0.8.5 the route ``monailabel.endpoints.infer.api_run_inference`` is an
``async def`` that calls the synchronous ``run_inference`` directly. The whole inference (reading
the volume, the model, writing the result) then runs on the event loop's own thread, and every other
request waits behind it, /info included: one 30 s inference makes the server look dead to every
client. ``MONAI_LABEL_INFER_CONCURRENCY`` does not help (the endpoint still waits for the worker
thread's result inside the event loop), and ``start_server --workers N`` runs N processes with N
model copies.

What: :func:`install_nonblocking_infer` replaces that one APIRoute on the FastAPI app
(``monailabel.app.app``) at app start with :func:`api_run_inference_nonblocking`: the same path,
parameters, RBAC dependency (``RBAC(settings.MONAI_LABEL_AUTH_ROLE_USER)``) and documented
responses, which runs monailabel's own ``run_inference`` in Starlette's worker-thread pool
(``run_in_threadpool``). The event loop stays free for /info, /datastore and the rest while models
run. Infer tasks serialize calls to their model with a lock (one model copy; torch already uses
every core), so concurrent requests queue in worker threads instead of competing for the model.

Also, because this is the one place every infer request passes through:

- readable HTTP errors instead of a bare 500: unknown model 404, image id not in the datastore 404,
  neither image nor file 422, params not a JSON object 422, ``insight.errors.InputError`` (and any
  other ``InsightError``) 422, ``insight.errors.ModelError`` (model not loaded) 503, MONAI Label's
  own exceptions 400, anything else 500; ``detail`` always says what went wrong;
- ``?image=`` must name a datastore image: monailabel itself would also accept any path that exists
  on the server's disk;
- on an error, the background tasks monailabel scheduled (removing the uploaded temp file) still run,
  where FastAPI would drop them;
- it adds two request keys the tasks may read: ``client_filename`` (the uploaded file's name, for
  case names and error messages) and, for ``output=json``, MONAI Label's own
  ``result_write_to_file = False`` so no result image is written just to be deleted.

The heatmap / label files a task returns are deleted by monailabel's ``send_response`` (a background
task after the response is sent) whenever the file is its own (not a datastore label).
"""

from __future__ import annotations

import json
import logging
from typing import Any, Optional

from fastapi import BackgroundTasks, Depends, FastAPI, File, Form, HTTPException, UploadFile
from monailabel.config import settings
from monailabel.endpoints.infer import ResultType, run_inference
from monailabel.endpoints.infer import api_run_inference as monailabel_infer_endpoint
from monailabel.endpoints.user.auth import RBAC, User
from monailabel.interfaces.exception import MONAILabelException
from monailabel.interfaces.utils.app import app_instance
from starlette.concurrency import run_in_threadpool

from insight.errors import InsightError, ModelError
from lib.server.http_errors import parse_json_object
from lib.server.route_replacement import replace_endpoint, server_app

__all__ = ["install_nonblocking_infer", "api_run_inference_nonblocking", "INFER_ROUTE_PATH"]

logger = logging.getLogger(__name__)

#: The route replaced (MONAI Label's API prefix, empty by default, plus the router's path).
INFER_ROUTE_PATH = f"{settings.MONAI_LABEL_API_STR}/infer/{{model}}"


async def api_run_inference_nonblocking(
    background_tasks: BackgroundTasks,
    model: str,
    image: str = "",
    session_id: str = "",
    params: str = Form("{}"),
    file: UploadFile = File(None),
    label: UploadFile = File(None),
    output: Optional[ResultType] = None,
    user: User = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_USER)),
):
    """monailabel's ``run_inference``, run in a worker thread so the event loop keeps serving."""
    try:
        return await run_in_threadpool(_run_inference_checked, background_tasks, model, image, session_id,
                                       params, file, label, output)
    except Exception:
        # FastAPI runs background tasks only with a successful response; remove the upload anyway.
        await background_tasks()
        background_tasks.tasks.clear()
        raise


def _run_inference_checked(background_tasks: BackgroundTasks, model: str, image: str, session_id: str,
                           params: str, file: UploadFile | None, label: UploadFile | None,
                           output: ResultType | None) -> Any:
    """Validate the request, run ``run_inference`` and turn failures into readable HTTP errors."""
    instance = app_instance()
    models = instance.info().get("models", {})
    if model not in models:
        available = ", ".join(sorted(models)) or "none"
        raise HTTPException(status_code=404, detail=f"no infer model {model!r} on this server (available: {available})")

    request_params = parse_json_object(params)
    if file and file.filename:
        request_params.setdefault("client_filename", file.filename)
    if not file and not session_id:
        if not image:
            raise HTTPException(status_code=422, detail="no input: pass ?image=<datastore image id> or upload a "
                                                        "file (multipart field 'file')")
        _require_datastore_image(instance, image)
    if output == ResultType.json:
        request_params.setdefault("result_write_to_file", False)

    try:
        return run_inference(background_tasks, model, image, session_id, json.dumps(request_params), file, label,
                             output)
    except HTTPException:
        raise
    except ModelError as err:
        raise HTTPException(status_code=503, detail=str(err)) from err
    except InsightError as err:
        raise HTTPException(status_code=422, detail=str(err)) from err
    except MONAILabelException as err:
        raise HTTPException(status_code=400, detail=str(err.msg)) from err
    except Exception as err:
        logger.exception("inference with model %s failed", model)
        raise HTTPException(status_code=500, detail=f"inference failed: {type(err).__name__}: {err}") from err


def _require_datastore_image(instance: Any, image: str) -> None:
    try:
        uri = instance.datastore().get_image_uri(image)
    except Exception as err:  # remote datastores raise their own errors for unknown ids
        raise HTTPException(status_code=404, detail=f"image {image!r} not found in the datastore: {err}") from err
    if not uri:
        raise HTTPException(status_code=404, detail=f"image {image!r} not found in the datastore "
                                                    "(GET /datastore/?output=all lists the image ids)")


def install_nonblocking_infer(app: FastAPI | None = None) -> bool:
    """Replace the POST /infer/{model} route of ``app`` (default ``monailabel.app.app``) in place.

    Finds monailabel's route by its endpoint function wherever FastAPI keeps it (see
    :func:`lib.server.route_replacement.replace_endpoint`). Idempotent. Returns True when the route
    was replaced, False when it already was or was not found (then inference still blocks the
    event loop, and a warning says so).
    """
    replaced = replace_endpoint(app or server_app(), monailabel_infer_endpoint, api_run_inference_nonblocking, "POST")
    if replaced:
        logger.info("POST %s now runs inference in worker threads; the event loop keeps serving /info",
                    INFER_ROUTE_PATH)
    return replaced
