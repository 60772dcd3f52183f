"""De-identification of DICOM data sets: PS3.15 Annex E Basic Application Level Confidentiality Profile.

The attribute table (Table E.1-1, the "Basic Prof." column) comes as data from the
``dicom-anonymizer`` package (Kitware, BSD), revision ``dicomfields_2026c``; this module applies
it with its own rules (see :mod:`insight.dicom` for the choices). Everything happens in place on a
``pydicom.Dataset``: top level, every item of every sequence at any depth, the file meta group and
the 128-byte preamble.

Determinism: given the same ``secret``, the same input UID always maps to the same output UID
(``pydicom.uid.generate_uid`` with the secret and the UID as entropy sources, under pydicom's UID
root), the
same patient gets the same pseudonym and the same date offset. Without a secret from the user,
ingest draws a random one per run that is written nowhere, so offsets and mappings die with the
run.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import logging
from dataclasses import dataclass, field
from typing import Literal

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag, Tag
from pydicom.uid import (PYDICOM_IMPLEMENTATION_UID, ExplicitVRBigEndian, ExplicitVRLittleEndian,
                         ImplicitVRLittleEndian, generate_uid)

from insight import __version__

__all__ = ["DeidOptions", "Deidentifier", "profile_action", "PROFILE_REVISION", "DATE_SHIFT_RANGE_DAYS"]

logger = logging.getLogger(__name__)

#: The revision of PS3.15 Table E.1-1 the attribute actions are taken from.
PROFILE_REVISION = "dicomfields_2026c"
#: Range (inclusive) of the per-patient random date offset, in days: 1 to 10 years into the past.
DATE_SHIFT_RANGE_DAYS = (-3650, -365)
#: Dummy values for the profile's "D" action, by VR (UI values are remapped instead).
DUMMY_BY_VR = {"PN": "ANONYMIZED", "LO": "ANONYMIZED", "SH": "ANONYMIZED", "LT": "ANONYMIZED",
               "ST": "ANONYMIZED", "UT": "ANONYMIZED", "UC": "ANONYMIZED", "CS": "ANONYMIZED",
               "AE": "ANONYMIZED", "DA": "19000101", "DT": "19000101", "TM": "000000", "AS": "000D",
               "DS": "0", "IS": "0", "UR": ""}
#: UI attributes whose values name a class, syntax or coding scheme, never an instance: kept as is.
CLASS_UID_TAGS = frozenset(Tag(t) for t in (
    0x00080016,  # SOPClassUID
    0x00081150,  # ReferencedSOPClassUID
    0x00080062,  # SOPClassesInStudy
    0x0008010C,  # CodingSchemeUID
    0x00041510,  # ReferencedSOPClassUIDInFile
    0x00041512,  # ReferencedTransferSyntaxUIDInFile
    0x0008001A,  # RelatedGeneralSOPClassUID
    0x0008001B,  # OriginalSpecializedSOPClassUID
    0x00020002,  # MediaStorageSOPClassUID
    0x00020010,  # TransferSyntaxUID
))
#: Always emptied, whatever the date option: the birth date is not needed for longitudinal work.
ALWAYS_EMPTY = frozenset({Tag(0x00100030)})  # PatientBirthDate
#: Prefix of UIDs defined by the DICOM standard itself (classes, transfer syntaxes).
STANDARD_UID_ROOT = "1.2.840.10008."

_BYTES_VRS = frozenset({"OB", "OW", "OD", "OF", "OL", "OV", "UN", "OB or OW", "US or OW"})
_TEXT_VRS = frozenset({"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC",
                       "UI", "UR", "UT"})


def _load_profile() -> tuple[dict[int, str], list[tuple[int, int, int, int, str]]]:
    from dicomanonymizer.dicomfields_selector import dicom_anonymization_database_selector

    table = dicom_anonymization_database_selector(PROFILE_REVISION)
    categories = {"D_TAGS": "D", "Z_TAGS": "Z", "X_TAGS": "X", "U_TAGS": "U", "Z_D_TAGS": "Z/D",
                  "X_Z_TAGS": "X/Z", "X_D_TAGS": "X/D", "X_Z_D_TAGS": "X/Z/D", "X_Z_U_STAR_TAGS": "X/Z/U*"}
    exact: dict[int, str] = {}
    masked: list[tuple[int, int, int, int, str]] = []
    for category, action in categories.items():
        for entry in table[category]:
            if len(entry) == 2:
                exact[Tag(entry[0], entry[1])] = action
            else:
                group, element, group_mask, element_mask = entry
                masked.append((group, element, group_mask, element_mask, action))
    return exact, masked


_EXACT_ACTIONS, _MASKED_ACTIONS = _load_profile()


def profile_action(tag: BaseTag | int) -> str | None:
    """The Basic Profile action for ``tag`` (``"X"``, ``"Z"``, ``"D"``, ``"U"``, ``"X/Z"``...), or None."""
    tag = Tag(tag)
    action = _EXACT_ACTIONS.get(tag)
    if action is not None:
        return action
    for group, element, group_mask, element_mask, masked_action in _MASKED_ACTIONS:
        if (tag.group & group_mask) == group and (tag.element & element_mask) == element:
            return masked_action
    return None


@dataclass(frozen=True)
class DeidOptions:
    """How to de-identify.

    Attributes:
        secret: key for UIDs, pseudonyms and random date offsets (bytes; keep it private).
        date_mode: ``"shift"`` (every date moved by the patient's offset) or ``"remove"`` (dates
            emptied or removed as the profile says).
        shift_days: with ``"shift"``, one offset in days for every patient; None draws one per patient
            from ``secret`` in :data:`DATE_SHIFT_RANGE_DAYS`.
    """

    secret: bytes
    date_mode: Literal["shift", "remove"] = "shift"
    shift_days: int | None = None


@dataclass
class Deidentifier:
    """Applies the profile to data sets; holds the UID map and per-patient choices of one run."""

    options: DeidOptions
    uid_map: dict[str, str] = field(default_factory=dict)

    # --- per-run mappings -------------------------------------------------------------------
    def map_uid(self, uid: str) -> str:
        """The replacement for an instance UID: same input, same output (for a given secret)."""
        uid = str(uid).strip().rstrip("\x00")
        if not uid:
            return uid
        mapped = self.uid_map.get(uid)
        if mapped is None:
            # the default prefix (pydicom's root): with prefix=None pydicom ignores entropy_srcs
            mapped = str(generate_uid(entropy_srcs=[self.options.secret.hex(), uid]))
            self.uid_map[uid] = mapped
        return mapped

    def pseudonym(self, patient_id: str) -> str:
        """A patient's replacement PatientID/PatientName: ``ANON-`` and 12 hex digits of an HMAC."""
        return "ANON-" + self._keyed_hex("patient", patient_id)[:12].upper()

    def shift_days_for(self, patient_id: str) -> int:
        """The patient's date offset in days (the fixed one, or one drawn from the secret)."""
        if self.options.shift_days is not None:
            return self.options.shift_days
        low, high = DATE_SHIFT_RANGE_DAYS
        return low + int(self._keyed_hex("date-shift", patient_id), 16) % (high - low + 1)

    def opaque_id(self, text: str) -> str:
        """A keyed, non-reversible 16-hex-digit id for ``text`` (used for source paths in the manifest)."""
        return self._keyed_hex("source", text)[:16]

    def _keyed_hex(self, purpose: str, text: str) -> str:
        return hmac.new(self.options.secret, f"{purpose}\x00{text}".encode(), hashlib.sha256).hexdigest()

    # --- the profile --------------------------------------------------------------------------
    def deidentify(self, dataset: Dataset) -> Dataset:
        """De-identify ``dataset`` in place (file meta and preamble included) and return it.

        Geometry and intensity attributes (ImagePositionPatient, ImageOrientationPatient,
        PixelSpacing, SliceThickness, RescaleSlope/Intercept...) are not in the profile's table and
        are kept unchanged, and so is the pixel data.
        """
        patient_id = str(dataset.get("PatientID", "") or "")
        shift = self.shift_days_for(patient_id) if self.options.date_mode == "shift" else None
        pseudonym = self.pseudonym(patient_id)
        self._clean(dataset, shift)
        dataset.PatientName = pseudonym
        dataset.PatientID = pseudonym
        dataset.PatientIdentityRemoved = "YES"
        dataset.DeidentificationMethod = self.method_text()
        dataset.DeidentificationMethodCodeSequence = self._method_codes()
        dataset.LongitudinalTemporalInformationModified = "MODIFIED" if shift is not None else "REMOVED"
        self._clean_file_meta(dataset)
        dataset.preamble = b"\x00" * 128
        return dataset

    def method_text(self) -> str:
        """The DeidentificationMethod text (LO, at most 64 characters)."""
        dates = "dates shifted" if self.options.date_mode == "shift" else "dates removed"
        return f"insight {__version__}: PS3.15 E Basic Profile; {dates}"[:64]

    def _method_codes(self) -> Sequence:
        codes = [("113100", "Basic Application Confidentiality Profile")]
        if self.options.date_mode == "shift":
            codes.append(("113107", "Retain Longitudinal Temporal Information Modified Dates Option"))
        items = []
        for value, meaning in codes:
            item = Dataset()
            item.CodeValue = value
            item.CodingSchemeDesignator = "DCM"
            item.CodeMeaning = meaning
            items.append(item)
        return Sequence(items)

    def _clean_file_meta(self, dataset: Dataset) -> None:
        old = getattr(dataset, "file_meta", None) or FileMetaDataset()
        meta = FileMetaDataset()
        meta.FileMetaInformationVersion = b"\x00\x01"
        meta.MediaStorageSOPClassUID = dataset.get("SOPClassUID", old.get("MediaStorageSOPClassUID"))
        meta.MediaStorageSOPInstanceUID = dataset.get("SOPInstanceUID", "")
        if "TransferSyntaxUID" in old:
            meta.TransferSyntaxUID = old.TransferSyntaxUID
        elif getattr(dataset, "is_implicit_VR", True):  # a raw data set read without file meta
            meta.TransferSyntaxUID = ImplicitVRLittleEndian
        else:
            meta.TransferSyntaxUID = ExplicitVRLittleEndian if dataset.is_little_endian else ExplicitVRBigEndian
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        meta.ImplementationVersionName = f"INSIGHT_{__version__}"[:16]
        dataset.file_meta = meta

    def _clean(self, dataset: Dataset, shift: int | None) -> None:
        """Apply the rules to every element of ``dataset`` and, recursively, of its sequence items."""
        for tag in list(dataset.keys()):
            elem = dataset[tag]
            if tag.is_private or tag.element == 0x0000:  # private attributes; stale group lengths
                del dataset[tag]
                continue
            action = profile_action(tag)
            if elem.VR == "SQ":
                self._clean_sequence(dataset, elem, action, shift)
            elif elem.VR == "UI":
                self._clean_uid(dataset, elem, action)
            elif elem.VR in ("DA", "DT"):
                self._clean_date(dataset, elem, action, shift)
            elif elem.VR == "TM":
                self._apply(dataset, elem, action or "Z")
            elif elem.VR == "PN":
                self._apply(dataset, elem, action or "Z")
            elif action is not None:
                self._apply(dataset, elem, action)

    def _clean_sequence(self, dataset: Dataset, elem: DataElement, action: str | None, shift: int | None) -> None:
        if action in (None, "X/Z/U*", "U"):
            for item in elem.value:
                self._clean(item, shift)
        elif action.startswith("X"):
            del dataset[elem.tag]
        else:  # Z, D, Z/D: an empty sequence
            elem.value = Sequence()

    def _clean_uid(self, dataset: Dataset, elem: DataElement, action: str | None) -> None:
        if action is None:
            if elem.tag in CLASS_UID_TAGS:
                return
            values = _values(elem)
            if all(str(v).startswith(STANDARD_UID_ROOT) for v in values):
                return
            action = "U"
        if action in ("U", "D", "Z/D", "X/Z/U*"):
            mapped = [self.map_uid(v) for v in _values(elem)]
            elem.value = mapped if len(mapped) != 1 else mapped[0]
        else:
            self._apply(dataset, elem, action)

    def _clean_date(self, dataset: Dataset, elem: DataElement, action: str | None, shift: int | None) -> None:
        if elem.tag in ALWAYS_EMPTY:
            elem.value = ""
            return
        if shift is None:
            self._apply(dataset, elem, action or "Z")
            return
        shifted = [_shift_date(str(v), shift) for v in _values(elem)]
        shifted = [v for v in shifted if v]
        elem.value = shifted if len(shifted) > 1 else (shifted[0] if shifted else "")

    def _apply(self, dataset: Dataset, elem: DataElement, action: str) -> None:
        """Carry out one table action; compound actions resolve to the most removing one that keeps
        Type 1/2 attributes present (X/... -> remove, Z/D -> empty)."""
        if action.startswith("X"):
            del dataset[elem.tag]
        elif action in ("Z", "Z/D"):
            _empty(elem)
        elif action == "D":
            _dummy(elem, self)
        elif action == "U":
            mapped = [self.map_uid(v) for v in _values(elem)]
            elem.value = mapped if len(mapped) != 1 else mapped[0]
        else:  # unknown future action: be safe
            del dataset[elem.tag]


