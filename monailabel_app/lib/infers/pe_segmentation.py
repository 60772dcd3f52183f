"""The ``pe_segmentation`` infer task: a PE label volume on the input grid from the segmentation UNet.

A thin adapter around :class:`insight.segmentation.SegmentationPredictor`. The checkpoint lives at
one path (``--conf seg_model_path``, else ``<model_dir>/pe_segmentation.pt``), which the
``pe_segmentation`` trainer publishes to atomically. Before every call the task looks at that file
(one ``stat``) and loads it when it appeared or changed, so trained weights are served without a
restart; an inference already running finishes on the weights it started with.

Until a checkpoint exists the task is still listed in /info (``status: "not_trained"``) and every
call answers :class:`SegmentationNotTrainedError` (HTTP 422 on this app's /infer route) saying so.

Returns ``(label_path, params)``: ``label_path`` a new temporary ``<case>_pe_seg_*.nii.gz`` (uint8,
1 = PE, exactly the input's voxel grid) that MONAI Label deletes once sent; ``params`` is
:meth:`insight.segmentation.SegmentationResult.to_json` plus ``model``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

from monailabel.interfaces.tasks.infer_v2 import InferTask, InferType

from insight.errors import InsightError, ModelError
from insight.io import write_image
from lib.infers.serialized import predict_serialized, request_image

__all__ = ["PESegmentationInfer", "SegmentationNotTrainedError", "SEG_LABELS"]

logger = logging.getLogger(__name__)

#: Label values of the output volume.
SEG_LABELS = {"pe": 1}

DESCRIPTION = ("Pulmonary-embolism segmentation (MONAI 3D UNet trained on pseudo-masks from INSIGHT heatmaps and "
               "clinician-corrected masks): a uint8 label volume on the input's voxel grid, 1 = PE. Trained in "
               "this campaign with POST /train/pe_segmentation; until then infer answers 'not trained yet'.")


class SegmentationNotTrainedError(InsightError):
    """No segmentation checkpoint exists yet (HTTP 422 with this message on the app's /infer route)."""


class PESegmentationInfer(InferTask):
    """MONAI Label infer task for ``pe_segmentation``.

    Args:
        model_path: the checkpoint path (may not exist yet).
        device: ``auto``, ``cpu``, ``cuda``...
    """

    def __init__(self, model_path: str | os.PathLike, device: str = "auto", description: str = DESCRIPTION) -> None:
        super().__init__(type=InferType.SEGMENTATION, labels=dict(SEG_LABELS), dimension=3, description=description,
                         config={})
        self.model_path = Path(model_path)
        self.device_requested = device
        self.predictor: Any = None
        self.load_error: str | None = None
        self._loaded_state: tuple[int, int, int] | None = None  # the file as loaded
        self._failed_state: tuple[int, int, int] | None = None  # the file as last failed to load
        self._lock = threading.Lock()
        self._reload_lock = threading.Lock()
        self.refresh()

    # ----------------------------------------------------------------------------------------------
    @property
    def model_version(self) -> str | None:
        predictor = self.predictor
        return predictor.model_version if predictor is not None else None

    @property
    def status(self) -> str:
        """``ready``, ``not_trained`` (no checkpoint yet), ``error`` (it cannot be loaded) or ``pending``
        (a new checkpoint appeared; it is loaded by the next call)."""
        state = _file_state(self.model_path)
        if state is None and self.predictor is None:
            return "not_trained"
        if state is not None and state == self._failed_state:
            return "error"
        if state is not None and state != self._loaded_state:
            return "pending"
        return "ready" if self.predictor is not None else "error"

    def refresh(self) -> bool:
        """Load the checkpoint if it appeared or changed since last looked at; True when the model changed.

        A checkpoint that cannot be loaded is logged and remembered (``load_error``); the model served
        until then stays.
        """
        state = _file_state(self.model_path)
        if state is None or state in (self._loaded_state, self._failed_state):
            return False
        with self._reload_lock:
            state = _file_state(self.model_path)
            if state is None or state in (self._loaded_state, self._failed_state):
                return False
            from insight.segmentation.predictor import SegmentationPredictor  # heavy import

            try:
                predictor = SegmentationPredictor.from_checkpoint(self.model_path, device=self.device_requested)
            except InsightError as err:
                self._failed_state, self.load_error = state, str(err)
                logger.error("pe_segmentation: checkpoint %s NOT loaded (serving %s): %s", self.model_path,
                             self.model_version, err)
                return False
            previous = self.model_version
            self.predictor, self._loaded_state, self.load_error = predictor, state, None
            logger.info("pe_segmentation: serving model %s from %s (was %s)", predictor.model_version,
                        self.model_path, previous)
            return True

    # ----------------------------------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        """MONAI Label's entry plus model version, path, device and status; never loads anything."""
        info = super().info()
        status = self.status
        error = self.load_error
        if status == "not_trained":
            error = _not_trained_message(self.model_path)
        info.update({
            "model_version": self.model_version,
            "model_path": str(self.model_path),
            "device": str(self.predictor.device) if self.predictor is not None else self.device_requested,
            "status": status,
            "error": error,
            "outputs": {"params": "JSON: model_version, n_regions, volume_mm3, peak_probability, timings_s",
                        "image": "label volume: uint8 NIfTI on the input's voxel grid, 1 = PE"},
        })
        return info

    def is_valid(self) -> bool:
        return True  # listed before training, so /info can say it is not trained yet

    def get_path(self, validate: bool = True) -> None:
        return None  # weights come from training (or --conf seg_model_path), not MONAI Label's /model upload

    def __call__(self, request: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
        """Segment ``request["image"]`` (a path on the server).

        Raises:
            SegmentationNotTrainedError: no checkpoint yet.
            ModelError / InputError: the checkpoint or the image cannot be used.
        """
        self.refresh()
        predictor = self.predictor
        if predictor is None:
            if self.load_error:
                raise ModelError(f"pe_segmentation model not loaded: {self.load_error}")
            raise SegmentationNotTrainedError(_not_trained_message(self.model_path))
        image, client_name = request_image(request)
        result = predict_serialized(self._lock, lambda: predictor, image, client_name)
        logger.info("pe_segmentation: %s %d region(s), %.0f mm3, model %s", result.name, result.n_regions,
                    result.volume_mm3, result.model_version)
        params = result.to_json()
        params["model"] = request.get("model", "pe_segmentation")
        label_path = None
        if request.get("result_write_to_file", True):
            label_path = _write_temporary(result.label, f"{result.name}_pe_seg_")
        params["label_file"] = os.path.basename(label_path) if label_path else None
        return label_path, params


def _not_trained_message(path: Path) -> str:
    return (f"pe_segmentation is not trained yet: no checkpoint at {path}. Train it with POST /train/pe_segmentation "
            "(on final labels and pseudo-masks in the datastore) or start the server with --conf seg_model_path "
            "<checkpoint from 'insight train-seg'>")


def _file_state(path: Path) -> tuple[int, int, int] | None:
    """(mtime ns, inode, size) of ``path``, or None when it does not exist: a replaced file differs."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_ino, stat.st_size


def _write_temporary(image: Any, prefix: str) -> str:
    """Write ``image`` to a new temporary .nii.gz; the caller (MONAI Label) owns and deletes it."""
    fd, name = tempfile.mkstemp(prefix=prefix, suffix=".nii.gz")
    os.close(fd)
    try:
        write_image(image, name)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)
        raise
    return name

