"""What the server answers, as small dataclasses (built from MONAI Label's JSON, validated).

Every ``from_json`` raises :class:`~SlicerInsightLib.errors.MalformedAnswerError` when a field the
module relies on is missing or has the wrong type, so a wrong server (or a proxy's error page)
shows up as one clear message instead of a ``KeyError`` deep in the GUI.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np

from .errors import MalformedAnswerError, SlicerInsightError
from .findings import FindingRow, parse_findings
from .geometry import VolumeGeometry, nifti_geometry, read_heatmap
from .labels import scan_label_from_weak
from .nifti import read_nifti

__all__ = ["ModelInfo", "ServerInfo", "InferResult", "SegmentationResult", "Lease", "NextSample", "TrainStatus",
           "LabelReceipt", "LabelVersion", "WeakLabel"]

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
        status: ``ready``, ``error``, ``not_trained`` (no checkpoint yet) or ``pending`` (new weights
            load with the next call); ``ready`` when the server does not say.
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
        """True when the server says the model can run (``pending``: new weights load on the next call)."""
        return self.status in ("ready", "pending")

    @property
    def trained(self) -> bool:
        """False only when the server says the model has no weights yet (``not_trained``)."""
        return self.status != "not_trained"

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
class SegmentationResult:
    """One ``POST /infer/pe_segmentation`` answer: a PE label volume on the input's voxel grid.

    Attributes:
        image_id: the datastore image id segmented.
        model: the infer model's name.
        model_version: the segmentation checkpoint's version string.
        label: the label file's bytes (uint8 NIfTI, 1 = PE, on the CT's voxel grid), or None (``output=json``).
        label_filename: the file name the server gave it, or None.
        params: the whole JSON ``params`` answer (``n_regions``, ``volume_mm3``, ``peak_probability``,
            ``timings_s``...).
    """

    image_id: str
    model: str
    model_version: str
    label: Optional[bytes] = field(default=None, repr=False)
    label_filename: Optional[str] = None
    params: Dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_answer(cls, image_id: str, model: str, params: Any, label: Optional[bytes] = None,
                    label_filename: Optional[str] = None) -> "SegmentationResult":
        params = _mapping(params, f"/infer/{model} params")
        version = params.get("model_version")
        if not isinstance(version, str) or not version:
            raise MalformedAnswerError(f"the server's /infer/{model} answer has no 'model_version'")
        return cls(image_id=str(image_id or params.get("name") or ""), model=model, model_version=version,
                   label=label, label_filename=label_filename, params=dict(params))

    @property
    def volume_mm3(self) -> Optional[float]:
        """Segmented PE volume the server reports (mm³), or None."""
        value = self.params.get("volume_mm3")
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None

    @property
    def peak_probability(self) -> Optional[float]:
        """The model's highest voxel PE probability in [0, 1] (a scan-level score), or None if not sent."""
        value = self.params.get("peak_probability")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
            return None
        return float(value)

    def label_volume(self) -> Tuple[np.ndarray, VolumeGeometry]:
        """The mask (uint8, shape [K, J, I], 1 = PE) and its geometry (IJK-to-RAS from the file's header).

        Raises:
            MalformedAnswerError: no label in the answer, or not a readable NIfTI.
        """
        if not self.label:
            raise MalformedAnswerError(f"the {self.model} answer holds no label volume (asked with output=json?)")
        values, header = read_nifti(self.label)
        if values.ndim != 3:
            raise MalformedAnswerError(f"the {self.model} label volume has {values.ndim} dimensions, not 3")
        if np.issubdtype(values.dtype, np.floating) and not np.isfinite(values).all():
            raise MalformedAnswerError(f"the {self.model} label volume holds non-finite values")
        return (values > 0).astype(np.uint8), nifti_geometry(header)


@dataclass
class Lease:
    """An image handed to one client by active learning (``lease`` of ``/activelearning``, ``/insight/leases``).

    Attributes:
        image_id: the image.
        client_id: who holds it.
        granted_at, expires_at: unix seconds (server clock).
        strategy: the strategy that picked it, or None.
    """

    image_id: str
    client_id: str
    granted_at: float
    expires_at: float
    strategy: Optional[str] = None

    @property
    def seconds(self) -> float:
        """The lease's length (s)."""
        return max(0.0, self.expires_at - self.granted_at)

    @classmethod
    def from_json(cls, data: Any) -> "Lease":
        data = _mapping(data, "lease")
        try:
            return cls(image_id=str(data["image_id"]), client_id=str(data["client_id"]),
                       granted_at=float(data["granted_at"]), expires_at=float(data["expires_at"]),
                       strategy=str(data["strategy"]) if data.get("strategy") is not None else None)
        except (KeyError, TypeError, ValueError) as err:
            raise MalformedAnswerError(f"the server's lease record lacks a field or has a bad one ({err})") from err


