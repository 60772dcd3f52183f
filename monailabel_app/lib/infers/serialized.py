"""What the app's infer tasks share: reading the request's image and running a predictor under a lock."""

from __future__ import annotations

import os
import threading
import time
from typing import Any, Callable

from insight.errors import InputError, InsightError
from insight.io import case_name

__all__ = ["request_image", "predict_serialized", "dicom_header_folder"]

#: The converted volume MONAI Label's DICOMweb cache keeps beside each series folder.
_CACHED_VOLUME_SUFFIX = ".nii.gz"


def request_image(request: dict[str, Any]) -> tuple[str, str | None]:
    """(server path of the image, the client's upload file name or None); InputError without an image."""
    image = request.get("image")
    if not isinstance(image, str) or not image:
        raise InputError("no input image: pass ?image=<datastore image id> or upload a file")
    return image, request.get("client_filename") or None


def dicom_header_folder(image: str) -> str | None:
    """The DICOM series folder a cached volume was converted from, or None.

    A DICOMweb datastore caches series ``<uid>`` as ``<cache>/<uid>/*.dcm`` and serves
    ``<cache>/<uid>.nii.gz`` to infer tasks; the headers in the folder carry what the NIfTI lost
    (true slice positions, modality, body part), which QA needs.
    """
    if not image.endswith(_CACHED_VOLUME_SUFFIX):
        return None
    folder = image[: -len(_CACHED_VOLUME_SUFFIX)]
    try:
        return folder if os.path.isdir(folder) and any(entry.is_file() for entry in os.scandir(folder)) else None
    except OSError:
        return None


def predict_serialized(lock: threading.Lock, get_predictor: Callable[[], Any], image: str,
                       client_name: str | None, **predict_options: Any) -> Any:
    """``get_predictor().predict_file(image, **predict_options)`` under ``lock``, one request at a time.

    The predictor is taken inside the lock (a reload cannot swap it mid-call). The result's
    ``timings_s`` gains ``queue`` (seconds waited for the lock); for an upload, the result is named
    after the client's file, and errors mention that file instead of the server's temporary path.
    """
    queued = time.perf_counter()
    with lock:
        waited = time.perf_counter() - queued
        try:
            result = get_predictor().predict_file(image, **predict_options)
        except InsightError as err:
            raise _renamed(err, image, client_name) from err
    result.timings_s = {"queue": waited, **result.timings_s}
    if client_name:
        result.name = case_name(client_name)
        result.source = f"upload:{client_name}"
    return result


def _renamed(err: InsightError, server_path: str, client_name: str | None) -> InsightError:
    """The same error with the server's temporary upload name replaced by the client's file name."""
    if not client_name:
        return err
    message = str(err).replace(server_path, client_name).replace(os.path.basename(server_path), client_name)
    return type(err)(message)
