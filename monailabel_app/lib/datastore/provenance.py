"""Label provenance: who saved a label, when, how it was made and from which model version's proposal.

A client saving a label (``PUT /datastore/label``) passes these keys in the ``params`` JSON (all
optional):

============== ====================================================================================
key            meaning
============== ====================================================================================
``annotator``  who made the label (free text, at most 200 characters). Without it, the server's
               authenticated user name (``admin`` when MONAI Label runs without auth). With auth
               enabled the authenticated user always wins and ``annotator`` is kept beside it.
``method``     how it was made: ``pseudo`` (a model's proposal saved unchanged), ``edited`` (a
               model's proposal corrected by hand) or ``manual`` (drawn from scratch). Default:
               ``edited`` when ``model_version`` is given, else ``manual``.
``model_version`` the version of the model whose proposal the label started from (required for
               ``pseudo`` and ``edited``).
``model``      the infer model that made that proposal (e.g. ``pe_segmentation``), optional.
``uncertainty`` a free-text note on what the annotator is unsure about (at most 2000 characters).
``client_id``  the client's id (as passed to /activelearning); saving releases its lease.
============== ====================================================================================

Stored in the label's info (``GET /datastore/label/info``) and in the image's version list under
``provenance``: ``saved_by``, ``auth_user``, ``saved_at`` (ISO 8601, UTC), ``method``,
``model_version``, ``model``, ``uncertainty``, ``client_id``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass
from typing import Any, Mapping

from insight.errors import InputError

__all__ = ["LABEL_METHODS", "PROVENANCE_PARAM_KEYS", "LabelProvenance", "provenance_from_params",
           "provenance_for_model_output", "utc_now_iso"]

#: How a label can be made.
LABEL_METHODS = ("pseudo", "edited", "manual")
#: The ``params`` keys read by :func:`provenance_from_params`.
PROVENANCE_PARAM_KEYS = ("annotator", "method", "model_version", "model", "uncertainty", "client_id")

_MAX_NAME = 200
_MAX_NOTE = 2000


def utc_now_iso() -> str:
    """The current time as ISO 8601 in UTC, to the second (``2026-11-03T10:15:42Z``)."""
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class LabelProvenance:
    """Where one saved label came from (see the module docstring for each field)."""

    saved_by: str
    saved_at: str
    method: str
    model_version: str | None = None
    model: str | None = None
    uncertainty: str | None = None
    client_id: str | None = None
    auth_user: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _optional_text(params: Mapping[str, Any], key: str, limit: int) -> str | None:
    value = params.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise InputError(f"label params: {key!r} must be a string, got {type(value).__name__}")
    value = value.strip()
    if len(value) > limit:
        raise InputError(f"label params: {key!r} is {len(value)} characters long (at most {limit})")
    return value or None


def provenance_from_params(params: Mapping[str, Any], auth_user: str | None, auth_enabled: bool = False,
                           now: str | None = None) -> LabelProvenance:
    """Validate the provenance keys of a save-label request.

    Args:
        params: the request's ``params`` JSON object.
        auth_user: the user name MONAI Label authenticated (``admin`` without auth).
        auth_enabled: whether MONAI Label's auth is on (then ``auth_user`` is who saved it).
        now: the save time (ISO 8601); default now.

    Raises:
        InputError: a key of the wrong type, an unknown ``method``, or ``pseudo``/``edited`` without
            ``model_version``.
    """
    annotator = _optional_text(params, "annotator", _MAX_NAME)
    model_version = _optional_text(params, "model_version", _MAX_NAME)
    model = _optional_text(params, "model", _MAX_NAME)
    uncertainty = _optional_text(params, "uncertainty", _MAX_NOTE)
    client_id = _optional_text(params, "client_id", _MAX_NAME)
    method = _optional_text(params, "method", _MAX_NAME)
    if method is None:
        method = "edited" if model_version else "manual"
    if method not in LABEL_METHODS:
        raise InputError(f"label params: method must be one of {', '.join(LABEL_METHODS)}, got {method!r}")
    if method in ("pseudo", "edited") and not model_version:
        raise InputError(f"label params: method {method!r} needs model_version (the version of the model whose "
                         "proposal the label started from)")
    saved_by = (auth_user if auth_enabled else annotator) or annotator or auth_user or "anonymous"
    return LabelProvenance(saved_by=saved_by, saved_at=now or utc_now_iso(), method=method,
                           model_version=model_version, model=model, uncertainty=uncertainty, client_id=client_id,
                           auth_user=auth_user)


def provenance_for_model_output(label_info: Mapping[str, Any]) -> LabelProvenance:
    """Provenance of a label the server saved itself (MONAI Label's ``/infer?save_label=true``).

    MONAI Label passes ``{"model": <infer model>, "params": <its JSON answer>}``: a pseudo label of
    that model; a label info without ``model`` is recorded as ``manual`` by ``server``.
    """
    model = label_info.get("model") if isinstance(label_info.get("model"), str) else None
    answer = label_info.get("params") if isinstance(label_info.get("params"), Mapping) else {}
    version = answer.get("model_version") if isinstance(answer.get("model_version"), str) else None
    return LabelProvenance(saved_by="server", saved_at=utc_now_iso(), method="pseudo" if model else "manual",
                           model_version=version, model=model)
