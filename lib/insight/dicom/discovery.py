"""Walk a folder tree, read DICOM headers (no pixel data) and group the files by series.

Every file under the root is looked at once. Files that are not DICOM, cannot be parsed, lack the
UIDs that identify them, are a DICOMDIR, or repeat an instance already seen are returned as
:class:`~insight.dicom.records.SkippedFile` with a reason; they never stop the walk.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from insight.dicom.records import DicomHeader, Note, SeriesGroup, SkippedFile

__all__ = ["Discovery", "discover", "group_series", "read_header"]

logger = logging.getLogger(__name__)

#: Media Storage Directory Storage: a DICOMDIR index file, not an image.
DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"


@dataclass
class Discovery:
    """What a walk found: readable DICOM headers and the files left out, with ``n_seen`` files in all."""

    headers: list[DicomHeader] = field(default_factory=list)
    skipped: list[SkippedFile] = field(default_factory=list)
    n_seen: int = 0


def discover(root: str | os.PathLike) -> Discovery:
    """Read the header of every file under ``root`` (recursively, symlinked folders not followed).

    Returns:
        A :class:`Discovery`; duplicate SOPInstanceUIDs keep the first file in path order.
    """
    found = Discovery()
    seen_instances: dict[str, Path] = {}
    for folder, subfolders, names in os.walk(root):
        subfolders.sort()
        for name in sorted(names):
            path = Path(folder, name)
            if not path.is_file():
                continue
            found.n_seen += 1
            header = read_header(path)
            if isinstance(header, SkippedFile):
                found.skipped.append(header)
                continue
            if header.sop_instance_uid in seen_instances:
                found.skipped.append(SkippedFile(path, Note(
                    "duplicate_instance", "same SOPInstanceUID as a file read earlier; kept the first copy")))
                continue
            seen_instances[header.sop_instance_uid] = path
            found.headers.append(header)
    logger.info("scanned %d files: %d DICOM headers read, %d files skipped", found.n_seen, len(found.headers),
                len(found.skipped))
    return found


def read_header(path: Path) -> DicomHeader | SkippedFile:
    """The :class:`DicomHeader` of ``path``, or a :class:`SkippedFile` saying why there is none."""
    dataset = _read_dataset(path)
    if isinstance(dataset, SkippedFile):
        return dataset
    sop_class = str(dataset.get("SOPClassUID", "") or "")
    if path.name.upper() == "DICOMDIR" or sop_class == DICOMDIR_SOP_CLASS or "DirectoryRecordSequence" in dataset:
        return SkippedFile(path, Note("dicomdir", "DICOMDIR index file, not an image"))
    missing = [kw for kw in ("SOPClassUID", "SOPInstanceUID", "SeriesInstanceUID") if not dataset.get(kw)]
    if missing:
        return SkippedFile(path, Note("incomplete_header", f"DICOM header lacks {', '.join(missing)} "
                                                           "(truncated or not a stored instance)"))
    return DicomHeader(
        path=path,
        sop_class_uid=sop_class,
        sop_instance_uid=str(dataset.SOPInstanceUID),
        series_instance_uid=str(dataset.SeriesInstanceUID),
        study_instance_uid=str(dataset.get("StudyInstanceUID", "") or ""),
        patient_id=str(dataset.get("PatientID", "") or ""),
        modality=str(dataset.get("Modality", "") or "").upper(),
        image_type=tuple(str(v).upper() for v in _as_list(dataset.get("ImageType"))),
        position=_floats(dataset.get("ImagePositionPatient"), 3),
        orientation=_floats(dataset.get("ImageOrientationPatient"), 6),
        pixel_spacing=_floats(dataset.get("PixelSpacing"), 2),
        rows=_int(dataset.get("Rows")),
        columns=_int(dataset.get("Columns")),
        number_of_frames=_int(dataset.get("NumberOfFrames")) or 1,
        samples_per_pixel=_int(dataset.get("SamplesPerPixel")) or 1,
        instance_number=_int(dataset.get("InstanceNumber")),
        series_number=_int(dataset.get("SeriesNumber")),
        series_description=str(dataset.get("SeriesDescription", "") or ""),
        study_date=str(dataset.get("StudyDate", "") or ""),
        study_time=str(dataset.get("StudyTime", "") or ""),
        burned_in_annotation=str(dataset.get("BurnedInAnnotation", "") or "").upper(),
        gantry_tilt_deg=_float(dataset.get("GantryDetectorTilt")),
    )


def group_series(headers: list[DicomHeader]) -> list[SeriesGroup]:
    """Group headers by SeriesInstanceUID, localizer images apart; groups in a stable order.

    The order is patient, study (date, time, UID), series number, series UID, so that the output
    names that ingest derives from it are the same on every run over the same input.
    """
    groups: dict[tuple[str, bool], SeriesGroup] = {}
    for header in headers:
        key = (header.series_instance_uid, header.is_localizer)
        groups.setdefault(key, SeriesGroup(header.series_instance_uid)).files.append(header)

    def order(group: SeriesGroup) -> tuple:
        first = group.first
        number = first.series_number if first.series_number is not None else 1 << 30
        return (first.patient_id, first.study_date, first.study_time, first.study_instance_uid, number,
                group.series_instance_uid, first.is_localizer)

    return sorted(groups.values(), key=order)


def _read_dataset(path: Path) -> Dataset | SkippedFile:
    try:
        return pydicom.dcmread(path, stop_before_pixels=True)
    except InvalidDicomError:
        pass  # no 'DICM' preamble: maybe a raw data set without file meta; checked below
    except Exception as err:  # pydicom raises many types on damaged files
        return SkippedFile(path, Note("unreadable_dicom", f"DICOM header cannot be parsed ({type(err).__name__})"))
    try:
        dataset = pydicom.dcmread(path, stop_before_pixels=True, force=True)
        if dataset.get("SOPClassUID") and dataset.get("SOPInstanceUID"):
            return dataset
    except Exception:  # a non-DICOM file read with force=True may fail in any way
        pass
    return SkippedFile(path, Note("not_dicom", "not a DICOM file"))


def _as_list(value: object) -> list:
    if value is None:
        return []
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return list(value)
    return [value]


def _floats(value: object, count: int) -> tuple[float, ...] | None:
    values = _as_list(value)
    if len(values) != count:
        return None
    try:
        return tuple(float(v) for v in values)
    except (TypeError, ValueError):
        return None


def _float(value: object) -> float | None:
    try:
        return None if value in (None, "") else float(value)
    except (TypeError, ValueError):
        return None


def _int(value: object) -> int | None:
    try:
        return None if value in (None, "") else int(value)
    except (TypeError, ValueError):
        return None