@dataclass
class NextSample:
    """``POST /activelearning/<strategy>``: the image to label next.

    Attributes:
        image_id: its datastore id.
        strategy: the strategy that picked it.
        lease: the lease the server granted this client on it (None: an older server without leases).
        score: the strategy's score for it (uncertainty, 1 - Dice, ...), or None.
        info: the server's image info and the rest of the answer (name, weak label, scores...).
    """

    image_id: str
    strategy: str
    lease: Optional[Lease] = None
    score: Optional[float] = None
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
        lease = Lease.from_json(data["lease"]) if data.get("lease") is not None else None
        score = data.get("score")
        score = float(score) if isinstance(score, (int, float)) and not isinstance(score, bool) else None
        return cls(image_id=image_id, strategy=strategy, lease=lease, score=score,
                   info={k: v for k, v in data.items() if k not in ("id", "lease")})

    @property
    def weak_label(self) -> Optional[str]:
        """The image's scan label on the server (``pe``, ``no_pe``, ``uncertain``), or None."""
        record = self.info.get("weak_label")
        if not isinstance(record, Mapping):
            return None
        try:
            return scan_label_from_weak(record.get("pe"))
        except SlicerInsightError:
            return None


#: TrainStatus.state values (``busy``: the server is training another model).
TRAIN_STATES = ("not_offered", "idle", "submitted", "running", "done", "error", "stopped", "busy")
#: A trainer's log line after each epoch ("epoch 3/10 ...") and within one ("epoch 3: 12/40 scans ...").
_EPOCH_DONE = re.compile(r"\bepoch (\d+)/(\d+)\b")
_EPOCH_PART = re.compile(r"\bepoch (\d+): (\d+)/(\d+) scans\b")


