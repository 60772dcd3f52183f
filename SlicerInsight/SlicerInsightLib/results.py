"""What the server answers, as small dataclasses (built from MONAI Label's JSON, validated).

Every ``from_json`` raises :class:`~SlicerInsightLib.errors.MalformedAnswerError` when a field the
module relies on is missing or has the wrong type, so a wrong server (or a proxy's error page)
shows up as one clear message instead of a ``KeyError`` deep in the GUI.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np

from .errors import MalformedAnswerError
from .findings import FindingRow, parse_findings
from .geometry import VolumeGeometry, nifti_geometry, read_heatmap

__all__ = ["ModelInfo", "ServerInfo", "InferResult", "NextSample", "TrainStatus", "LabelReceipt"]

logger = logging.getLogger(__name__)


def _mapping(value: Any, what: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise MalformedAnswerError(f"the server's {what} is not a JSON object")
    return value


@dataclass
class ModelInfo:
    """One infer model of ``/info`` ``models``.

    Attributes:
        name: the model's name (``pe_insight``).
        type: MONAI Label's model type (``segmentation``...).
        description: the server's description.
        labels: label name -> value.
        model_version: the loaded checkpoint's version, or None when not reported / not loaded.
        status: ``ready`` or ``error`` (``ready`` when the server does not say).
        error: why the model is not loaded, or None.
        device: where it runs (``cpu``, ``cuda``...), or None.
    """

    name: str
    type: str = ""
    description: str = ""
    labels: Dict[str, Any] = field(default_factory=dict)
    model_version: Optional[str] = None
    status: str = "ready"
    error: Optional[str] = None
    device: Optional[str] = None

    @property
    def ready(self) -> bool:
        """True when the server says the model can run."""
        return self.status == "ready"

    @classmethod
    def from_json(cls, name: str, data: Any) -> "ModelInfo":
        data = _mapping(data, f"entry for model {name!r}")
        labels = data.get("labels") or {}
        if isinstance(labels, list):  # some MONAI Label apps list label names only
            labels = {str(label): index + 1 for index, label in enumerate(labels)}
        version = data.get("model_version")
        return cls(name=str(name), type=str(data.get("type") or ""), description=str(data.get("description") or ""),
                   labels=dict(_mapping(labels, f"labels of model {name!r}")),
                   model_version=str(version) if version is not None else None,
                   status=str(data.get("status") or "ready"), error=data.get("error") or None,
                   device=str(data["device"]) if data.get("device") is not None else None)


@dataclass
class ServerInfo:
    """``GET /info/``: the app, its models, trainers, active-learning strategies and datastore.

    Attributes:
        name, description, version: the app's.
        models: infer model name -> :class:`ModelInfo`.
        trainers: trainer name -> the server's trainer info (empty: the server trains nothing).
        strategies: strategy name -> info (empty: no active learning).
        train_stats: trainer name -> last training statistics.
        datastore: ``total`` / ``completed`` image counts and label tags.
    """

    name: str
    description: str = ""
    version: str = ""
    models: Dict[str, ModelInfo] = field(default_factory=dict)
    trainers: Dict[str, Any] = field(default_factory=dict)
    strategies: Dict[str, Any] = field(default_factory=dict)
    train_stats: Dict[str, Any] = field(default_factory=dict)
    datastore: Dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: Any) -> "ServerInfo":
        data = _mapping(data, "/info answer")
        if "models" not in data or "name" not in data:
            raise MalformedAnswerError("the server's /info answer has no 'name' or 'models': is this a MONAI Label "
                                       "server?")
        models = _mapping(data.get("models"), "'models'")
        return cls(name=str(data.get("name")), description=str(data.get("description") or ""),
                   version=str(data.get("version") or ""),
                   models={name: ModelInfo.from_json(name, entry) for name, entry in models.items()},
                   trainers=dict(_mapping(data.get("trainers"), "'trainers'")),
                   strategies=dict(_mapping(data.get("strategies"), "'strategies'")),
                   train_stats=dict(_mapping(data.get("train_stats"), "'train_stats'")),
                   datastore=dict(_mapping(data.get("datastore"), "'datastore'")))

    def offers_training(self, model: str) -> bool:
        """True when the server has a trainer named ``model``."""
        return model in self.trainers

    @property
    def strategy_names(self) -> List[str]:
        """The active-learning strategies offered, in the server's order."""
        return list(self.strategies)


