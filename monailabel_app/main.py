"""SlicerInsight MONAI Label app: PE probability, findings and INSIGHT heatmaps for CTPA volumes, and
the annotation campaign around them (weak labels, versioned labels with provenance, training that
publishes without a restart, active learning with leases).

Start (always name the host; MONAI Label binds 0.0.0.0 otherwise)::

    monailabel start_server --app monailabel_app --studies sample-data/studies \\
        --host 127.0.0.1 --port 8000 [--conf model_path /path/model.pt] [--conf device auto|cpu|cuda]

Layout as in MONAI Label's sample apps: ``lib/configs`` (what each task loads), ``lib/infers`` (the
infer tasks), ``lib/trainers`` (train tasks), ``lib/datastore`` (the campaign datastore),
``lib/activelearning`` and ``lib/scoring`` (strategies, leases, scoring methods) and ``lib/server``
(routes replaced or added at start). Models are loaded once, while the app initializes; importing
this module does no model work. Conf keys: see monailabel_app/README.md.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from monailabel.config import settings
from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.config import TaskConfig
from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.exception import MONAILabelError, MONAILabelException
from monailabel.interfaces.tasks.infer_v2 import InferTask
from monailabel.interfaces.tasks.scoring import ScoringMethod
from monailabel.interfaces.tasks.strategy import Strategy
from monailabel.interfaces.tasks.train import TrainTask
from monailabel.tasks.activelearning.random import Random

import insight
from lib.activelearning import (DEFAULT_LEASE_TIMEOUT_S, LEASES_FILE, DisagreementStrategy, DiversityStrategy,
                                LeaseBook, UncertaintyStrategy)
from lib.activelearning.sampling import next_sample_with_lease
from lib.configs.pe_insight import PEInsightConfig
from lib.configs.pe_segmentation import PESegmentationConfig
from lib.datastore import RUNTIME_DIR, CampaignDatastore, import_label_table
from lib.infers.pe_insight import PEInsightInfer
from lib.scoring import DisagreementScoring, DiversityScoring, ScoringRunner, UncertaintyScoring, segmentation_via_app
from lib.server.campaign import install_campaign_routes
from lib.server.model_watch import ModelWatcher
from lib.server.nonblocking_infer import install_nonblocking_infer
from lib.server.retrieval_routes import install_retrieval_routes
from lib.server.triage_routes import install_triage_routes

logger = logging.getLogger(__name__)

APP_NAME = "SlicerInsight"
APP_DESCRIPTION = ("Explainable, weakly supervised pulmonary-embolism analysis of CTPA: scan-level PE "
                   "probability with an INSIGHT heatmap on the input grid")
#: The segmentation model the ``disagreement`` strategy compares the INSIGHT heatmap with.
SEGMENTATION_MODEL = "pe_segmentation"


def _conf_float(conf: dict[str, str], key: str, default: float) -> float:
    """A positive number from ``--conf key``; the default (with an error logged) for a bad value."""
    raw = conf.get(key)
    if raw in (None, ""):
        return default
    try:
        value = float(raw)
        if value > 0:
            return value
    except ValueError:
        pass
    logger.error("--conf %s %r is not a positive number: using %s", key, raw, default)
    return default


def _conf_bool(conf: dict[str, str], key: str, default: bool) -> bool:
    raw = str(conf.get(key, "")).strip().lower()
    if raw in ("true", "1", "yes"):
        return True
    if raw in ("false", "0", "no"):
        return False
    if raw:
        logger.error("--conf %s %r is not true/false: using %s", key, raw, default)
    return default


def campaign_model_dir(app_dir: str, studies: str, conf: dict[str, str]) -> str:
    """Where trained models go: ``--conf model_dir``, else ``<studies>/.insight/model`` (one campaign per
    studies folder), else (remote studies) MONAI Label's ``<app_dir>/model``."""
    if conf.get("model_dir"):
        return os.path.abspath(os.path.expanduser(conf["model_dir"]))
    if studies.startswith(("http://", "https://")):
        return os.path.join(app_dir, "model")
    return os.path.join(studies, RUNTIME_DIR, "model")


