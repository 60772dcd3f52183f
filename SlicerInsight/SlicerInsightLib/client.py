"""HTTP client for the SlicerInsight MONAI Label server.

One method per thing the module does: server info, analysis (``/infer/pe_insight``), segmentation
(``/infer/pe_segmentation``), upload, scan-level (weak) labels, labels with provenance and their
versions, active learning with leases, training and its progress. Every failure becomes a
:class:`~SlicerInsightLib.errors.SlicerInsightError` subclass whose message says what happened and
what to do:

==============================  ============================================================
situation                       error
==============================  ============================================================
nothing listens / DNS fails     :class:`ServerUnreachableError`
no answer in time               :class:`ServerTimeoutError`
HTTP 401 / 403                  :class:`AuthenticationError` (with the server's ``detail``)
HTTP 404                        :class:`NotFoundError` (with ``detail``)
HTTP 409 / 429, not trained     :class:`NotReadyError` (a strategy without scores, a training
                                already running, a model without weights: try again later)
other HTTP 4xx                  :class:`RequestRejectedError` (with ``detail``)
HTTP 5xx                        :class:`ServerFailureError` (first line of the error, never a traceback)
not JSON / not multipart / ...  :class:`MalformedAnswerError`
no trainer / strategy / route   :class:`NotOfferedError`
bad argument                    :class:`InvalidInputError`
==============================  ============================================================

Thread safety: no state is shared between calls (one ``requests`` call each, no session), so a
worker thread may run one call while the GUI thread runs another.

Endpoints used (MONAI Label 0.8.5): ``GET /info/``, ``POST /infer/{model}``,
``GET|HEAD|PUT /datastore/image``, ``GET /datastore/?output=all``, ``PUT /datastore/image/info``,
``PUT|GET /datastore/label``, ``GET /datastore/label/info``, ``POST /activelearning/{strategy}``,
``POST /train/{model}``, ``GET /train/``, ``DELETE /train/``; and the SlicerInsight app's own
(``monailabel_app/README.md``): ``GET|PUT|DELETE /insight/weak-labels/{image}``,
``GET /insight/labels/{image}/versions[/{n}]``, ``GET /insight/leases``, ``DELETE /insight/leases/{image}``.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import re
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import numpy as np
import requests

from . import __version__
from .errors import (AuthenticationError, InvalidInputError, MalformedAnswerError, NotFoundError, NotOfferedError,
                     NotReadyError, RequestRejectedError, ServerFailureError, ServerTimeoutError,
                     ServerUnreachableError, SlicerInsightError)
from .labels import DEFAULT_LABEL_TAG, LabelProvenance, weak_label_value
from .multipart import parse_header_params, parse_multipart
from .results import (InferResult, LabelReceipt, LabelVersion, Lease, ModelInfo, NextSample, SegmentationResult,
                      ServerInfo, TrainStatus, WeakLabel)

__all__ = ["InsightClient", "Timeouts", "DEFAULT_SERVER_URL", "DEFAULT_MODEL", "DEFAULT_SEGMENTATION_MODEL",
           "image_id_is_valid", "content_image_id"]

logger = logging.getLogger(__name__)

#: Where ``scripts/run-demo.sh`` serves.
DEFAULT_SERVER_URL = "http://127.0.0.1:8000"
#: The PE infer model of the SlicerInsight app.
DEFAULT_MODEL = "pe_insight"
#: The PE segmentation infer model (a label volume on the input grid), served once trained.
DEFAULT_SEGMENTATION_MODEL = "pe_segmentation"
#: Image ids the client sends: what MONAI Label's LocalDatastore keeps as file names.
_IMAGE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
#: Volume file suffixes the server reads.
VOLUME_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
#: Longest server error text shown to the user.
_MAX_DETAIL = 300

Upload = Union[str, "os.PathLike[str]", bytes]


@dataclass
class Timeouts:
    """Seconds to wait, per kind of call.

    Attributes:
        connect: to open the TCP connection.
        read: for an answer to quick calls (info, datastore, labels, training control).
        infer: for an analysis answer (the model runs while we wait; requests queue on the server).
        upload: for an upload's answer (large volumes).
    """

    connect: float = 5.0
    read: float = 30.0
    infer: float = 600.0
    upload: float = 300.0


def image_id_is_valid(image_id: str) -> bool:
    """True for ids made of letters, digits, '.', '_' and '-' (starting with a letter or digit)."""
    return bool(isinstance(image_id, str) and _IMAGE_ID.match(image_id))


def content_image_id(name: str, array, ijk_to_ras) -> str:
    """A datastore id for a volume that has none: its name made safe (letters, digits, '_', '-'), plus
    10 hex digits of a SHA-1 over the voxels, their shape and dtype, and the IJK-to-RAS matrix
    (rounded to 1e-4 mm).

    The same volume always gets the same id (so it is uploaded once); a different volume with the
    same name gets another id (so a name clash never analyses the wrong image).

    Args:
        name: the volume's name (e.g. the Slicer node name).
        array: its voxels (numpy, any shape and dtype).
        ijk_to_ras: its 4x4 voxel-to-RAS matrix, mm.
    """
    voxels = np.ascontiguousarray(array)
    digest = hashlib.sha1()
    digest.update(repr((voxels.shape, voxels.dtype.str)).encode("ascii"))
    digest.update(np.round(np.asarray(ijk_to_ras, dtype=np.float64), 4).tobytes())
    digest.update(voxels.tobytes())
    # no dots: the datastore derives ids from file names, and "a.nii-x.nii.gz" would be ambiguous
    safe = re.sub(r"[^A-Za-z0-9_-]+", "_", name or "").strip("_-")[:60] or "volume"
    return f"{safe}-{digest.hexdigest()[:10]}"


class InsightClient:
    """Talks to one server.

    Args:
        base_url: ``http(s)://host:port`` (a trailing slash is fine).
        token: a bearer token for servers with authentication; None for none.
        timeouts: :class:`Timeouts` (defaults: 5 s connect, 30 s read, 600 s infer, 300 s upload).

    Raises:
        InvalidInputError: the URL is not ``http://`` or ``https://``.
    """

    def __init__(self, base_url: str = DEFAULT_SERVER_URL, token: Optional[str] = None,
                 timeouts: Optional[Timeouts] = None) -> None:
        url = (base_url or "").strip().rstrip("/")
        if not re.match(r"^https?://[^/\s]+", url):
            raise InvalidInputError(f"server URL {base_url!r} is not an http:// or https:// address "
                                    f"(e.g. {DEFAULT_SERVER_URL})")
        self.base_url = url
        self.token = (token or "").strip() or None
        self.timeouts = timeouts or Timeouts()

    def __repr__(self) -> str:
        return f"InsightClient({self.base_url!r}, token={'set' if self.token else 'none'})"

    # ------------------------------------------------------------------ server and models
    def info(self) -> ServerInfo:
        """``GET /info/``: app, models (with model_version and status), trainers, strategies."""
        return ServerInfo.from_json(self._json("GET", "/info/", what="the server info"))

    def models(self) -> Dict[str, ModelInfo]:
        """The infer models, by name."""
        return self.info().models

    def model(self, name: str = DEFAULT_MODEL) -> ModelInfo:
        """One infer model's info.

        Raises:
            NotFoundError: the server has no such model.
        """
        models = self.models()
        if name not in models:
            raise NotFoundError(f"the server at {self.base_url} has no model {name!r} "
                                f"(it offers: {', '.join(sorted(models)) or 'none'})")
        return models[name]

    # ------------------------------------------------------------------ datastore images
    def list_images(self) -> List[str]:
        """The datastore's image ids, sorted."""
        data = self._json("GET", "/datastore/", params={"output": "all"}, what="the image list")
        objects = data.get("objects") if isinstance(data, Mapping) else None
        if not isinstance(objects, Mapping):
            raise MalformedAnswerError("the server's datastore list has no 'objects'")
        return sorted(objects)

    def has_image(self, image_id: str) -> bool:
        """True when the datastore holds ``image_id`` (``HEAD /datastore/image``)."""
        _check_image_id(image_id)
        response = self._send("HEAD", "/datastore/image", params={"image": image_id}, what=f"a check for image "
                              f"{image_id!r}", accept_status=(404,))
        return response.status_code != 404

    def upload_image(self, volume: Upload, image_id: str, filename: Optional[str] = None,
                     info: Optional[Mapping[str, Any]] = None) -> str:
        """Add a volume to the datastore (``PUT /datastore/image?image=<id>``); returns the stored id.

        Args:
            volume: a file path, or the file's bytes (then ``filename`` gives the format).
            image_id: the id to store it under (letters, digits, '.', '_', '-').
            filename: the file name sent (its suffix tells the server the format); default
                ``<image_id><suffix of the path>``.
            info: extra image info to store (JSON object).
        """
        _check_image_id(image_id)
        data, name = _read_upload(volume, filename)
        suffix = _volume_suffix(name)
        answer = self._json("PUT", "/datastore/image", params={"image": image_id},
                            files={"file": (f"{image_id}{suffix}", data, "application/octet-stream")},
                            data={"params": json.dumps(dict(info or {}))}, timeout=self.timeouts.upload,
                            what=f"the upload of {name!r}")
        stored = answer.get("image") if isinstance(answer, Mapping) else None
        if not isinstance(stored, str) or not stored:
            raise MalformedAnswerError("the server's upload answer has no 'image' id")
        logger.info("uploaded %s (%d bytes) as image %s", name, len(data), stored)
        return stored

    def download_image(self, image_id: str) -> Tuple[bytes, str]:
        """A datastore image's file: (bytes, file name)."""
        _check_image_id(image_id)
        response = self._send("GET", "/datastore/image", params={"image": image_id}, timeout=self.timeouts.upload,
                              what=f"the download of image {image_id!r}")
        name = _response_filename(response) or f"{image_id}.nii.gz"
        return response.content, name

    def image_info(self, image_id: str) -> Dict[str, Any]:
        """The datastore's info for an image (``{}`` when unknown)."""
        _check_image_id(image_id)
        data = self._json("GET", "/datastore/image/info", params={"image": image_id},
                          what=f"the info of image {image_id!r}")
        return dict(data) if isinstance(data, Mapping) else {}

    def update_image_info(self, image_id: str, info: Mapping[str, Any]) -> None:
        """Merge ``info`` into the image's datastore info (``PUT /datastore/image/info``)."""
        _check_image_id(image_id)
        self._send("PUT", "/datastore/image/info", params={"image": image_id}, data={"info": json.dumps(dict(info))},
                   what=f"the info update of image {image_id!r}")

    # ------------------------------------------------------------------ analysis
    def infer(self, image_id: str, model: str = DEFAULT_MODEL, with_heatmap: bool = True,
              params: Optional[Mapping[str, Any]] = None) -> InferResult:
        """Analyse a datastore image (``POST /infer/<model>?image=<id>``).

        Args:
            image_id: the datastore image id.
            model: the infer model.
            with_heatmap: ask for the heatmap too (multipart answer); False for JSON only.
            params: extra request parameters for the model.
        """
        _check_image_id(image_id)
        query = {"image": image_id, "output": "all" if with_heatmap else "json"}
        response = self._send("POST", f"/infer/{model}", params=query, data={"params": json.dumps(dict(params or {}))},
                              timeout=self.timeouts.infer, what=f"the analysis of image {image_id!r}")
        return self._infer_result(response, image_id, model)

    def infer_file(self, volume: Upload, model: str = DEFAULT_MODEL, filename: Optional[str] = None,
                   with_heatmap: bool = True) -> InferResult:
        """Analyse a volume file without storing it in the datastore (multipart upload to /infer)."""
        data, name = _read_upload(volume, filename)
        _volume_suffix(name)
        query = {"output": "all" if with_heatmap else "json"}
        response = self._send("POST", f"/infer/{model}", params=query,
                              files={"file": (name, data, "application/octet-stream")}, data={"params": "{}"},
                              timeout=self.timeouts.infer, what=f"the analysis of {name!r}")
        return self._infer_result(response, "", model)

    def _infer_result(self, response: requests.Response, image_id: str, model: str) -> InferResult:
        params, heatmap, filename = _infer_parts(response, model)
        result = InferResult.from_answer(image_id, model, params, heatmap, filename)
        logger.info("analysis of %s: p(PE)=%.4f, %d finding(s), model %s, heatmap %s bytes", image_id or "upload",
                    result.pe_probability, len(result.findings), result.model_version,
                    len(heatmap) if heatmap else 0)
        return result

    # ------------------------------------------------------------------ segmentation model
    def segment(self, image_id: str, model: str = DEFAULT_SEGMENTATION_MODEL, with_label: bool = True,
                params: Optional[Mapping[str, Any]] = None) -> SegmentationResult:
        """Segment a datastore image with the server's segmentation model (``POST /infer/pe_segmentation``).

        The answer's label volume (uint8 NIfTI, 1 = PE) lies on the image's own voxel grid.

        Args:
            image_id: the datastore image id.
            model: the segmentation infer model.
            with_label: ask for the label volume (multipart answer); False for JSON only.
            params: extra request parameters for the model.

        Raises:
            NotFoundError: the server has no such model (or no such image).
            NotReadyError: the model is not trained yet (no checkpoint on the server).
        """
        _check_image_id(image_id)
        info = self.model(model)
        if not info.trained:
            raise NotReadyError(_not_trained_message(model, info.error), status=None)
        query = {"image": image_id, "output": "all" if with_label else "json"}
        try:
            response = self._send("POST", f"/infer/{model}", params=query,
                                  data={"params": json.dumps(dict(params or {}))}, timeout=self.timeouts.infer,
                                  what=f"the segmentation of image {image_id!r}")
        except RequestRejectedError as err:
            if err.status == 422 and "not trained" in (err.detail or ""):  # trained state changed meanwhile
                raise NotReadyError(_not_trained_message(model, err.detail), url=err.url, status=err.status,
                                    detail=err.detail) from err
            raise
        answer, label, filename = _infer_parts(response, model)
        result = SegmentationResult.from_answer(image_id, model, answer, label, filename)
        logger.info("segmentation of %s: model %s, %s mm3, label %s bytes", image_id, result.model_version,
                    result.volume_mm3, len(label) if label else 0)
        return result

    # ------------------------------------------------------------------ weak (scan-level) labels
    def weak_label(self, image_id: str) -> WeakLabel:
        """An image's scan-level label on the server (``GET /insight/weak-labels/<image>``);
        ``scan_label`` None when it has none.

        Raises:
            NotFoundError: no such image.
            NotOfferedError: the server keeps no weak labels (an app without the campaign routes).
        """
        _check_image_id(image_id)
        data = self._campaign_json("GET", f"/insight/weak-labels/{image_id}", what=f"the scan label of image "
                                   f"{image_id!r}", feature="scan-level (weak) labels")
        return WeakLabel.from_json(image_id, data)

    def set_weak_label(self, image_id: str, scan_label: str, annotator: Optional[str] = None,
                       note: Optional[str] = None) -> WeakLabel:
        """Set an image's scan-level label (``PUT /insight/weak-labels/<image>``): what ``pe_insight`` trains on.

        Args:
            image_id: the datastore image id.
            scan_label: ``pe``, ``no_pe``, ``uncertain`` (or the display texts PE / No PE / Uncertain).
            annotator: who sets it (the server's user wins when it runs with authentication).
            note: a free-text note stored with it.

        Raises:
            InvalidInputError: not a scan label.
            NotFoundError: no such image.
            NotOfferedError: the server keeps no weak labels.
        """
        _check_image_id(image_id)
        body: Dict[str, Any] = {"pe": weak_label_value(scan_label)}
        if annotator and annotator.strip():
            body["annotator"] = annotator.strip()
        if note and note.strip():
            body["note"] = note.strip()
        data = self._campaign_json("PUT", f"/insight/weak-labels/{image_id}", json_body=body,
                                   what=f"setting the scan label of image {image_id!r}",
                                   feature="scan-level (weak) labels")
        label = WeakLabel.from_json(image_id, data)
        logger.info("scan label of %s set to %s by %s", image_id, label.scan_label, label.set_by)
        return label

    def clear_weak_label(self, image_id: str) -> bool:
        """Remove an image's scan-level label (``DELETE /insight/weak-labels/<image>``); True when it had one."""
        _check_image_id(image_id)
        data = self._campaign_json("DELETE", f"/insight/weak-labels/{image_id}",
                                   what=f"removing the scan label of image {image_id!r}",
                                   feature="scan-level (weak) labels")
        return bool(data.get("removed")) if isinstance(data, Mapping) else False

    # ------------------------------------------------------------------ labels
    def save_label(self, image_id: str, label: Upload, provenance: Union[LabelProvenance, Mapping[str, Any]],
                   tag: str = DEFAULT_LABEL_TAG, filename: Optional[str] = None) -> LabelReceipt:
        """Store a label (voxel mask file) for a datastore image with its provenance record.

        ``PUT /datastore/label?image=<id>&tag=<tag>``; the provenance goes in the ``params`` form field:
        the server validates and records ``annotator``, ``method`` (pseudo / edited / manual),
        ``model_version``, ``model``, ``uncertainty`` and ``client_id`` (a ``final`` label ends that
        client's lease on the image) and keeps the rest as label info (:meth:`label_info`). Saving
        again keeps the earlier label as a version (:meth:`label_versions`).

        Raises:
            InvalidInputError: a bad tag, file or provenance (checked before sending).
            NotFoundError: no such image.
            RequestRejectedError: the server refused the label (HTTP 422: not on the image's grid,
                bad provenance...), with its reason.
        """
        _check_image_id(image_id)
        _check_tag(tag)
        record = provenance.to_params() if isinstance(provenance, LabelProvenance) else dict(provenance)
        record.setdefault("image_id", image_id)
        data, name = _read_upload(label, filename or f"{image_id}.nii.gz")
        suffix = _volume_suffix(name)
        answer = self._json("PUT", "/datastore/label", params={"image": image_id, "tag": tag},
                            files={"label": (f"{image_id}{suffix}", data, "application/octet-stream")},
                            data={"params": json.dumps(record)}, timeout=self.timeouts.upload,
                            what=f"saving the label of image {image_id!r}")
        receipt = LabelReceipt.from_json(tag, answer)
        logger.info("label for %s saved (tag %s, version %s, %d bytes, scan label %s, method %s)", image_id, tag,
                    receipt.version, len(data), record.get("scan_label"), record.get("method"))
        return receipt

    def download_label(self, label_id: str, tag: str = DEFAULT_LABEL_TAG) -> bytes:
        """A stored label's file bytes, the current version (``GET /datastore/label``)."""
        _check_image_id(label_id)
        response = self._send("GET", "/datastore/label", params={"label": label_id, "tag": tag},
                              timeout=self.timeouts.upload, what=f"the download of label {label_id!r} ({tag})")
        return response.content

    def label_info(self, label_id: str, tag: str = DEFAULT_LABEL_TAG) -> Dict[str, Any]:
        """A stored label's info: the provenance record sent with it, plus the server's fields."""
        _check_image_id(label_id)
        data = self._json("GET", "/datastore/label/info", params={"label": label_id, "tag": tag},
                          what=f"the info of label {label_id!r} ({tag})")
        return dict(data) if isinstance(data, Mapping) else {}

    def label_versions(self, image_id: str, tag: str = DEFAULT_LABEL_TAG) -> List[LabelVersion]:
        """Every saved version of an image's label, oldest first, with provenance
        (``GET /insight/labels/<image>/versions``); empty when none was saved.

        Raises:
            NotFoundError: no such image.
            NotOfferedError: the server keeps no label history.
        """
        _check_image_id(image_id)
        _check_tag(tag)
        data = self._campaign_json("GET", f"/insight/labels/{image_id}/versions", params={"tag": tag},
                                   what=f"the label versions of image {image_id!r} ({tag})", feature="label history")
        versions = data.get("versions") if isinstance(data, Mapping) else None
        if not isinstance(versions, list):
            raise MalformedAnswerError("the server's label version list has no 'versions' list")
        return sorted((LabelVersion.from_json(entry) for entry in versions), key=lambda v: v.version)

    def download_label_version(self, image_id: str, version: int, tag: str = DEFAULT_LABEL_TAG) -> bytes:
        """The file bytes of one saved version of an image's label (``GET .../versions/<n>``).

        Raises:
            InvalidInputError: ``version`` is not a positive integer.
            NotFoundError: no such image or version.
        """
        _check_image_id(image_id)
        _check_tag(tag)
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise InvalidInputError(f"label version must be a positive integer, got {version!r}")
        response = self._campaign_send("GET", f"/insight/labels/{image_id}/versions/{version}", params={"tag": tag},
                                       timeout=self.timeouts.upload, feature="label history",
                                       what=f"the download of version {version} of the label of {image_id!r} ({tag})")
        return response.content

    # ------------------------------------------------------------------ active learning
    def strategies(self) -> List[str]:
        """The active-learning strategies the server offers."""
        return self.info().strategy_names

    def next_sample(self, strategy: Optional[str] = None, client_id: Optional[str] = None) -> Optional[NextSample]:
        """The next image to label, picked by an active-learning strategy and leased to this client.

        While the lease runs no other client gets the image; asking again gives it back and leases
        another; saving a final label with this ``client_id`` ends it (:meth:`release_lease` gives it
        back without a label).

        Args:
            strategy: a strategy the server offers (``uncertainty``, ``disagreement``, ``diversity``,
                ``random``); None for its first one.
            client_id: this client's id (letters, digits, '.', '_', '-', '@'); None: the server
                uses the user name, shared by every client without one.

        Returns:
            The sample (with its ``lease``), or None when no image is left to hand out.

        Raises:
            NotOfferedError: the server offers no strategy at all, or not this one.
            NotReadyError: the strategy cannot choose yet (HTTP 409: its scores are not computed, or
                the segmentation model it needs is not trained); the message says what to do.
        """
        client_id = _check_client_id(client_id)
        offered = self.strategies()
        if not offered:
            raise NotOfferedError(f"the server at {self.base_url} offers no active-learning strategy, so it cannot "
                                  "pick the next case")
        chosen = strategy or offered[0]
        if chosen not in offered:
            raise NotOfferedError(f"the server offers no active-learning strategy {chosen!r} (it offers: "
                                  f"{', '.join(offered)})")
        body = {"client_id": client_id} if client_id else {}
        try:
            data = self._json("POST", f"/activelearning/{chosen}", json_body=body,
                              what=f"the next case ({chosen} strategy)")
        except NotFoundError as err:  # the strategy went away (server restarted with other settings)
            raise NotOfferedError(f"the server offers no active-learning strategy {chosen!r} now"
                                  + (f": {err.detail}" if err.detail else ""), url=err.url, status=err.status) from err
        sample = NextSample.from_json(chosen, data)
        if sample is not None:
            logger.info("next case (%s) for %s: %s%s", chosen, client_id or "this user", sample.image_id,
                        f", leased for {sample.lease.seconds:.0f} s" if sample.lease else "")
        return sample

    def leases(self) -> List[Lease]:
        """The images handed out by active learning now (``GET /insight/leases``).

        Raises:
            NotOfferedError: the server keeps no leases.
        """
        data = self._campaign_json("GET", "/insight/leases", what="the active leases", feature="image leases")
        leases = data.get("leases") if isinstance(data, Mapping) else None
        if not isinstance(leases, list):
            raise MalformedAnswerError("the server's lease list has no 'leases' list")
        return [Lease.from_json(entry) for entry in leases]

    def release_lease(self, image_id: str, client_id: Optional[str] = None) -> Optional[Lease]:
        """Give an image back before labelling it (``DELETE /insight/leases/<image>?client_id=``).

        Args:
            image_id: the leased image.
            client_id: end only this client's lease; None ends whoever's it is.

        Returns:
            The lease that ended, or None when the image was not leased (to that client).
        """
        _check_image_id(image_id)
        client_id = _check_client_id(client_id)
        data = self._campaign_json("DELETE", f"/insight/leases/{image_id}",
                                   params={"client_id": client_id} if client_id else None,
                                   what=f"giving image {image_id!r} back", feature="image leases")
        released = data.get("released") if isinstance(data, Mapping) else None
        lease = Lease.from_json(released) if released is not None else None
        logger.info("lease on %s %s", image_id, "given back" if lease else "was not held")
        return lease

    # ------------------------------------------------------------------ training
    def train_start(self, model: str = DEFAULT_MODEL, params: Optional[Mapping[str, Any]] = None) -> TrainStatus:
        """Start training ``model`` on the server (``POST /train/<model>``).

        Args:
            model: the trainer (``pe_insight``: weak labels; ``pe_segmentation``: labels and pseudo-masks).
            params: the request, e.g. ``{"epochs": 1}`` (the trainer's keys: ``/info`` ``trainers.<model>.config``).

        Raises:
            NotOfferedError: the server has no trainer for ``model`` (checked first).
            NotReadyError: a training task is already running (HTTP 429).
            RequestRejectedError: the server says the request or the data cannot train (HTTP 422:
                a bad ``epochs``, no PE and no-PE weak labels...), with its reason.
        """
        info = self.info()
        if not info.offers_training(model):
            raise NotOfferedError(_no_training_message(self.base_url, model, info))
        try:
            data = self._json("POST", f"/train/{model}", json_body=dict(params or {}),
                              what=f"starting training of {model!r}")
        except NotFoundError as err:
            raise NotOfferedError(_no_training_message(self.base_url, model, info), url=err.url,
                                  status=err.status) from err
        except NotReadyError as err:
            raise NotReadyError(f"a training task is already running on the server at {self.base_url}: wait for it "
                                "to finish (or stop it) and start again", url=err.url, status=err.status,
                                detail=err.detail) from err
        status = TrainStatus.from_task(model, data, info.train_stats.get(model) if isinstance(
            info.train_stats.get(model), Mapping) else None, _trainer_epochs(info, model, params))
        logger.info("training of %s: %s (task %s)", model, status.state, status.task_id)
        return status

    def train_status(self, model: str = DEFAULT_MODEL) -> TrainStatus:
        """Where training of ``model`` stands (``GET /train/`` and ``/info`` ``train_stats``).

        ``state == "not_offered"`` when the server has no trainer for ``model``; ``busy`` while it
        trains another model; ``progress`` (0 to 1) from the trainer's per-epoch log lines while running.
        """
        info = self.info()
        if not info.offers_training(model):
            return TrainStatus(model=model, state="not_offered", message=_no_training_message(self.base_url, model,
                                                                                              info))
        response = self._send("GET", "/train/", params={"all": "false"}, accept_status=(404,),
                              what="the training status")
        task = None if response.status_code == 404 else _decode_json(response, "/train/")
        if task is not None and not isinstance(task, Mapping):
            raise MalformedAnswerError("the server's /train/ answer is not a JSON object")
        if task is not None and (not task.get("status") or "request" not in task and "id" not in task):
            raise MalformedAnswerError("the server's /train/ answer is not a training task")
        # /info may have been read before a run that ends now wrote its stats: read them after the task
        stats_source = self.info() if task is not None and str(task.get("status", "")).upper() == "DONE" else info
        stats = stats_source.train_stats.get(model)
        stats = stats if isinstance(stats, Mapping) else None
        task_model = _task_model(task)
        if task is None or (task_model is not None and task_model != model):
            return TrainStatus.without_task(model, stats, task)
        return TrainStatus.from_task(model, task, stats, _trainer_epochs(info, model, None))

    def train_stop(self, model: str = DEFAULT_MODEL) -> None:
        """Stop the running training task (``DELETE /train/``).

        Raises:
            NotOfferedError: the server has no trainer for ``model``.
        """
        self._require_trainer(model)
        self._send("DELETE", "/train/", what="stopping training")

    def _require_trainer(self, model: str) -> None:
        info = self.info()
        if not info.offers_training(model):
            raise NotOfferedError(_no_training_message(self.base_url, model, info))

    # ------------------------------------------------------------------ HTTP plumbing
    def _headers(self) -> Dict[str, str]:
        headers = {"User-Agent": f"SlicerInsight/{__version__}", "Accept": "application/json, multipart/form-data, */*"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers

    def _json(self, method: str, path: str, what: str, **kwargs: Any) -> Any:
        response = self._send(method, path, what=what, **kwargs)
        return _decode_json(response, path)

    def _campaign_send(self, method: str, path: str, what: str, feature: str, **kwargs: Any) -> requests.Response:
        """``_send`` for the SlicerInsight app's own routes: a 404 for the route itself (FastAPI's bare
        "Not Found") means the server lacks the feature, not the image."""
        try:
            return self._send(method, path, what=what, **kwargs)
        except NotFoundError as err:
            if (err.detail or "").strip().lower() == "not found":
                raise NotOfferedError(f"the server at {self.base_url} offers no {feature} ({what}): is it a "
                                      "SlicerInsight MONAI Label server of this version?", url=err.url,
                                      status=err.status) from err
            raise

    def _campaign_json(self, method: str, path: str, what: str, feature: str, **kwargs: Any) -> Any:
        return _decode_json(self._campaign_send(method, path, what=what, feature=feature, **kwargs), path)

    def _send(self, method: str, path: str, what: str, params: Optional[Mapping[str, Any]] = None,
              data: Optional[Mapping[str, Any]] = None, files: Optional[Mapping[str, Any]] = None,
              json_body: Any = None, timeout: Optional[float] = None,
              accept_status: Tuple[int, ...] = ()) -> requests.Response:
        """Send one request; return the response of a 2xx (or an accepted) status, else raise."""
        url = self.base_url + path
        read_timeout = self.timeouts.read if timeout is None else timeout
        try:
            response = requests.request(method, url, params=params, data=data, files=files, json=json_body,
                                        headers=self._headers(), timeout=(self.timeouts.connect, read_timeout),
                                        allow_redirects=True)
        except requests.exceptions.ConnectTimeout as err:
            raise ServerTimeoutError(f"could not connect to the server at {self.base_url} within "
                                     f"{self.timeouts.connect:g} s ({what}): check the URL and the network",
                                     url=url) from err
        except requests.exceptions.ReadTimeout as err:
            raise ServerTimeoutError(f"the server at {self.base_url} did not answer within {read_timeout:g} s "
                                     f"({what}): it may be busy or stuck; try again later", url=url) from err
        except (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema,
                requests.exceptions.InvalidSchema) as err:
            raise InvalidInputError(f"server URL {self.base_url!r} is not valid: {err}", url=url) from err
        except requests.exceptions.ConnectionError as err:
            raise _connection_error(err, self.base_url, url, what) from err
        except requests.exceptions.RequestException as err:
            raise SlicerInsightError(f"request to {self.base_url} failed ({what}): {type(err).__name__}: "
                                     f"{_first_line(str(err))}", url=url) from err
        status = response.status_code
        if 200 <= status < 300 or status in accept_status:
            return response
        raise _http_error(response, what, url)


# ---------------------------------------------------------------------- helpers
def _no_training_message(base_url: str, model: str, info: ServerInfo) -> str:
    offered = ", ".join(sorted(info.trainers)) or "none"
    return (f"the server at {base_url} offers no training for model {model!r} (trainers offered: {offered}); "
            "labels are still stored for later training")


def _not_trained_message(model: str, reason: Optional[str]) -> str:
    text = f"the server's {model} model is not trained yet, so it cannot segment: train it first ('Start " \
           f"training' of {model}) or ask the server's administrator for a checkpoint"
    return text + (f". Server: {_plain_text(reason)[:200]}" if reason else "")


def _task_model(task: Optional[Mapping[str, Any]]) -> Optional[str]:
    """The model a MONAI Label train task trains (its request's ``model``), or None."""
    if not task:
        return None
    request = task.get("request")
    model = request.get("model") if isinstance(request, Mapping) else None
    return str(model) if model else None


def _trainer_epochs(info: ServerInfo, model: str, params: Optional[Mapping[str, Any]]) -> Optional[int]:
    """Epochs of a run: the request's, else the trainer's default (``/info`` ``trainers.<model>.config``)."""
    candidates = [(params or {}).get("epochs")]
    trainer = info.trainers.get(model)
    config = trainer.get("config") if isinstance(trainer, Mapping) else None
    if isinstance(config, Mapping):
        candidates.append(config.get("epochs"))
    for value in candidates:
        if isinstance(value, (int, float, str)) and not isinstance(value, bool):
            try:
                number = int(float(value))
            except ValueError:
                continue
            if number > 0:
                return number
    return None


def _check_tag(tag: str) -> None:
    if not tag or not re.match(r"^[A-Za-z0-9_-]+$", tag):
        raise InvalidInputError(f"label tag {tag!r} must be letters, digits, '_' or '-'")


def _check_client_id(client_id: Optional[str]) -> Optional[str]:
    """A client id stripped (None for none); letters, digits and ``._-@`` only, at most 200 characters."""
    if client_id is None:
        return None
    if not isinstance(client_id, str):
        raise InvalidInputError(f"client id must be text, got {type(client_id).__name__}")
    client_id = client_id.strip()
    if not client_id:
        return None
    if len(client_id) > 200 or not re.match(r"^[A-Za-z0-9._@-]+$", client_id):
        raise InvalidInputError(f"client id {client_id[:40]!r} must be at most 200 letters, digits, '.', '_', '-' "
                                "or '@'")
    return client_id


def _infer_parts(response: requests.Response, model: str) -> Tuple[Any, Optional[bytes], Optional[str]]:
    """An /infer answer split into (JSON params, image part bytes or None, its file name or None)."""
    content_type = response.headers.get("content-type", "")
    media_type = parse_header_params(content_type)[0].lower()
    if media_type == "application/json":
        return _decode_json(response, f"/infer/{model}"), None, None
    if not media_type.startswith("multipart/"):
        raise MalformedAnswerError(f"the server's /infer/{model} answer is neither JSON nor multipart "
                                   f"(content-type {content_type or 'missing'!r})")
    params: Any = None
    image = filename = None
    for part in parse_multipart(response.content, content_type):
        if part.name == "params":
            try:
                params = json.loads(part.text())
            except (ValueError, UnicodeDecodeError) as err:
                raise MalformedAnswerError(f"the 'params' part of the /infer/{model} answer is not JSON") from err
        elif part.name == "image":
            image, filename = part.content, part.filename
    if params is None:
        raise MalformedAnswerError(f"the /infer/{model} answer has no 'params' part")
    return params, image, filename


def _check_image_id(image_id: str) -> None:
    if not image_id_is_valid(image_id):
        raise InvalidInputError(f"image id {image_id!r} is not valid: use letters, digits, '.', '_' and '-' "
                                "(starting with a letter or digit)")


def _read_upload(volume: Upload, filename: Optional[str]) -> Tuple[bytes, str]:
    if isinstance(volume, (bytes, bytearray)):
        if not filename:
            raise InvalidInputError("uploading bytes needs a file name with the format's suffix (e.g. .nii.gz)")
        return bytes(volume), filename
    path = os.fspath(volume)
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as err:
        raise InvalidInputError(f"cannot read {path}: {err.strerror or err}") from err
    return data, filename or os.path.basename(path)


def _volume_suffix(name: str) -> str:
    lower = name.lower()
    for suffix in VOLUME_SUFFIXES:
        if lower.endswith(suffix):
            return suffix
    raise InvalidInputError(f"{name!r} is not a volume file the server reads ({', '.join(VOLUME_SUFFIXES)})")


def _response_filename(response: requests.Response) -> Optional[str]:
    _, params = parse_header_params(response.headers.get("content-disposition", ""))
    name = params.get("filename")
    return os.path.basename(name) if name else None


def _decode_json(response: requests.Response, path: str) -> Any:
    try:
        return json.loads(response.content.decode(response.encoding or "utf-8"))
    except (ValueError, UnicodeDecodeError, LookupError) as err:
        content_type = response.headers.get("content-type", "missing")
        snippet = _plain_text(response.content[:400].decode("utf-8", "replace"))[:80]
        raise MalformedAnswerError(f"the server's answer to {path} is not JSON (content-type {content_type!r}"
                                   + (f", text {snippet!r}" if snippet else "")
                                   + "): is the URL a SlicerInsight MONAI Label server?",
                                   url=response.url, status=response.status_code) from err


def _connection_error(err: requests.exceptions.ConnectionError, base_url: str, url: str, what: str) -> SlicerInsightError:
    """Tell 'nobody listens' from 'something answered, but not HTTP' from 'dropped mid-answer'."""
    chain = _exception_chain(err)
    text = " ".join(str(c) for c in chain)
    if any(isinstance(c, (http.client.BadStatusLine, http.client.LineTooLong)) for c in chain) or \
            "BadStatusLine" in text:
        return MalformedAnswerError(f"the server at {base_url} answered something that is not HTTP ({what}): is "
                                    "the URL (host and port) a SlicerInsight MONAI Label server?", url=url)
    if any(isinstance(c, http.client.RemoteDisconnected) for c in chain) or "RemoteDisconnected" in text:
        return ServerUnreachableError(f"the server at {base_url} closed the connection without answering ({what}): "
                                      "it may have crashed or restarted; check the server log", url=url)
    reason = "connection refused" if "refused" in text.lower() else (
        "host not found" if "resolve" in text.lower() or "name or service" in text.lower() else "no connection")
    return ServerUnreachableError(f"cannot reach the server at {base_url} ({reason}) for {what}: is it running? "
                                  "(scripts/run-demo.sh starts one at http://127.0.0.1:8000)", url=url)


def _exception_chain(err: BaseException, limit: int = 20) -> List[BaseException]:
    """``err`` and every exception it wraps (causes, contexts, urllib3's ``reason`` and ``args``)."""
    seen: List[BaseException] = []
    pending = [err]
    while pending and len(seen) < limit:
        current = pending.pop(0)
        if any(current is s for s in seen):
            continue
        seen.append(current)
        wrapped = [current.__cause__, current.__context__, getattr(current, "reason", None), *current.args]
        pending.extend(e for e in wrapped if isinstance(e, BaseException))
    return seen


def _http_error(response: requests.Response, what: str, url: str) -> SlicerInsightError:
    status = response.status_code
    detail = _error_detail(response)
    suffix = f": {detail}" if detail else ""
    if status in (401, 403):
        return AuthenticationError(f"the server refused {what} (HTTP {status}, not authorized){suffix}. Check the "
                                   "token", url=url, status=status, detail=detail)
    if status == 404:
        return NotFoundError(f"the server refused {what} (HTTP 404, not found){suffix}", url=url, status=status,
                             detail=detail)
    if status in (409, 429):
        return NotReadyError(f"the server refused {what} for now (HTTP {status}){suffix}", url=url, status=status,
                             detail=detail)
    if 400 <= status < 500:
        return RequestRejectedError(f"the server refused {what} (HTTP {status}){suffix}", url=url, status=status,
                                    detail=detail)
    if status >= 500:
        return ServerFailureError(f"the server failed during {what} (HTTP {status}){suffix}; the server log has "
                                  "the details", url=url, status=status, detail=detail)
    return MalformedAnswerError(f"unexpected HTTP {status} from the server for {what}", url=url, status=status)


def _error_detail(response: requests.Response) -> str:
    """The server's explanation: FastAPI's ``detail`` when there is one, else the body's first useful
    line (HTML tags and Python tracebacks removed), at most 300 characters."""
    body = response.content or b""
    text = body.decode("utf-8", "replace")
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if isinstance(data, Mapping) and "detail" in data:
        return _detail_text(data["detail"])
    if isinstance(data, Mapping) and "error" in data:
        return _detail_text(data["error"])
    return _plain_text(text)


def _detail_text(detail: Any) -> str:
    if isinstance(detail, list):  # FastAPI validation errors: [{"loc": [...], "msg": "..."}]
        items = []
        for item in detail:
            if isinstance(item, Mapping):
                loc = ".".join(str(p) for p in item.get("loc", []) if p != "body")
                items.append(f"{loc}: {item.get('msg', '')}" if loc else str(item.get("msg", "")))
            else:
                items.append(str(item))
        return _plain_text("; ".join(items))
    return _plain_text(str(detail))


def _plain_text(text: str) -> str:
    text = re.sub(r"<[^>]+>", " ", text)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if any(line.startswith("Traceback (most recent call last)") for line in lines):
        # keep the exception line only: the last line that is not indented source
        tail = [line for line in lines if not line.startswith(("File ", "Traceback"))]
        lines = tail[-1:] if tail else []
    result = " ".join(" ".join(lines).split())
    return result if len(result) <= _MAX_DETAIL else result[:_MAX_DETAIL - 3] + "..."


def _first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return line.strip()[:_MAX_DETAIL]
    return ""