@dataclass
class InferResult:
    """One ``POST /infer/<model>`` answer.

    Attributes:
        image_id: the datastore image id analysed (or the uploaded file's case name).
        model: the infer model's name.
        pe_probability: scan-level PE probability in [0, 1].
        model_version: the checkpoint's version string.
        findings: candidate regions, highest peak score first.
        finding_threshold: the heatmap value the server cut findings at, or None.
        heatmap: the heatmap file's bytes (float32 NIfTI, [0, 1], on the CT's voxel grid), or None
            (``output=json``).
        heatmap_filename: the file name the server gave the heatmap, or None.
        params: the whole JSON ``params`` answer (qa, timings_s, ...).
    """

    image_id: str
    model: str
    pe_probability: float
    model_version: str
    findings: List[FindingRow] = field(default_factory=list)
    finding_threshold: Optional[float] = None
    heatmap: Optional[bytes] = field(default=None, repr=False)
    heatmap_filename: Optional[str] = None
    params: Dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_answer(cls, image_id: str, model: str, params: Any, heatmap: Optional[bytes] = None,
                    heatmap_filename: Optional[str] = None) -> "InferResult":
        params = _mapping(params, f"/infer/{model} params")
        try:
            probability = float(params["pe_probability"])
        except (KeyError, TypeError, ValueError) as err:
            raise MalformedAnswerError(f"the server's /infer/{model} answer has no numeric 'pe_probability': is "
                                       f"{model!r} the PE model?") from err
        if not (math.isfinite(probability) and 0.0 <= probability <= 1.0):
            raise MalformedAnswerError(f"the server's PE probability {probability!r} is not in [0, 1]")
        version = params.get("model_version")
        if not isinstance(version, str) or not version:
            raise MalformedAnswerError(f"the server's /infer/{model} answer has no 'model_version'")
        threshold = params.get("finding_threshold")
        return cls(image_id=str(image_id or params.get("name") or ""), model=model, pe_probability=probability,
                   model_version=version, findings=parse_findings(params.get("findings")),
                   finding_threshold=float(threshold) if isinstance(threshold, (int, float)) else None,
                   heatmap=heatmap, heatmap_filename=heatmap_filename, params=dict(params))

    @property
    def has_heatmap(self) -> bool:
        return bool(self.heatmap)

    def heatmap_geometry(self) -> VolumeGeometry:
        """The heatmap's voxel grid (IJK-to-RAS matrix, mm) read from its NIfTI header.

        Raises:
            MalformedAnswerError: no heatmap in the answer, or not a readable NIfTI.
        """
        if not self.heatmap:
            raise MalformedAnswerError("the answer holds no heatmap (asked with output=json?)")
        return nifti_geometry(self.heatmap)

    def heatmap_volume(self) -> Tuple[np.ndarray, VolumeGeometry]:
        """The heatmap values (float32, shape [K, J, I], [0, 1]) and their geometry."""
        if not self.heatmap:
            raise MalformedAnswerError("the answer holds no heatmap (asked with output=json?)")
        return read_heatmap(self.heatmap)

    @property
    def qa_flags(self) -> List[Dict[str, Any]]:
        """Quality-assurance flags the server raised (``code``, ``message``)."""
        qa = self.params.get("qa") or {}
        flags = qa.get("flags") if isinstance(qa, Mapping) else None
        return list(flags) if isinstance(flags, list) else []


@dataclass
class NextSample:
    """``POST /activelearning/<strategy>``: the image to label next.

    Attributes:
        image_id: its datastore id.
        strategy: the strategy that picked it.
        info: the server's image info (name, ts, strategy history...).
    """

    image_id: str
    strategy: str
    info: Dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, strategy: str, data: Any) -> Optional["NextSample"]:
        """The sample, or None when the server has nothing left to label (an empty answer)."""
        data = _mapping(data, f"/activelearning/{strategy} answer")
        if not data:
            return None
        image_id = data.get("id")
        if not isinstance(image_id, str) or not image_id:
            raise MalformedAnswerError(f"the server's /activelearning/{strategy} answer has no image 'id'")
        return cls(image_id=image_id, strategy=strategy, info={k: v for k, v in data.items() if k != "id"})


#: TrainStatus.state values.
TRAIN_STATES = ("not_offered", "idle", "submitted", "running", "done", "error", "stopped")


@dataclass
class TrainStatus:
    """Where training stands.

    Attributes:
        model: the trainer asked about.
        state: one of ``not_offered`` (the server has no trainer for it), ``idle`` (no training run
            yet), ``submitted``, ``running``, ``done``, ``error``, ``stopped``.
        message: one line for the module's status text.
        task_id: the server's task id, when a task exists.
        details: the last lines of the training log the server keeps.
        start_ts: when the task started (server time), or None.
    """

    model: str
    state: str
    message: str
    task_id: Optional[str] = None
    details: List[str] = field(default_factory=list)
    start_ts: Optional[str] = None

    @property
    def running(self) -> bool:
        """True while the server is still training (submitted or running)."""
        return self.state in ("submitted", "running")

    @classmethod
    def from_task(cls, model: str, data: Any) -> "TrainStatus":
        data = _mapping(data, "/train status")
        state = str(data.get("status") or "").lower()
        if state not in TRAIN_STATES:
            raise MalformedAnswerError(f"the server's training status {data.get('status')!r} is not one MONAI Label "
                                       "reports")
        details = [str(line) for line in (data.get("details") or [])]
        last = details[-1].strip() if details else ""
        message = f"training {state}" + (f": {last[-160:]}" if last else "")
        return cls(model=model, state=state, message=message, task_id=data.get("id"), details=details,
                   start_ts=data.get("start_ts"))


@dataclass
class LabelReceipt:
    """``PUT /datastore/label``: what the server stored.

    Attributes:
        image_id: the image the label belongs to.
        label_id: the label's id (LocalDatastore: the image id; one label per image and tag).
        tag: the label tag (``final``).
        answer: the server's whole answer.
    """

    image_id: str
    label_id: str
    tag: str
    answer: Dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, tag: str, data: Any) -> "LabelReceipt":
        data = _mapping(data, "/datastore/label answer")
        label_id, image_id = data.get("label"), data.get("image")
        if not isinstance(label_id, str) or not label_id:
            raise MalformedAnswerError("the server's /datastore/label answer has no 'label' id")
        return cls(image_id=str(image_id or ""), label_id=label_id, tag=tag, answer=dict(data))
