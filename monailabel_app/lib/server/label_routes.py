"""Saving labels with provenance and history, and reading that history.

``PUT /datastore/label`` (MONAI Label's route, same parameters: ``?image=<id>&tag=final``, multipart
``label`` file and ``params`` JSON form field) is replaced at start by :func:`api_save_label_versioned`:

- unknown image 404, bad tag / params / provenance keys / file type 422, a label file that is not
  readable or not on the image's voxel grid (size) 422: all before anything is stored;
- the uploaded file is written to a temporary file that is always removed (MONAI Label's route
  left it behind on every error);
- the provenance keys of ``params`` (:mod:`lib.datastore.provenance`) are validated and recorded,
  the earlier label is kept as a version (:class:`lib.datastore.CampaignDatastore`), and saving a
  ``final`` label releases the image's lease. Runs in a worker thread (the event loop keeps serving).

Answer: ``{"image", "label", "tag", "version", "provenance"}``.

New routes:

- ``GET /insight/labels/{image}/versions?tag=final``: ``{"image", "tag", "versions": [...]}``
  (each: ``version``, ``current``, ``file``, ``ext``, ``ts``, ``provenance``), oldest first.
- ``GET /insight/labels/{image}/versions/{version}?tag=final``: that version's label file.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from typing import Any

import SimpleITK as sitk
from fastapi import APIRouter, Depends, File, Form, HTTPException, UploadFile
from fastapi.responses import FileResponse
from monailabel.config import settings
from monailabel.endpoints.user.auth import RBAC, User
from monailabel.interfaces.datastore import DefaultLabelTag
from monailabel.interfaces.exception import ImageNotFoundException
from monailabel.interfaces.utils.app import app_instance
from starlette.concurrency import run_in_threadpool

from insight.errors import InputError, InsightError
from lib.datastore.campaign_datastore import check_label_tag
from lib.datastore.provenance import provenance_from_params
from lib.server.http_errors import parse_json_object, require_image

__all__ = ["api_save_label_versioned", "router", "label_file_extension"]

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/insight/labels", tags=["SlicerInsight: labels"])


def label_file_extension(filename: str | None) -> str:
    """The datastore extension (``.nii.gz``, ``.nrrd``...) of an uploaded label's file name; 422 otherwise."""
    if not filename:
        return ".nii.gz"
    name = filename.lower()
    known = sorted((p.lstrip("*") for p in settings.MONAI_LABEL_DATASTORE_FILE_EXT), key=len, reverse=True)
    for ext in known:
        if name.endswith(ext.lower()):
            return ext
    raise HTTPException(status_code=422, detail=f"label file {filename!r}: unsupported file type (use one of "
                                                f"{', '.join(sorted(set(known)))})")


def _image_size(path: str) -> tuple[int, ...] | None:
    reader = sitk.ImageFileReader()
    reader.SetFileName(path)
    reader.ReadImageInformation()
    return tuple(reader.GetSize())


def _check_label_grid(label_path: str, image_path: str, client_name: str) -> None:
    """422 unless the label file is a readable image of the image's size (header reads only)."""
    try:
        label_size = _image_size(label_path)
    except RuntimeError as err:
        lines = [line for line in str(err).strip().splitlines() if line.strip()]
        reason = (lines[-1] if lines else type(err).__name__).replace(label_path, client_name)
        raise HTTPException(status_code=422, detail=f"label file {client_name!r} cannot be read as an image: "
                                                    f"{reason}") from err
    try:
        image_size = _image_size(image_path) if os.path.isfile(image_path) else None
    except RuntimeError:
        image_size = None  # the image's own reader (e.g. DICOM) differs: size not checked here
    if image_size is not None and label_size != image_size:
        raise HTTPException(status_code=422, detail=f"label file {client_name!r} has size {list(label_size)}, "
                                                    f"the image has {list(image_size)}: a label must be on the "
                                                    "image's grid")


