"""REST routes for weak (scan-level) labels, kept in each image's datastore info.

- ``GET /insight/weak-labels``: ``{"labels": {image: record | null}, "counts": {"0", "1", "uncertain", "none"}}``.
- ``GET /insight/weak-labels/{image}``: ``{"image", "pe", "source", "set_by", "set_at", "note"}``
  (``pe`` null when the image has none).
- ``PUT /insight/weak-labels/{image}`` with a JSON body ``{"pe": 0 | 1 | "uncertain", "note": "...",
  "annotator": "..."}`` (note and annotator optional): sets it; answers the record.
- ``DELETE /insight/weak-labels/{image}``: removes it.

Unknown image 404; a bad ``pe`` (anything but 0, 1, "0", "1", "uncertain"), a bad note or a body
that is not a JSON object 422. Record fields: :mod:`lib.datastore.weak_labels`.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from monailabel.config import settings
from monailabel.endpoints.user.auth import RBAC, User
from monailabel.interfaces.utils.app import app_instance
from starlette.concurrency import run_in_threadpool

from insight.errors import InputError
from lib.datastore.weak_labels import SOURCE_REST, UNCERTAIN, WEAK_LABEL_KEY, weak_label_of, weak_label_record
from lib.server.http_errors import read_json_body, require_image

__all__ = ["router"]

router = APIRouter(prefix="/insight/weak-labels", tags=["SlicerInsight: weak labels"])


def _answer(image: str, info: dict[str, Any]) -> dict[str, Any]:
    record = info.get(WEAK_LABEL_KEY) if isinstance(info.get(WEAK_LABEL_KEY), dict) else {"pe": None}
    return {"image": image, **record}


@router.get("", summary="Every image's weak (scan-level) PE label")
def api_weak_labels(user: User = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_USER))):
    datastore = app_instance().datastore()
    labels, counts = {}, {"0": 0, "1": 0, UNCERTAIN: 0, "none": 0}
    for image in sorted(datastore.list_images()):
        info = datastore.get_image_info(image)
        value = weak_label_of(info)
        counts["none" if value is None else str(value)] += 1
        labels[image] = info.get(WEAK_LABEL_KEY) if value is not None else None
    return {"labels": labels, "counts": counts}


@router.get("/{image}", summary="One image's weak (scan-level) PE label")
def api_weak_label(image: str, user: User = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_USER))):
    datastore = app_instance().datastore()
    require_image(datastore, image)
    return _answer(image, datastore.get_image_info(image))


@router.put("/{image}", summary="Set an image's weak (scan-level) PE label: 0, 1 or 'uncertain'")
async def api_set_weak_label(image: str, request: Request,
                             user: User = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_ANNOTATOR))):
    body = await read_json_body(request)
    return await run_in_threadpool(_set_weak_label, image, body, user.username)


def _set_weak_label(image: str, body: dict[str, Any], username: str) -> dict[str, Any]:
    datastore = app_instance().datastore()
    require_image(datastore, image)
    if "pe" not in body:
        raise HTTPException(status_code=422, detail=f"request body needs 'pe': 0, 1 or {UNCERTAIN!r}")
    annotator = body.get("annotator")
    if annotator is not None and not isinstance(annotator, str):
        raise HTTPException(status_code=422, detail="annotator must be a string")
    set_by = username if settings.MONAI_LABEL_AUTH_ENABLE else (annotator or username)
    try:
        record = weak_label_record(body["pe"], SOURCE_REST, set_by, body.get("note"))
    except InputError as err:
        raise HTTPException(status_code=422, detail=f"weak label for {image!r}: {err}") from err

    def put(infos: dict[str, dict[str, Any]]) -> bool:
        if image not in infos:
            raise HTTPException(status_code=404, detail=f"image {image!r} not found in the datastore")
        infos[image][WEAK_LABEL_KEY] = record
        return True

    datastore.update_image_infos(put)
    return {"image": image, **record}


@router.delete("/{image}", summary="Remove an image's weak (scan-level) PE label")
def api_remove_weak_label(image: str, user: User = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_ANNOTATOR))):
    datastore = app_instance().datastore()
    require_image(datastore, image)
    removed = {}

    def drop(infos: dict[str, dict[str, Any]]) -> bool:
        removed["record"] = infos.get(image, {}).pop(WEAK_LABEL_KEY, None)
        return removed["record"] is not None

    datastore.update_image_infos(drop)
    return {"image": image, "pe": None, "removed": removed["record"] is not None}