@dataclass
class TrainStatus:
    """Where training of one model stands, from MONAI Label's task (``GET /train/``) and the app's
    train stats (``/info`` ``train_stats``).

    Attributes:
        model: the trainer asked about.
        state: one of ``not_offered`` (the server has no trainer for it), ``idle`` (no training of it
            runs or has run since the server started), ``submitted``, ``running``, ``done``,
            ``error``, ``stopped``, ``busy`` (the server is training another model: one at a time).
        message: one line for the module's status text.
        task_id: the server's task id, when a task of this model exists.
        details: the last lines of the training log the server keeps.
        start_ts: when the task started (server time), or None.
        epoch: epochs completed (fractional within an epoch), from the log; None when unknown.
        epochs: epochs the run has, None when unknown.
        stats: the app's train stats of this model (``model_version``, ``val_auroc``, ``history``...;
            ``last_error`` after a failed run); empty when none.
        other_model: the model whose task the server runs (or ran last) when it is not this one.
    """

    model: str
    state: str
    message: str
    task_id: Optional[str] = None
    details: List[str] = field(default_factory=list)
    start_ts: Optional[str] = None
    epoch: Optional[float] = None
    epochs: Optional[int] = None
    stats: Dict[str, Any] = field(default_factory=dict)
    other_model: Optional[str] = None

    @property
    def running(self) -> bool:
        """True while the server is still training this model (submitted or running)."""
        return self.state in ("submitted", "running")

    @property
    def finished(self) -> bool:
        """True once this model's task ended (done, error or stopped)."""
        return self.state in ("done", "error", "stopped")

    @property
    def progress(self) -> Optional[float]:
        """Fraction done in [0, 1]: 1 when done, epochs completed / epochs while running, else None."""
        if self.state == "done":
            return 1.0
        if self.state == "submitted":
            return 0.0
        if self.state == "running" and self.epochs:
            return min(max((self.epoch or 0.0) / self.epochs, 0.0), 1.0)
        return None

    @property
    def trained_model_version(self) -> Optional[str]:
        """The version the last successful run published (train stats), or None."""
        version = self.stats.get("model_version")
        return str(version) if version else None

    @classmethod
    def from_task(cls, model: str, data: Any, stats: Optional[Mapping[str, Any]] = None,
                  default_epochs: Optional[int] = None) -> "TrainStatus":
        """From a ``GET /train/`` (or ``POST /train/<model>``) task of this model plus its train stats."""
        data = _mapping(data, "/train status")
        state = str(data.get("status") or "").lower()
        if state not in TRAIN_STATES:
            raise MalformedAnswerError(f"the server's training status {data.get('status')!r} is not one MONAI Label "
                                       "reports")
        details = [str(line) for line in (data.get("details") or [])]
        stats = dict(stats or {})
        request = data.get("request") if isinstance(data.get("request"), Mapping) else {}
        epochs = _positive_int(request.get("epochs")) or default_epochs
        epoch, logged_epochs = _epochs_from_log(details)
        epochs = logged_epochs or epochs
        status = cls(model=model, state=state, message="", task_id=data.get("id"), details=details,
                     start_ts=data.get("start_ts"), epoch=epoch, epochs=epochs, stats=stats)
        status.message = status._describe()
        return status

    @classmethod
    def without_task(cls, model: str, stats: Optional[Mapping[str, Any]] = None,
                     other_task: Optional[Mapping[str, Any]] = None) -> "TrainStatus":
        """No task of this model on the server now: ``idle`` (or ``busy`` while another model trains)."""
        other_model, state = None, "idle"
        if other_task is not None:
            request = other_task.get("request") if isinstance(other_task.get("request"), Mapping) else {}
            other_model = str(request.get("model") or "another model")
            if str(other_task.get("status") or "").lower() in ("submitted", "running"):
                state = "busy"
        status = cls(model=model, state=state, message="", stats=dict(stats or {}), other_model=other_model)
        status.message = status._describe()
        return status

    def _describe(self) -> str:
        last_run = _last_run_text(self.stats)
        if self.state == "busy":
            return f"the server is training {self.other_model}; training {self.model} can start when it ends"
        if self.state == "idle":
            return (f"not training; last run: {last_run}" if last_run else
                    f"no training of {self.model} has run on this server yet")
        if self.state == "submitted":
            return f"training {self.model}: starting"
        if self.state == "running":
            if self.epochs:
                return f"training {self.model}: epoch {min(int(self.epoch or 0) + 1, self.epochs)} of {self.epochs}"
            return f"training {self.model}: running" + (f" ({self.details[-1].strip()[-120:]})" if self.details else "")
        if self.state == "done":
            return f"training {self.model} done: {last_run}" if last_run else f"training {self.model} done"
        if self.state == "error":
            error = self.stats.get("last_error")
            reason = error.get("error") if isinstance(error, Mapping) else None
            reason = reason or (self.details[-1].strip() if self.details else "no reason given")
            return f"training {self.model} failed: {str(reason)[-200:]}"
        if self.state == "stopped":
            return f"training {self.model} stopped"
        return f"training {self.model}: {self.state}"


def _positive_int(value: Any) -> Optional[int]:
    try:
        number = int(value)
    except (TypeError, ValueError):
        return None
    return number if number > 0 and not isinstance(value, bool) else None


def _epochs_from_log(lines: List[str]) -> Tuple[Optional[float], Optional[int]]:
    """(epochs completed, fractional within the current one; epochs in the run) from a trainer's log lines."""
    for line in reversed(lines):
        done = _EPOCH_DONE.search(line)
        if done:
            return float(done.group(1)), int(done.group(2))
        part = _EPOCH_PART.search(line)
        if part and int(part.group(3)) > 0:
            return int(part.group(1)) - 1 + int(part.group(2)) / int(part.group(3)), None
    return None, None


def _last_run_text(stats: Mapping[str, Any]) -> str:
    """"model <version>, <n> epoch(s), val AUROC 0.812, 12 s" from train stats ('' when none)."""
    version = stats.get("model_version")
    if not version:
        return ""
    parts = [f"model {version}"]
    if isinstance(stats.get("epochs"), int):
        parts.append(f"{stats['epochs']} epoch(s)")
    for key, name in (("val_auroc", "val AUROC"), ("val_dice", "val Dice")):
        value = stats.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            parts.append(f"{name} {value:.3f}")
    if isinstance(stats.get("seconds"), (int, float)):
        parts.append(f"{stats['seconds']:.0f} s")
    text = ", ".join(parts)
    warning = stats.get("warning")
    return f"{text}. Warning: {warning}" if isinstance(warning, str) and warning else text