def save_label_versioned(image: str, params: str, tag: str, label: UploadFile, username: str) -> dict[str, Any]:
    """Validate, store the upload in a temporary file, save it as a new label version, clean up."""
    instance = app_instance()
    datastore = instance.datastore()
    tag = tag or DefaultLabelTag.FINAL.value
    try:
        check_label_tag(tag)
    except InputError as err:
        raise HTTPException(status_code=422, detail=str(err)) from err
    require_image(datastore, image)
    request_params = parse_json_object(params)
    try:
        provenance = provenance_from_params(request_params, username, settings.MONAI_LABEL_AUTH_ENABLE)
    except InputError as err:
        raise HTTPException(status_code=422, detail=str(err)) from err
    ext = label_file_extension(label.filename)
    client_name = label.filename or f"label{ext}"

    fd, temp_path = tempfile.mkstemp(prefix="label_upload_", suffix=ext)
    try:
        with os.fdopen(fd, "wb") as handle:
            shutil.copyfileobj(label.file, handle)
        _check_label_grid(temp_path, datastore.get_image_uri(image), client_name)
        info = {k: v for k, v in request_params.items() if k != "provenance"}
        info["provenance"] = provenance.to_dict()
        try:
            label_id = datastore.save_label(image, temp_path, tag, info)
        except ImageNotFoundException as err:  # removed meanwhile
            raise HTTPException(status_code=404, detail=f"image {image!r} not found in the datastore") from err
        except InputError as err:  # e.g. a label off the source series' grid (PACS datastore)
            raise HTTPException(status_code=422, detail=str(err)) from err
        except InsightError as err:  # e.g. the PACS refused the DICOM SEG
            raise HTTPException(status_code=502, detail=f"the label could not be stored: {err}") from err
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp_path)

    if tag == DefaultLabelTag.FINAL.value:
        release = getattr(instance, "release_lease", None)
        if callable(release):
            release(image)
    answer = instance.on_save_label(image, label_id) or {}
    versions_of = getattr(datastore, "label_versions", None)
    version = versions_of(image, tag)[-1]["version"] if callable(versions_of) else None
    answer.update({"image": image, "label": label_id, "tag": tag, "version": version,
                   "provenance": provenance.to_dict()})
    return answer


async def api_save_label_versioned(
    image: str,
    params: str = Form("{}"),
    tag: str = DefaultLabelTag.FINAL.value,
    label: UploadFile = File(...),
    user: User = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_ANNOTATOR)),
):
    """Save a label (a new version; the earlier one is kept) with its provenance."""
    return await run_in_threadpool(save_label_versioned, image, params, tag, label, user.username)


def _versions(image: str, tag: str) -> list[dict[str, Any]]:
    datastore = app_instance().datastore()
    versions_of = getattr(datastore, "label_versions", None)
    if not callable(versions_of):
        raise HTTPException(status_code=501, detail="this datastore keeps no label history (local studies only)")
    try:
        return versions_of(image, tag)
    except InputError as err:
        raise HTTPException(status_code=422, detail=str(err)) from err
    except ImageNotFoundException as err:
        raise HTTPException(status_code=404, detail=f"image {image!r} not found in the datastore") from err


@router.get("/{image}/versions", summary="Every saved version of an image's label, with provenance")
def api_label_versions(image: str, tag: str = DefaultLabelTag.FINAL.value,
                       user: User = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_USER))):
    return {"image": image, "tag": tag, "versions": _versions(image, tag)}


@router.get("/{image}/versions/{version}", summary="Download one version of an image's label")
def api_label_version_file(image: str, version: int, tag: str = DefaultLabelTag.FINAL.value,
                           user: User = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_USER))):
    _versions(image, tag)  # 404 / 422 first
    path = app_instance().datastore().label_version_path(image, tag, version)
    if path is None:
        raise HTTPException(status_code=404, detail=f"no version {version} of the {tag!r} label of {image!r}")
    return FileResponse(str(path), media_type="application/octet-stream", filename=f"{image}_{tag}_v{version}"
                                                                                    f"{''.join(path.suffixes)}")
