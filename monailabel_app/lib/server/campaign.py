"""Installs the annotation-campaign routes on the running MONAI Label server (at app start).

Replaced MONAI Label routes (same paths and parameters; see each module):

- ``PUT /datastore/label``: :mod:`lib.server.label_routes` (404/422, provenance, history, no temp leak);
- ``POST /train/{model}``: :mod:`lib.server.train_routes` (404 without a trainer, 422 before a doomed run);
- ``POST /activelearning/{strategy}``: :mod:`lib.server.activelearning_routes` (leases, 404/409);
- ``/scoring`` (POST method, POST all, GET status, DELETE): :mod:`lib.server.scoring_routes`
  (in-process scoring).

New routes under ``/insight``: weak labels (:mod:`lib.server.weak_label_routes`), label versions
(:mod:`lib.server.label_routes`), leases (:mod:`lib.server.lease_routes`).
"""

from __future__ import annotations

import logging

from fastapi import FastAPI
from monailabel.endpoints import activelearning, datastore, scoring, train

from lib.server import (activelearning_routes, label_routes, lease_routes, scoring_routes, train_routes,
                        weak_label_routes)
from lib.server.route_replacement import include_routers_once, replace_endpoint, server_app

__all__ = ["install_campaign_routes"]

logger = logging.getLogger(__name__)

_REPLACEMENTS = (
    (datastore.api_save_label, label_routes.api_save_label_versioned, "PUT"),
    (train.api_run_model, train_routes.api_run_model_checked, "POST"),
    (activelearning.api_sample, activelearning_routes.api_sample_leased, "POST"),
    (scoring.api_run_method, scoring_routes.api_run_scoring_method, "POST"),
    (scoring.api_run, scoring_routes.api_run_all_scoring, "POST"),
    (scoring.api_status, scoring_routes.api_scoring_status, "GET"),
    (scoring.api_stop, scoring_routes.api_stop_scoring, "DELETE"),
)
_ROUTERS = (weak_label_routes.router, label_routes.router, lease_routes.router)


def install_campaign_routes(app: FastAPI | None = None) -> None:
    """Replace MONAI Label's routes listed above and add the ``/insight`` routes (idempotent)."""
    app = app or server_app()
    for old, new, method in _REPLACEMENTS:
        replace_endpoint(app, old, new, method)
    include_routers_once(app, _ROUTERS, "insight_routers_included")
    logger.info("annotation-campaign routes installed (weak labels, label history, leases, checked train, "
                "in-process scoring)")