class SlicerInsightApp(MONAILabelApp):
    """The MONAI Label app: one task config per served model, each initialized once."""

    def __init__(self, app_dir: str, studies: str, conf: dict[str, str]) -> None:
        conf = conf or {}
        self.model_dir = campaign_model_dir(app_dir, studies, conf)
        self.task_configs: dict[str, TaskConfig] = {"pe_insight": PEInsightConfig(), "pe_segmentation": PESegmentationConfig()}
        for name, task_config in self.task_configs.items():
            task_config.init(name, self.model_dir, conf, None)
        self.leases = LeaseBook(_conf_float(conf, "lease_timeout_s", DEFAULT_LEASE_TIMEOUT_S))
        self.scoring_runner: ScoringRunner | None = None
        self.model_watcher: ModelWatcher | None = None
        self.weak_label_import: dict[str, Any] | None = None
        super().__init__(app_dir=app_dir, studies=studies, conf=conf, name=APP_NAME, description=APP_DESCRIPTION,
                         version=insight.__version__)
        self._auto_update_scoring = self._auto_update_scoring and _conf_bool(conf, "auto_scoring", True)

    # -- datastore --------------------------------------------------------------------------------------
    def init_datastore(self) -> Datastore:
        if self.studies.startswith(("http://", "https://")):
            if settings.MONAI_LABEL_DATASTORE.lower() in ("xnat", "dsa"):
                return super().init_datastore()
            # DICOMweb: MONAI Label's DICOMWebDatastore with label history, SEG written by highdicom
            # (MONAI Label's own needs dcmqi, downloaded from GitHub at start); see lib/datastore/dicomweb.py
            from lib.datastore.dicomweb import DicomWebCampaignDatastore

            self.studies = self.studies.rstrip("/").strip()
            logger.info("Init DICOMweb campaign datastore for: %s", self.studies)
            datastore = DicomWebCampaignDatastore.from_settings(self.studies)
            self.leases.persist_to(datastore.runtime_dir / LEASES_FILE)
            return datastore
        logger.info("Init campaign datastore for: %s (label history in %s/)", self.studies, RUNTIME_DIR)
        datastore = CampaignDatastore(self.studies, extensions=settings.MONAI_LABEL_DATASTORE_FILE_EXT,
                                      auto_reload=settings.MONAI_LABEL_DATASTORE_AUTO_RELOAD,
                                      read_only=settings.MONAI_LABEL_DATASTORE_READ_ONLY)
        report = import_label_table(datastore, self.studies)
        self.weak_label_import = report.to_dict() if report else None
        self.leases.persist_to(datastore.runtime_dir / LEASES_FILE)
        return datastore

    # -- tasks ------------------------------------------------------------------------------------------
    def init_infers(self) -> dict[str, InferTask]:
        infers: dict[str, InferTask] = {}
        for task_config in self.task_configs.values():
            task = task_config.infer()
            infers.update(task if isinstance(task, dict) else {task_config.name: task})
        for name, task in infers.items():
            logger.info("+++ Adding inferer: %s => %s", name, type(task).__name__)
        return infers

    def init_trainers(self) -> dict[str, TrainTask]:
        trainers: dict[str, TrainTask] = {}
        for name, task_config in self.task_configs.items():
            trainer = task_config.trainer()
            if trainer is not None:
                trainers[name] = trainer
        return trainers

    def _segmentation_problem(self) -> str | None:
        """Why the segmentation model cannot be used now (not served, not trained, broken), or None."""
        task = self._infers.get(SEGMENTATION_MODEL)
        if task is None:
            return "this server does not serve it"
        status = getattr(task, "status", "ready")
        if getattr(task, "model_version", None) is None and status != "pending":
            error = task.info().get("error") if hasattr(task, "info") else None
            return f"it is not ready (status {status}){': ' + error if error else ''}"
        return None

    def init_strategies(self) -> dict[str, Strategy]:
        return {"random": Random(), "uncertainty": UncertaintyStrategy(),
                "disagreement": DisagreementStrategy(self._segmentation_problem, SEGMENTATION_MODEL),
                "diversity": DiversityStrategy()}

    def init_scoring_methods(self) -> dict[str, ScoringMethod]:
        insight_infer = self._infers.get("pe_insight")
        segment = segmentation_via_app(self, SEGMENTATION_MODEL)

        def segmentation_version() -> str | None:
            version = getattr(self._infers.get(SEGMENTATION_MODEL), "model_version", None)
            return version if isinstance(version, str) else None

        return {"uncertainty": UncertaintyScoring(insight_infer), "diversity": DiversityScoring(insight_infer),
                "disagreement": DisagreementScoring(insight_infer, segment, self._segmentation_problem,
                                                    segmentation_version, SEGMENTATION_MODEL)}

    def train_task(self, name: str) -> TrainTask | None:
        """The train task of model ``name``, or None."""
        return self._trainers.get(name)

    # -- active learning --------------------------------------------------------------------------------
    def next_sample(self, request: dict[str, Any]) -> dict[str, Any]:
        """The strategy's pick among images no other client holds, leased to ``request["client_id"]``."""
        name = request.get("strategy") or "random"
        strategy = self._strategies.get(name)
        if strategy is None:
            raise MONAILabelException(MONAILabelError.APP_INIT_ERROR, f"no active-learning strategy {name!r}")
        result = next_sample_with_lease(strategy, {**request, "strategy": name}, self.datastore(), self.leases)
        if result and self._auto_update_scoring:
            self.async_scoring(None)
        return result

    def release_lease(self, image_id: str) -> None:
        """End any client's lease on ``image_id`` (a final label was saved for it)."""
        lease = self.leases.release(image_id)
        if lease is not None:
            logger.info("lease on %s (client %s) released: label saved", image_id, lease.client_id)

    def async_scoring(self, method: str | None, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """Scoring in the server's own scoring thread (from a training subprocess: asks the server)."""
        names = [method] if method else [m for m, task in self._scoring_methods.items()
                                         if not getattr(task, "unavailable_reason", lambda: None)()]
        results: dict[str, Any] = {}
        for name in names:
            method_params = params.get(name) if params else None
            if self._server_mode and self.scoring_runner is not None:
                results[name] = self.scoring_runner.submit(name, method_params)
            elif not self._server_mode:
                results[name] = self._local_request(f"/scoring/{name}", method_params, "Scoring")
        return results[method] if method else results

    # -- server life ------------------------------------------------------------------------------------
    def on_init_complete(self) -> None:
        if self._server_mode:
            self.scoring_runner = ScoringRunner(self._scoring_methods, self.datastore)
        super().on_init_complete()  # runs the scoring methods once (auto-update scoring)
        if self._server_mode:
            install_nonblocking_infer()
            install_campaign_routes()
            install_retrieval_routes()
            install_triage_routes()
            self.model_watcher = ModelWatcher(lambda: self._infers,
                                              _conf_float(self.conf, "model_watch_s", 2.0)).start()

    def info(self) -> dict[str, Any]:
        meta = super().info()
        meta["campaign"] = {"model_dir": self.model_dir, "weak_label_import": self.weak_label_import,
                            "lease_timeout_s": self.leases.timeout_s, "active_leases": len(self.leases.active()),
                            "auto_scoring": self._auto_update_scoring}
        return meta

    def infer(self, request: dict[str, Any], datastore=None) -> dict[str, Any]:
        # A heatmap is not a label: never let a client store it in the datastore as one.
        if isinstance(self._infers.get(request.get("model")), PEInsightInfer):
            request = {**request, "save_label": False}
        return super().infer(request, datastore)
