"""SlicerInsight MONAI Label app: PE probability, findings and INSIGHT heatmaps for CTPA volumes.

Start (always name the host; MONAI Label binds 0.0.0.0 otherwise)::

    monailabel start_server --app monailabel_app --studies sample-data/studies \\
        --host 127.0.0.1 --port 8000 [--conf model_path /path/model.pt] [--conf device auto|cpu|cuda]

Layout as in MONAI Label's sample apps: ``lib/configs`` (what each task loads), ``lib/infers`` (the
infer tasks) and ``lib/server`` (the non-blocking /infer route). The model is loaded once, while the
app initializes; importing this module does no model work.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.config import TaskConfig
from monailabel.interfaces.tasks.infer_v2 import InferTask
from monailabel.interfaces.tasks.train import TrainTask

import insight
from lib.configs.pe_insight import PEInsightConfig
from lib.infers.pe_insight import PEInsightInfer
from lib.server.nonblocking_infer import install_nonblocking_infer

logger = logging.getLogger(__name__)

APP_NAME = "SlicerInsight"
APP_DESCRIPTION = ("Explainable, weakly supervised pulmonary-embolism analysis of CTPA: scan-level PE "
                   "probability with an INSIGHT heatmap on the input grid")


class SlicerInsightApp(MONAILabelApp):
    """The MONAI Label app: one task config per served model, each initialized once."""

    def __init__(self, app_dir: str, studies: str, conf: dict[str, str]) -> None:
        self.model_dir = os.path.join(app_dir, "model")
        self.task_configs: dict[str, TaskConfig] = {"pe_insight": PEInsightConfig()}
        for name, task_config in self.task_configs.items():
            task_config.init(name, self.model_dir, conf or {}, None)
        super().__init__(app_dir=app_dir, studies=studies, conf=conf, name=APP_NAME, description=APP_DESCRIPTION,
                         version=insight.__version__)

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

    def on_init_complete(self) -> None:
        super().on_init_complete()
        if self._server_mode:
            install_nonblocking_infer()

    def infer(self, request: dict[str, Any], datastore=None) -> dict[str, Any]:
        # A heatmap is not a label: never let a client store it in the datastore as one.
        if isinstance(self._infers.get(request.get("model")), PEInsightInfer):
            request = {**request, "save_label": False}
        return super().infer(request, datastore)
