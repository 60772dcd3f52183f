"""Config of the ``pe_insight`` task: which checkpoint, on which device, loaded once at startup.

Conf options (``monailabel start_server ... --conf KEY VALUE``):

- ``model_path``: the INSIGHT checkpoint (.pt). Else env ``INSIGHT_MODEL_PATH``, else the shipped
  demo model ``<repo>/sample-data/models/pe_insight_demo.pt``. Relative paths are taken from the
  server's working directory.
- ``device``: ``auto`` (default: CUDA when present, else CPU), ``cpu``, ``cuda`` or ``cuda:N``.

A model that cannot be loaded does not stop the server: the error is logged, and the task stays
listed in /info with ``status: "error"`` and the reason, which every /infer call answers too.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from monailabel.interfaces.config import TaskConfig

from insight.errors import InsightError
from insight.inference import InsightPredictor
from lib.infers.pe_insight import PEInsightInfer

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

    def init(self, name: str, model_dir: str, conf: dict[str, str], planner: Any, **kwargs: Any) -> None:
        super().init(name, model_dir, conf, planner, **kwargs)
        self.path, origin = resolve_model_path(conf)
        self.device = (conf or {}).get("device", "auto") or "auto"
        self.labels = {"pe": 1}
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
        return {self.name: PEInsightInfer(self.predictor, self.path, device=self.device, load_error=self.load_error)}

    def trainer(self) -> None:
        return None