@dataclass
class LabelReceipt:
    """``PUT /datastore/label``: what the server stored.

    Attributes:
        image_id: the image the label belongs to.
        label_id: the label's id (the image id; one current label per image and tag).
        tag: the label tag (``final``).
        version: the version number this save got (1, 2, ...; earlier versions are kept), or None
            from a server without label history.
        provenance: the provenance the server recorded (``saved_by``, ``saved_at``, ``method``,
            ``model_version``, ``model``, ``uncertainty``, ``client_id``, ``auth_user``).
        answer: the server's whole answer.
    """

    image_id: str
    label_id: str
    tag: str
    version: Optional[int] = None
    provenance: Dict[str, Any] = field(default_factory=dict)
    answer: Dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, tag: str, data: Any) -> "LabelReceipt":
        data = _mapping(data, "/datastore/label answer")
        label_id, image_id = data.get("label"), data.get("image")
        if not isinstance(label_id, str) or not label_id:
            raise MalformedAnswerError("the server's /datastore/label answer has no 'label' id")
        return cls(image_id=str(image_id or ""), label_id=label_id, tag=str(data.get("tag") or tag),
                   version=_positive_int(data.get("version")),
                   provenance=dict(_mapping(data.get("provenance"), "label provenance")), answer=dict(data))


@dataclass
class LabelVersion:
    """One saved version of an image's label (``GET /insight/labels/<image>/versions``).

    Attributes:
        version: 1, 2, ... in saving order.
        current: True for the label the datastore serves now (the latest).
        saved_by, saved_at, method, model_version, model, uncertainty, client_id: its provenance.
        provenance: the whole provenance record.
        entry: the server's whole entry (``file``, ``ext``, ``ts``...).
    """

    version: int
    current: bool
    saved_by: Optional[str] = None
    saved_at: Optional[str] = None
    method: Optional[str] = None
    model_version: Optional[str] = None
    model: Optional[str] = None
    uncertainty: Optional[str] = None
    client_id: Optional[str] = None
    provenance: Dict[str, Any] = field(default_factory=dict)
    entry: Dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: Any) -> "LabelVersion":
        data = _mapping(data, "label version entry")
        version = _positive_int(data.get("version"))
        if version is None:
            raise MalformedAnswerError("a label version entry of the server has no version number")
        provenance = dict(_mapping(data.get("provenance"), "label version provenance"))

        def text(key: str) -> Optional[str]:
            value = provenance.get(key)
            return str(value) if value not in (None, "") else None

        return cls(version=version, current=bool(data.get("current")), saved_by=text("saved_by"),
                   saved_at=text("saved_at"), method=text("method"), model_version=text("model_version"),
                   model=text("model"), uncertainty=text("uncertainty"), client_id=text("client_id"),
                   provenance=provenance, entry=dict(data))


@dataclass
class WeakLabel:
    """An image's scan-level (weak) label on the server (``/insight/weak-labels/<image>``).

    Attributes:
        image_id: the image.
        scan_label: ``pe``, ``no_pe``, ``uncertain``, or None when the image has none.
        source: where it came from (``rest``: set by a client; ``labels.csv``: imported at start).
        set_by: who set it, or None.
        set_at: when (ISO 8601 UTC), or None.
        note: the note stored with it, or None.
    """

    image_id: str
    scan_label: Optional[str]
    source: Optional[str] = None
    set_by: Optional[str] = None
    set_at: Optional[str] = None
    note: Optional[str] = None

    @classmethod
    def from_json(cls, image_id: str, data: Any) -> "WeakLabel":
        data = _mapping(data, "weak label answer")
        if "pe" not in data:
            raise MalformedAnswerError(f"the server's weak label answer for {image_id!r} has no 'pe'")
        try:
            scan_label = scan_label_from_weak(data.get("pe"))
        except SlicerInsightError as err:
            raise MalformedAnswerError(f"the server's weak label for {image_id!r} is not 0, 1 or 'uncertain': "
                                       f"{data.get('pe')!r}") from err

        def text(key: str) -> Optional[str]:
            value = data.get(key)
            return str(value) if value not in (None, "") else None

        return cls(image_id=str(data.get("image") or image_id), scan_label=scan_label, source=text("source"),
                   set_by=text("set_by"), set_at=text("set_at"), note=text("note"))
