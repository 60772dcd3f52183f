"""What the app's infer tasks share: reading the request's image and running a predictor under a lock."""

from __future__ import annotations

import os
import threading
import time
from typing import Any, Callable

from insight.errors import InputError, InsightError
from insight.io import case_name

__all__ = ["request_image", "predict_serialized"]


def request_image(request: dict[str, Any]) -> tuple[str, str | None]:
    """(server path of the image, the client's upload file name or None); InputError without an image."""
    image = request.get("image")
    if not isinstance(image, str) or not image:
        raise InputError("no input image: pass ?image=<datastore image id> or upload a file")
    return image, request.get("client_filename") or None


def predict_serialized(lock: threading.Lock, get_predictor: Callable[[], Any], image: str,
                       client_name: str | None) -> Any:
    """``get_predictor().predict_file(image)`` under ``lock``, one request at a time.

    The predictor is taken inside the lock (a reload cannot swap it mid-call). The result's
    ``timings_s`` gains ``queue`` (seconds waited for the lock); for an upload, the result is named
    after the client's file, and errors mention that file instead of the server's temporary path.
    """
    queued = time.perf_counter()
    with lock:
        waited = time.perf_counter() - queued
        try:
            result = get_predictor().predict_file(image)
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
