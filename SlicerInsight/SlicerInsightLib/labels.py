"""Scan-level labels, weak labels, and the provenance record sent with every label.

Two kinds of label go back to the server:

- the **scan-level label** (PE / no PE / uncertain), stored as the image's *weak label*
  (``PUT /insight/weak-labels/<image>`` with ``{"pe": 1 | 0 | "uncertain"}``): what ``pe_insight``
  trains on. :func:`weak_label_value` and :func:`scan_label_from_weak` convert.
- the **segmentation**: a voxel mask (uint8 NIfTI on the CT's grid, 1 = PE) saved with MONAI
  Label's ``PUT /datastore/label``; its ``params`` form field carries a provenance record
  (:class:`LabelProvenance`): who made it, how, from which model version's proposal, an optional
  uncertainty note, and the client id (which ends the client's active-learning lease). The server
  keeps every saved version with its provenance (``GET /insight/labels/<image>/versions``).

How a mask was made (the server's ``method``):

- ``pseudo``: a model's proposal (the thresholded heatmap, or the ``pe_segmentation`` output),
  saved unchanged;
- ``edited``: a model's proposal, corrected in the Segment Editor;
- ``manual``: drawn without a proposal (also an empty mask drawn from nothing).

``pseudo`` and ``edited`` need the proposing model's version. :func:`mask_method` tells the three
apart from a digest of the proposal kept when it was made.
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
    "WEAK_LABEL_VALUES",
    "DEFAULT_LABEL_TAG",
    "PROVENANCE_SCHEMA",
    "LabelProvenance",
    "parse_scan_label",
    "weak_label_value",
    "scan_label_from_weak",
    "mask_digest",
    "mask_method",
    "check_submission",
]

logger = logging.getLogger(__name__)

#: Scan-level label values, as stored on the server.
SCAN_LABELS = ("pe", "no_pe", "uncertain")
#: What the module shows for each value.
SCAN_LABEL_TEXT = {"pe": "PE", "no_pe": "No PE", "uncertain": "Uncertain"}
#: How a mask was made (see the module doc); the server's ``method`` values.
MASK_METHODS = ("pseudo", "edited", "manual")
#: Scan label -> the server's weak label value (``pe`` of ``/insight/weak-labels``).
WEAK_LABEL_VALUES = {"pe": 1, "no_pe": 0, "uncertain": "uncertain"}
#: MONAI Label's tag for finished labels (the ones active learning counts as done).
DEFAULT_LABEL_TAG = "final"
#: Version of the provenance record's layout.
PROVENANCE_SCHEMA = "slicerinsight-label/2"
#: Longest annotator name and uncertainty note the server accepts (characters).
MAX_ANNOTATOR_CHARS = 200
MAX_NOTE_CHARS = 2000

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


def weak_label_value(scan_label: Any) -> Any:
    """The server's weak label value for a scan label: 1 (PE), 0 (no PE) or ``"uncertain"``.

    Raises:
        InvalidInputError: not a scan label (see :func:`parse_scan_label`).
    """
    return WEAK_LABEL_VALUES[parse_scan_label(scan_label)]


def scan_label_from_weak(value: Any) -> Optional[str]:
    """The scan label of a weak label value read from the server (1/0/"1"/"0"/"uncertain"); None when unset.

    Raises:
        InvalidInputError: a value the server does not write.
    """
    if value is None:
        return None
    if isinstance(value, bool):
        value = int(value)
    key = str(value).strip().lower()
    for label, weak in WEAK_LABEL_VALUES.items():
        if key == str(weak):
            return label
    raise InvalidInputError(f"unknown weak label value {value!r} (expected 0, 1 or 'uncertain')")


@dataclass
class LabelProvenance:
    """Who made a label, from what, and how.

    The server reads ``annotator``, ``method``, ``model``, ``model_version``, ``uncertainty`` and
    ``client_id`` (and validates them); it keeps the other keys with the label's info as sent.

    Attributes:
        annotator: the person submitting (free text, required, at most 200 characters).
        scan_label: ``pe``, ``no_pe`` or ``uncertain``.
        method: ``pseudo``, ``edited`` or ``manual`` (see the module doc).
        model: the infer model whose proposal the mask started from (``pe_insight`` for a thresholded
            heatmap, ``pe_segmentation``), or None for manual masks.
        model_version: that model's version string; required for ``pseudo`` and ``edited``.
        heatmap_threshold: the heatmap value a heatmap proposal was cut at, or None.
        uncertainty: a free-text note on what the annotator is unsure about (at most 2000 characters), or None.
        client_id: this client's id (the one it asks for next cases with): saving a final label ends
            its lease on the image. None: no lease to end.
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
    uncertainty: Optional[str] = None
    client_id: Optional[str] = None
    image_id: Optional[str] = None
    client: str = "SlicerInsight"
    created_utc: str = field(default_factory=lambda: datetime.datetime.now(datetime.timezone.utc)
                             .replace(microsecond=0).isoformat())

    def __post_init__(self) -> None:
        self.annotator = (self.annotator or "").strip()
        if not self.annotator:
            raise InvalidInputError("a label needs the annotator's name")
        if len(self.annotator) > MAX_ANNOTATOR_CHARS:
            raise InvalidInputError(f"the annotator's name is {len(self.annotator)} characters long (at most "
                                    f"{MAX_ANNOTATOR_CHARS})")
        self.scan_label = parse_scan_label(self.scan_label)
        if self.method not in MASK_METHODS:
            raise InvalidInputError(f"unknown mask method {self.method!r}: use one of {', '.join(MASK_METHODS)}")
        if self.method in ("pseudo", "edited") and not self.model_version:
            raise InvalidInputError(f"a mask made from a model's proposal ({self.method}) needs the version of that "
                                    "model: make the proposal with 'Convert to segmentation' or 'Segment with "
                                    "model', or choose 'manual'")
        if self.heatmap_threshold is not None:
            threshold = float(self.heatmap_threshold)
            if not 0.0 <= threshold <= 1.0:
                raise InvalidInputError(f"heatmap threshold must be in [0, 1], got {threshold}")
            self.heatmap_threshold = threshold
        self.uncertainty = (self.uncertainty or "").strip() or None
        if self.uncertainty is not None and len(self.uncertainty) > MAX_NOTE_CHARS:
            raise InvalidInputError(f"the uncertainty note is {len(self.uncertainty)} characters long (at most "
                                    f"{MAX_NOTE_CHARS})")
        self.client_id = (self.client_id or "").strip() or None

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

    Stored when a segmentation is made from a model's proposal, compared at submission to tell
    ``pseudo`` (unchanged) from ``edited``.
    """
    mask = np.asarray(mask)
    digest = hashlib.sha1(repr(tuple(mask.shape)).encode("ascii"))
    digest.update(np.packbits(mask.astype(bool, copy=False).ravel()).tobytes())
    return digest.hexdigest()


def mask_method(mask: np.ndarray, proposal_digest: Optional[str]) -> str:
    """How a mask was made: ``manual`` (no proposal it started from), ``pseudo`` (equal to the proposal,
    see :func:`mask_digest`) or ``edited``."""
    if not proposal_digest:
        return "manual"
    return "pseudo" if mask_digest(mask) == proposal_digest else "edited"


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
