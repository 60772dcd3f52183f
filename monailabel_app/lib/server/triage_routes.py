"""``GET /insight/worklist``: the datastore's images as a reading worklist (PE probability and QA state).

Answers ``{"model_version", "flag_threshold", "counts": {"suspected_pe", "qa_failed", "not_analysed",
"routine"}, "worklist": [{"rank", "name", "priority", "state", "pe_probability", "qa_verdict",
"qa_codes", "qa_summary", "label", ...}], "sync": {...}}``, in reading order: suspected PE (QA readable,
p >= ``threshold``), QA failed (``not_ctpa``, ...: read without the model), not analysed, routine;
highest probability first within each group (:mod:`insight.triage.worklist`). Every datastore image is
listed, whatever its state. ``label`` is the image's weak label (0, 1, "uncertain" or null).

``threshold`` (default 0.5, in [0, 1]) sets the suspected-PE cut. The images are analysed as for
``/insight/similar`` (:mod:`lib.server.retrieval_routes`: one pass per new or changed image with the
served model; ``sync=false`` answers from what is analysed already). No model loaded 503; a remote
datastore 501.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query
from monailabel.config import settings
from monailabel.endpoints.user.auth import RBAC, User

from insight.errors import InsightError
from insight.triage import DEFAULT_FLAG_THRESHOLD
from lib.server.retrieval_routes import synced_catalog
from lib.server.route_replacement import include_routers_once, server_app

__all__ = ["router", "install_triage_routes"]

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/insight", tags=["SlicerInsight: retrieval and triage"])


def _worklist(threshold: float, sync: bool) -> dict[str, Any]:
    catalog, images, labels, report, _ = synced_catalog(sync)
    worklist = catalog.worklist(images, threshold)
    index = catalog.index()
    answer = worklist.to_json()
    for entry in answer["worklist"]:
        entry["label"] = labels.get(entry["name"])
    return {"model_version": index.model_version if index is not None else None, **answer,
            "sync": report.to_dict() if report is not None else None}


@router.get("/worklist", summary="Datastore images in reading order: PE probability and QA state")
def api_worklist(threshold: float = Query(DEFAULT_FLAG_THRESHOLD, ge=0.0, le=1.0,
                                          description="PE probability from which a study is suspected PE"),
                 sync: bool = Query(True, description="analyse new or changed images first"),
                 user: User = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_USER))):
    try:
        return _worklist(threshold, sync)
    except InsightError as err:
        raise HTTPException(status_code=503, detail=str(err)) from err


def install_triage_routes(app: FastAPI | None = None) -> None:
    """Add ``GET /insight/worklist`` to the running server (idempotent)."""
    if include_routers_once(app or server_app(), [router], "insight_triage_routes"):
        logger.info("triage route installed: GET /insight/worklist")
