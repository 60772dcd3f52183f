"""``GET /insight/similar/{image}``: the datastore images most similar to one, by case embedding.

Answers ``{"image", "model_version", "k", "similar": [{"rank", "image", "score", "label",
"pe_probability", "qa_verdict"}], "sync": {...}}``: ``score`` is the cosine similarity of the two
studies' embeddings (1 = identical; :mod:`insight.embeddings`), ``label`` the image's weak
(scan-level) label now (0, 1, "uncertain" or null), the image itself left out. ``k`` (default 5,
1-100) says how many. Unknown image 404; an image that could not be analysed 422 (the message says
why); no model loaded 503; a remote (DICOMweb) datastore 501.

The studies are kept analysed by a :class:`insight.triage.StudyCatalog` in ``<studies>/.insight``
(prediction JSONs in ``predictions/``, the faiss index in ``retrieval/``): before answering, every
image that arrived or changed since the last request is predicted once with the served model (under
its lock, one image at a time, so /infer interleaves) and added to the index, and the whole index is
rebuilt when the served model version changes. ``sync=false`` answers from what is analysed already.
``sync`` in the answer says what was done. ``GET /insight/worklist`` (:mod:`lib.server.triage_routes`)
shares the catalog.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query
from monailabel.config import settings
from monailabel.endpoints.user.auth import RBAC, User
from monailabel.interfaces.utils.app import app_instance

from insight.errors import InputError, InsightError
from insight.triage import StudyCatalog, SyncReport
from lib.datastore import RUNTIME_DIR
from lib.datastore.weak_labels import weak_label_of
from lib.server.http_errors import require_image
from lib.server.route_replacement import include_routers_once, server_app

__all__ = ["router", "install_retrieval_routes", "synced_catalog", "INSIGHT_MODEL"]

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/insight", tags=["SlicerInsight: retrieval and triage"])
#: The infer task whose model analyses the studies.
INSIGHT_MODEL = "pe_insight"
_catalogs: dict[str, StudyCatalog] = {}
_catalogs_lock = threading.Lock()


def _catalog_for(studies: str) -> StudyCatalog:
    folder = os.path.join(studies, RUNTIME_DIR)
    with _catalogs_lock:
        if folder not in _catalogs:
            _catalogs[folder] = StudyCatalog(folder)
        return _catalogs[folder]


def synced_catalog(sync: bool = True) -> tuple[StudyCatalog, dict[str, str], dict[str, Any], SyncReport | None, Any]:
    """The app's study catalog, brought up to date with the datastore and the served model first.

    Returns:
        (catalog, {image id: path}, {image id: weak label}, the sync report or None, the datastore).

    Raises:
        HTTPException: 501 for a remote datastore, 503 when the pe_insight model is not loaded.
    """
    instance = app_instance()
    studies = str(getattr(instance, "studies", ""))
    if studies.startswith(("http://", "https://")) or not os.path.isdir(studies):
        raise HTTPException(status_code=501, detail="similar cases and the worklist need a local studies folder; "
                                                    "this server's datastore is remote")
    datastore = instance.datastore()
    images = {image: datastore.get_image_uri(image) for image in datastore.list_images()}
    labels = {image: weak_label_of(datastore.get_image_info(image)) for image in images}
    catalog = _catalog_for(studies)
    if not sync:
        return catalog, images, labels, None, datastore
    # MONAILabelApp 0.8.5 keeps its infer tasks in _infers and has no public accessor for them.
    infer = getattr(instance, "_infers", {}).get(INSIGHT_MODEL)
    if infer is None or not getattr(infer, "ready", False):
        reason = getattr(infer, "load_error", None) or "this server does not serve it"
        raise HTTPException(status_code=503, detail=f"the {INSIGHT_MODEL} model is not loaded: {reason}")

    def predict(path: Path):
        with infer.exclusive_predictor() as predictor:
            return predictor.predict_file(path)

    report = catalog.sync(images, predict, infer.model_version, labels)
    return catalog, images, labels, report, datastore


def _similar(image: str, k: int, sync: bool) -> dict[str, Any]:
    require_image(app_instance().datastore(), image)
    catalog, _, labels, report, _ = synced_catalog(sync)
    try:
        answers = catalog.similar(image, k)
    except InputError as err:
        raise HTTPException(status_code=422, detail=str(err)) from err
    index = catalog.index()
    similar = []
    for answer in answers:
        record = catalog.prediction(answer.case_id) or {}
        similar.append({"rank": answer.rank, "image": answer.case_id, "score": answer.score,
                        "label": labels.get(answer.case_id, answer.label),
                        "pe_probability": record.get("pe_probability"),
                        "qa_verdict": (record.get("qa") or {}).get("verdict")})
    return {"image": image, "model_version": index.model_version if index is not None else None, "k": k,
            "similar": similar, "sync": report.to_dict() if report is not None else None}


@router.get("/similar/{image}", summary="The k datastore images most similar to an image (case embeddings)")
def api_similar(image: str, k: int = Query(5, ge=1, le=100, description="how many similar images"),
                sync: bool = Query(True, description="analyse new or changed images first"),
                user: User = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_USER))):
    try:
        return _similar(image, k, sync)
    except InsightError as err:  # a model or file problem during the sync
        raise HTTPException(status_code=503, detail=str(err)) from err


def install_retrieval_routes(app: FastAPI | None = None) -> None:
    """Add ``GET /insight/similar/{image}`` to the running server (idempotent)."""
    if include_routers_once(app or server_app(), [router], "insight_retrieval_routes"):
        logger.info("retrieval route installed: GET /insight/similar/{image}")
