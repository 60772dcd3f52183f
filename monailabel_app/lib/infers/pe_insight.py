"""The ``pe_insight`` infer task: scan-level PE probability, findings and the INSIGHT heatmap.

A thin adapter: all model work is :class:`insight.inference.InsightPredictor`'s. The task holds one
predictor (one model copy, loaded once at startup by :mod:`lib.configs.pe_insight`) and serializes
calls to it with a lock: concurrent requests queue up in the server's worker threads instead of
running two forward passes at once (torch already uses every core for one).

Request keys read (beside MONAI Label's own ``image``):

- ``client_filename``: the uploaded file's name, set by :mod:`lib.server.nonblocking_infer`; used
  for the case name and in error messages instead of the server's temporary file name.
- ``result_write_to_file`` (MONAI Label's key): ``False`` skips writing the heatmap (``output=json``).

Trained weights are picked up without a restart: when the campaign's published checkpoint
(``<model_dir>/pe_insight.pt``, written atomically by the ``pe_insight`` trainer) changes, the next
call (or the server's model watcher, every few seconds) loads it, and from then on every inference and
score uses it when its model version differs from the one served. An inference already running
finishes on the old weights.

Returns ``(heatmap_path, params)``: ``heatmap_path`` is a new temporary ``<case>_heatmap_*.nii.gz``
(float32 in [0, 1], exactly the input's voxel grid) that MONAI Label's response code deletes once
sent; ``params`` is :meth:`insight.inference.PredictionResult.to_json` plus ``model``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Iterator

from monailabel.interfaces.tasks.infer_v2 import InferTask, InferType

from insight.errors import InsightError, ModelError
from insight.inference import InsightPredictor, PredictionResult
from insight.io import write_image
from lib.infers.serialized import dicom_header_folder, predict_serialized, request_image

__all__ = ["PEInsightInfer", "PE_LABELS"]

logger = logging.getLogger(__name__)

#: The one label the heatmap is about (MONAI Label wants a name -> index map).
PE_LABELS = {"pe": 1}

DESCRIPTION = (
    "Pulmonary-embolism classification with an INSIGHT heatmap (weakly supervised, phantom-trained "
    "demo unless a site model is configured). Not a label map: the JSON answer (params) holds the "
    "scan-level pe_probability, model_version and findings; the image is a float32 heatmap in [0, 1] "
    "on the input's voxel grid. Listed as type 'segmentation' only so that MONAI Label clients take "
    "the image part."
)


class PEInsightInfer(InferTask):
    """MONAI Label infer task around one :class:`InsightPredictor`.

    Args:
        predictor: the loaded predictor, or None when the model could not be loaded.
        model_path: the checkpoint path (shown in /info).
        device: the device name asked for (``auto``, ``cpu``, ``cuda``...).
        load_error: why the model is not loaded; required when ``predictor`` is None. The task stays
            listed in /info with ``status: "error"`` and this message, and every infer call answers it.
        published_path: the checkpoint training publishes to; when it appears or changes, it is loaded
            and served (see :meth:`refresh`). None: never reload.
        initial_model_path: the configured checkpoint (``--conf model_path``, env or demo), for /info.

    Raises:
        ValueError: neither a predictor nor a load error is given.
    """

    def __init__(self, predictor: InsightPredictor | None, model_path: str | os.PathLike, device: str = "auto",
                 load_error: str | None = None, description: str = DESCRIPTION,
                 published_path: str | os.PathLike | None = None,
                 initial_model_path: str | os.PathLike | None = None) -> None:
        if predictor is None and not load_error:
            raise ValueError("PEInsightInfer needs a predictor, or a load_error saying why there is none")
        super().__init__(type=InferType.SEGMENTATION, labels=dict(PE_LABELS), dimension=3,
                         description=description, config={})
        self.predictor = predictor
        self.model_path = Path(model_path)
        self.device_requested = device
        self.load_error = None if predictor is not None else load_error
        self._lock = threading.Lock()
        self._reload_lock = threading.Lock()
        self.published_path = Path(published_path) if published_path else None
        self.initial_model_path = Path(initial_model_path) if initial_model_path else self.model_path
        # the published file as it was when this task was built: only a change after that is loaded
        self._published_state = _file_state(self.published_path)

    @property
    def ready(self) -> bool:
        """True when the model is loaded and infer calls can run."""
        return self.predictor is not None

    @property
    def model_version(self) -> str | None:
        """The version of the model served now (None when none is loaded)."""
        predictor = self.predictor
        return predictor.model_version if predictor is not None else None

    def refresh(self) -> bool:
        """Load the published checkpoint if it changed since last seen; True when the served model changed.

        Cheap when nothing changed (one ``stat``). A checkpoint that cannot be loaded is logged and
        skipped (the current model stays). Never waits for a running inference: the swap is one
        attribute assignment, and a running inference keeps the predictor it started with.
        """
        if self.published_path is None or _file_state(self.published_path) in (None, self._published_state):
            return False
        with self._reload_lock:
            state = _file_state(self.published_path)
            if state is None or state == self._published_state:
                return False
            self._published_state = state
            try:
                predictor = InsightPredictor.from_checkpoint(self.published_path, device=self.device_requested)
            except InsightError as err:
                logger.error("pe_insight: published checkpoint %s NOT loaded (still serving %s): %s",
                             self.published_path, self.model_version, err)
                return False
            previous = self.model_version
            if previous == predictor.model_version:
                logger.info("pe_insight: %s changed but holds the served version %s", self.published_path, previous)
                return False
            self.predictor, self.model_path, self.load_error = predictor, self.published_path, None
            logger.info("pe_insight: now serving model %s from %s (was %s), without a restart",
                        predictor.model_version, self.published_path, previous)
            return True

    @contextlib.contextmanager
    def exclusive_predictor(self) -> Iterator[InsightPredictor]:
        """The served predictor, for the caller alone while the block runs (scoring uses it).

        Raises:
            ModelError: no model is loaded.
        """
        self.refresh()
        with self._lock:
            predictor = self.predictor
            if predictor is None:
                raise ModelError(f"model not loaded: {self.load_error}")
            yield predictor

    def info(self) -> dict[str, Any]:
        """MONAI Label's model entry plus what clients show: model version, path, device, status.

        Never takes the inference lock, so /info answers while an inference runs.
        """
        info = super().info()
        info.update({
            "model_version": self.model_version,
            "model_path": str(self.model_path),
            "model_source": ("trained" if self.published_path and self.model_path == self.published_path
                             else "configured"),
            "initial_model_path": str(self.initial_model_path),
            "device": str(self.predictor.device) if self.predictor else self.device_requested,
            "status": "ready" if self.ready else "error",
            "error": self.load_error,
            "outputs": {
                "params": "JSON: pe_probability, model_version, findings, qa, timings_s",
                "image": "heatmap: float32 NIfTI in [0, 1] on the input's voxel grid",
            },
        })
        return info

    def is_valid(self) -> bool:
        # Listed even without a model, so /info can say what is wrong (see ``status`` and ``error``).
        return True

    def get_path(self, validate: bool = True) -> None:
        # The checkpoint is loaded once at startup; MONAI Label's /model upload/delete endpoints would
        # overwrite or rename it behind the running model, so they are not offered for this task.
        return None

    def __call__(self, request: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
        """Run the model on ``request["image"]`` (a file path or DICOM folder on the server).

        Raises:
            ModelError: the model is not loaded (the message says why).
            InputError: no usable image (unreadable, not a 3D scalar volume, ...).
        """
        self.refresh()
        if self.predictor is None:
            raise ModelError(f"model not loaded: {self.load_error}")
        image, client_name = request_image(request)
        result = predict_serialized(self._lock, lambda: self.predictor, image, client_name,
                                    header_folder=None if client_name else dicom_header_folder(image))
        logger.info("pe_insight: %s p(PE)=%.4f, %d finding(s), waited %.2f s, model %s", result.name,
                    result.pe_probability, len(result.findings), result.timings_s["queue"], result.model_version)

        heatmap_path: str | None = None
        if request.get("result_write_to_file", True):
            heatmap_path = self._write_heatmap(result)
        params = result.to_json()
        params["model"] = request.get("model", "pe_insight")
        if heatmap_path is None:
            params["heatmap"]["file"] = None
        else:
            params["heatmap"]["file"] = os.path.basename(heatmap_path)
        return heatmap_path, params

    @staticmethod
    def _write_heatmap(result: PredictionResult) -> str:
        """Write the heatmap to a new temporary .nii.gz; the caller (MONAI Label) owns and deletes it."""
        start = time.perf_counter()
        fd, name = tempfile.mkstemp(prefix=f"{result.name}_heatmap_", suffix=".nii.gz")
        os.close(fd)
        try:
            write_image(result.heatmap, name)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name)
            raise
        result.timings_s["write"] = time.perf_counter() - start
        return name


def _file_state(path: Path | None) -> tuple[int, int, int] | None:
    """(mtime ns, inode, size) of ``path``, or None when it does not exist: a replaced file differs."""
    if path is None:
        return None
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_ino, stat.st_size

