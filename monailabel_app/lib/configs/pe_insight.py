"""Config of the ``pe_insight`` task: which checkpoint, on which device, loaded once at startup.

Conf options (``monailabel start_server ... --conf KEY VALUE``):

- ``model_path``: the INSIGHT checkpoint (.pt). Else env ``INSIGHT_MODEL_PATH``, else the shipped
  demo model ``<repo>/sample-data/models/pe_insight_demo.pt``. Relative paths are taken from the
  server's working directory.
- ``device``: ``auto`` (default: CUDA when present, else CPU), ``cpu``, ``cuda`` or ``cuda:N``.
- ``train_epochs``, ``train_learning_rate``, ``train_val_fraction``, ``train_init``, ``train_seed``,
  ``train_augment``, ``train_threads``: the ``pe_insight`` trainer's defaults
  (:mod:`lib.trainers.pe_insight`).

A model trained in this campaign (``<model_dir>/pe_insight.pt``, published by the trainer)
supersedes ``model_path`` (MONAI Label's rule: trained weights over pretrained ones); /info says
which one is served (``model_source``: ``trained`` or ``configured``). Delete that file to go back.

A model that cannot be loaded does not stop the server: the error is logged, and the task stays
listed in /info with ``status: "error"`` and the reason, which every /infer call answers too.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from monailabel.interfaces.config import TaskConfig

from insight.errors import InputError, InsightError
from insight.inference import InsightPredictor
from lib.infers.pe_insight import PEInsightInfer
from lib.trainers.pe_insight import PEInsightTrain, TrainSettings, published_checkpoint_path, train_settings_from_conf

__all__ = ["PEInsightConfig", "resolve_model_path", "MODEL_PATH_ENV", "DEFAULT_MODEL_PATH"]

logger = logging.getLogger(__name__)

#: Environment variable naming the checkpoint when ``--conf model_path`` is not given.
MODEL_PATH_ENV = "INSIGHT_MODEL_PATH"
#: The demo model shipped in the repository (this file is <repo>/monailabel_app/lib/configs/pe_insight.py).
DEFAULT_MODEL_PATH = Path(__file__).resolve().parents[3] / "sample-data" / "models" / "pe_insight_demo.pt"


def resolve_model_path(conf: dict[str, str] | None) -> tuple[Path, str]:
    """The checkpoint to load and where that choice came from (``conf``, ``env`` or ``default``)."""
    conf = conf or {}
    if conf.get("model_path"):
        return Path(conf["model_path"]).expanduser().resolve(), "--conf model_path"
    if os.environ.get(MODEL_PATH_ENV):
        return Path(os.environ[MODEL_PATH_ENV]).expanduser().resolve(), f"env {MODEL_PATH_ENV}"
    return DEFAULT_MODEL_PATH, "default"


class PEInsightConfig(TaskConfig):
    """Loads the INSIGHT predictor once in :meth:`init`; :meth:`infer` wraps it in the infer task."""

    def __init__(self) -> None:
        super().__init__()
        self.device = "auto"
        self.predictor: InsightPredictor | None = None
        self.load_error: str | None = None
        self.initial_path: Path | None = None
        self.published_path: Path | None = None

    def init(self, name: str, model_dir: str, conf: dict[str, str], planner: Any, **kwargs: Any) -> None:
        super().init(name, model_dir, conf, planner, **kwargs)
        self.initial_path, origin = resolve_model_path(conf)
        self.path = self.initial_path
        self.published_path = published_checkpoint_path(model_dir)
        self.device = (conf or {}).get("device", "auto") or "auto"
        self.labels = {"pe": 1}
        self.train_conf_error: str | None = None
        try:
            self.train_defaults = train_settings_from_conf(conf or {})
        except InputError as err:  # the server still starts; /info shows the trainer's conf_error
            self.train_conf_error = f"--conf train_*: {err}; using the defaults"
            self.train_defaults = TrainSettings()
            logger.error("%s: %s", name, self.train_conf_error)
        if self.published_path.is_file():
            try:
                self.predictor = InsightPredictor.from_checkpoint(self.published_path, device=self.device)
            except InsightError as err:
                logger.error("%s: the model trained in this campaign (%s) cannot be loaded, serving %s instead: %s",
                             name, self.published_path, self.initial_path, err)
            else:
                self.path = self.published_path
                logger.info("%s: serving the model trained in this campaign, %s (%s), not %s (from %s)", name,
                            self.predictor.model_version, self.published_path, self.initial_path, origin)
                return
        logger.info("%s: loading model %s (from %s) on device %s, once for the server's lifetime", name,
                    self.path, origin, self.device)
        try:
            self.predictor = InsightPredictor.from_checkpoint(self.path, device=self.device)
        except InsightError as err:
            self.load_error = (f"{err}. Start the server with --conf model_path /path/to/model.pt "
                               f"(or set {MODEL_PATH_ENV}); device is chosen with --conf device auto|cpu|cuda")
            logger.error("%s: MODEL NOT LOADED, /infer/%s will answer HTTP 503: %s", name, name, self.load_error)
            return
        logger.info("%s: model %s ready on %s", name, self.predictor.model_version, self.predictor.device)

    def infer(self) -> dict[str, PEInsightInfer]:
        return {self.name: PEInsightInfer(self.predictor, self.path, device=self.device, load_error=self.load_error,
                                          published_path=self.published_path, initial_model_path=self.initial_path)}

    def current_checkpoint(self) -> Path:
        """The checkpoint served now: the campaign's trained one when there is one, else the configured one."""
        assert self.published_path is not None and self.initial_path is not None, "init() first"
        return self.published_path if self.published_path.is_file() else self.initial_path

    def trainer(self) -> PEInsightTrain:
        return PEInsightTrain(self.model_dir, self.current_checkpoint, self.train_defaults, device=self.device,
                              conf_error=self.train_conf_error)
