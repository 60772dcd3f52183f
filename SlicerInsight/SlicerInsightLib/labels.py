"""Scan-level labels and the provenance record sent with every label.

A label sent back to the server is a voxel mask (uint8 NIfTI on the CT's grid, 1 = PE) saved with
MONAI Label's ``PUT /datastore/label``; its ``params`` form field carries a provenance record
(:class:`LabelProvenance`): the scan-level label (PE / no PE / uncertain), who made it, from which
model version and heatmap threshold, and how the mask was made:

- ``heatmap``: the thresholded heatmap, accepted unchanged;
- ``edited``: the thresholded heatmap, edited in the Segment Editor;
- ``manual``: drawn without a heatmap;
- ``empty``: no mask drawn (a scan-level label only; the mask is all zero).

The server keeps the record as the label's info (``GET /datastore/label/info``), so active
learning and training can weigh labels by where they came from.
"""

from __future__ import annotations

import datetime
import hashlib
import logging
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, Mapping, Optional

import numpy as np

from .errors import InvalidInputError

__all__ = [
    "SCAN_LABELS",
    "SCAN_LABEL_TEXT",
    "MASK_METHODS",
    "DEFAULT_LABEL_TAG",
    "PROVENANCE_SCHEMA",
    "LabelProvenance",
    "parse_scan_label",
    "mask_digest",
    "mask_method",
    "check_submission",
]

logger = logging.getLogger(__name__)

#: Scan-level label values, as stored on the server.
SCAN_LABELS = ("pe", "no_pe", "uncertain")
#: What the module shows for each value.
SCAN_LABEL_TEXT = {"pe": "PE", "no_pe": "No PE", "uncertain": "Uncertain"}
#: How a mask was made (see the module doc).
MASK_METHODS = ("heatmap", "edited", "manual", "empty")
#: MONAI Label's tag for finished labels (the ones active learning counts as done).
DEFAULT_LABEL_TAG = "final"
#: Version of the provenance record's layout.
PROVENANCE_SCHEMA = "slicerinsight-label/1"

_ALIASES = {"pe": "pe", "positive": "pe", "1": "pe", "yes": "pe",
            "no_pe": "no_pe", "no pe": "no_pe", "nope": "no_pe", "negative": "no_pe", "0": "no_pe", "no": "no_pe",
            "uncertain": "uncertain", "unsure": "uncertain", "?": "uncertain"}


def parse_scan_label(value: Any) -> str:
    """A scan-level label in its stored form (``pe``, ``no_pe``, ``uncertain``).

    Accepts the stored values, the display texts (``PE``, ``No PE``, ``Uncertain``) and a few aliases.

    Raises:
        InvalidInputError: anything else.
    """
    key = str(value).strip().lower().replace("-", "_") if value is not None else ""
    key = _ALIASES.get(key, _ALIASES.get(key.replace("_", " "), ""))
    if not key:
        raise InvalidInputError(f"unknown scan label {value!r}: use one of PE, No PE, Uncertain")
    return key


@dataclass
class LabelProvenance:
    """Who made a label, from what, and how.

    Attributes:
        annotator: the person submitting (free text, required).
        scan_label: ``pe``, ``no_pe`` or ``uncertain``.
        method: ``heatmap``, ``edited``, ``manual`` or ``empty``.
        model: the infer model the heatmap came from (``pe_insight``), or None for manual masks.
        model_version: that model's version string; required for ``heatmap`` and ``edited``.
        heatmap_threshold: the heatmap value the mask was cut at, or None.
        image_id: the server's image id the label belongs to.
        client: the submitting software.
        created_utc: ISO 8601 UTC time stamp (set on creation).
    """

    annotator: str
    scan_label: str
    method: str
    model: Optional[str] = None
    model_version: Optional[str] = None
    heatmap_threshold: Optional[float] = None
    image_id: Optional[str] = None
    client: str = "SlicerInsight"
    created_utc: str = field(default_factory=lambda: datetime.datetime.now(datetime.timezone.utc)
                             .replace(microsecond=0).isoformat())

    def __post_init__(self) -> None:
        self.annotator = (self.annotator or "").strip()
        if not self.annotator:
            raise InvalidInputError("a label needs the annotator's name")
        self.scan_label = parse_scan_label(self.scan_label)
        if self.method not in MASK_METHODS:
            raise InvalidInputError(f"unknown mask method {self.method!r}: use one of {', '.join(MASK_METHODS)}")
        if self.method in ("heatmap", "edited") and not self.model_version:
            raise InvalidInputError(f"a mask made from a heatmap ({self.method}) needs the model version it came from")
        if self.heatmap_threshold is not None:
            threshold = float(self.heatmap_threshold)
            if not 0.0 <= threshold <= 1.0:
                raise InvalidInputError(f"heatmap threshold must be in [0, 1], got {threshold}")
            self.heatmap_threshold = threshold

    def to_params(self) -> Dict[str, Any]:
        """The JSON object sent as the label's ``params`` (kept by the server as label info)."""
        params = {"schema": PROVENANCE_SCHEMA}
        params.update({k: v for k, v in asdict(self).items() if v is not None})
        return params

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> "LabelProvenance":
        """Rebuild a record from label info read back from the server (extra keys are ignored)."""
        known = {name: params[name] for name in cls.__dataclass_fields__ if name in params}
        return cls(**known)


def mask_digest(mask: np.ndarray) -> str:
    """SHA-1 of a mask's shape and foreground voxels (any dtype; nonzero = foreground).

    Stored when a segmentation is made from the heatmap, compared at submission to tell
    ``heatmap`` (unchanged) from ``edited``.
    """
    mask = np.asarray(mask)
    digest = hashlib.sha1(repr(tuple(mask.shape)).encode("ascii"))
    digest.update(np.packbits(mask.astype(bool, copy=False).ravel()).tobytes())
    return digest.hexdigest()


def mask_method(mask: np.ndarray, heatmap_digest: Optional[str]) -> str:
    """How a mask was made: ``empty`` (no foreground), ``manual`` (no heatmap origin), ``heatmap``
    (equal to the mask first made from the heatmap) or ``edited``."""
    if not np.any(mask):
        return "empty"
    if not heatmap_digest:
        return "manual"
    return "heatmap" if mask_digest(mask) == heatmap_digest else "edited"


def check_submission(scan_label: str, mask: Optional[np.ndarray]) -> None:
    """Refuse contradictory submissions: a PE label needs a mask with at least one voxel, and a
    "no PE" label must not carry one.

    Raises:
        InvalidInputError: with what to do instead.
    """
    label = parse_scan_label(scan_label)
    voxels = int(np.count_nonzero(mask)) if mask is not None else 0
    if label == "pe" and voxels == 0:
        raise InvalidInputError("a PE label needs a segmentation with the emboli: convert the heatmap or draw "
                                "them in the Segment Editor (or choose 'Uncertain')")
    if label == "no_pe" and voxels > 0:
        raise InvalidInputError(f"the label says 'No PE' but the segmentation marks {voxels} voxels: clear the "
                                "segmentation or choose 'PE' / 'Uncertain'")
