"""Small helpers shared by this app's routes: JSON bodies and datastore look-ups with readable HTTP errors."""

from __future__ import annotations

import json
from typing import Any

from fastapi import HTTPException, Request

__all__ = ["parse_json_object", "read_json_body", "require_image"]


def parse_json_object(text: str | None, what: str = "params") -> dict[str, Any]:
    """``text`` as a JSON object ({} for empty); HTTP 422 for invalid JSON or another JSON type."""
    if not text:
        return {}
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError as err:
        raise HTTPException(status_code=422, detail=f"{what} is not valid JSON: {err}") from err
    if not isinstance(parsed, dict):
        raise HTTPException(status_code=422, detail=f"{what} must be a JSON object, got {type(parsed).__name__}")
    return parsed


async def read_json_body(request: Request) -> dict[str, Any]:
    """The request body as a JSON object; HTTP 422 when it is missing, invalid or not an object."""
    body = await request.body()
    if not body.strip():
        raise HTTPException(status_code=422, detail="request body missing: send a JSON object")
    return parse_json_object(body.decode("utf-8", errors="replace"), "request body")


def require_image(datastore: Any, image: str) -> None:
    """HTTP 404 unless ``image`` is an image id of ``datastore``."""
    has_image = getattr(datastore, "has_image", None)
    found = has_image(image) if callable(has_image) else bool(datastore.get_image_uri(image))
    if not found:
        raise HTTPException(status_code=404, detail=f"image {image!r} not found in the datastore "
                                                    "(GET /datastore/?output=all lists the image ids)")