def _values(elem: DataElement) -> list:
    value = elem.value
    if value is None or value == "":
        return []
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return list(value)
    return [value]


def _empty(elem: DataElement) -> None:
    if elem.VR == "SQ":
        elem.value = Sequence()
    elif elem.VR in _BYTES_VRS:
        elem.value = b""
    elif elem.VR in _TEXT_VRS:
        elem.value = ""
    else:
        elem.value = None


def _dummy(elem: DataElement, deidentifier: Deidentifier) -> None:
    if elem.VR == "UI":
        elem.value = deidentifier.map_uid(str(elem.value))
    elif elem.VR in DUMMY_BY_VR:
        elem.value = DUMMY_BY_VR[elem.VR]
    else:
        _empty(elem)


def _shift_date(text: str, days: int) -> str:
    """Shift a DA or DT value by ``days``; returns the date part only (YYYYMMDD), '' if unparsable.

    The time of day of a DT is dropped: times are not kept (TM attributes are emptied too).
    """
    digits = text.strip().replace(".", "")  # old ACR-NEMA dates were YYYY.MM.DD
    if len(digits) < 8 or not digits[:8].isdigit():
        return ""
    try:
        day = dt.datetime.strptime(digits[:8], "%Y%m%d").date()
    except ValueError:
        return ""
    return (day + dt.timedelta(days=days)).strftime("%Y%m%d")
