"""The DICOM header facts QA needs, read once per series (pydicom, headers only).

A volume read by SimpleITK has lost what the files said: the true position of every slice (ITK spreads
slices evenly even when one is missing), the modality, body part and image type. This module reads those
from the same series :func:`insight.io.image_io.read_dicom_series` reads (the series with the most
files), without pixel data.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.errors import InvalidDicomError

__all__ = ["SeriesMetadata", "read_series_metadata"]

logger = logging.getLogger(__name__)

_TAGS = ("Modality", "BodyPartExamined", "ImageType", "SeriesDescription", "ImagePositionPatient",
         "ImageOrientationPatient", "SliceThickness", "ContrastBolusAgent", "RescaleSlope", "RescaleIntercept",
         "PixelPaddingValue")


@dataclass
class SeriesMetadata:
    """Header facts of one DICOM series (every field optional: headers are often incomplete).

    Attributes:
        modality: (0008,0060), e.g. ``CT``.
        body_part: (0018,0015) BodyPartExamined, upper case.
        image_types: the distinct (0008,0008) ImageType values, e.g. ``["ORIGINAL\\\\PRIMARY\\\\AXIAL"]``.
        series_description: (0008,103E).
        contrast_agent: (0018,0010) ContrastBolusAgent, when filled in.
        slice_thickness_mm: the largest (0018,0050) SliceThickness of the series, mm.
        slice_positions_mm: [N] sorted positions of the slices along the slice normal (mm), from
            ImagePositionPatient and ImageOrientationPatient; empty when those are missing.
        padding_hu: PixelPaddingValue converted to HU with the rescale of the first file, if present.
        n_files: number of files in the series.
    """

    modality: str | None = None
    body_part: str | None = None
    image_types: list[str] = field(default_factory=list)
    series_description: str | None = None
    contrast_agent: str | None = None
    slice_thickness_mm: float | None = None
    slice_positions_mm: np.ndarray = field(default_factory=lambda: np.zeros(0))
    padding_hu: float | None = None
    n_files: int = 0


def read_series_metadata(folder: str | os.PathLike) -> SeriesMetadata | None:
    """Header facts of the series in ``folder`` that the image reader picks; None when none is readable."""
    folder = Path(folder)
    reader = sitk.ImageSeriesReader()
    try:
        series_ids = reader.GetGDCMSeriesIDs(str(folder))
    except RuntimeError:
        return None
    if not series_ids:
        return None
    files = max((reader.GetGDCMSeriesFileNames(str(folder), sid) for sid in series_ids), key=len)
    headers = []
    for name in files:
        try:
            headers.append(pydicom.dcmread(name, stop_before_pixels=True, specific_tags=list(_TAGS)))
        except (InvalidDicomError, OSError, ValueError) as err:
            logger.warning("%s: cannot read DICOM header (%s)", name, err)
    if not headers:
        return None
    first = headers[0]
    return SeriesMetadata(
        modality=_text(first, "Modality"),
        body_part=(_text(first, "BodyPartExamined") or "").upper() or None,
        image_types=sorted({"\\".join(map(str, h.get("ImageType", []))) for h in headers if h.get("ImageType")}),
        series_description=_text(first, "SeriesDescription"),
        contrast_agent=_text(first, "ContrastBolusAgent"),
        slice_thickness_mm=_max_float(h.get("SliceThickness") for h in headers),
        slice_positions_mm=_positions_along_normal(headers),
        padding_hu=_padding_hu(first),
        n_files=len(headers),
    )


def _text(ds: pydicom.Dataset, keyword: str) -> str | None:
    value = ds.get(keyword)
    text = str(value).strip() if value is not None else ""
    return text or None


def _max_float(values) -> float | None:
    numbers = []
    for value in values:
        try:
            numbers.append(float(value))
        except (TypeError, ValueError):
            continue
    return max(numbers) if numbers else None


def _positions_along_normal(headers: list[pydicom.Dataset]) -> np.ndarray:
    """Sorted dot(ImagePositionPatient, slice normal) of every header that has both tags, mm."""
    orientation = headers[0].get("ImageOrientationPatient")
    if orientation is None or len(orientation) != 6:
        return np.zeros(0)
    row, col = np.asarray(orientation[:3], dtype=float), np.asarray(orientation[3:], dtype=float)
    normal = np.cross(row, col)
    positions = [float(np.dot(np.asarray(h.ImagePositionPatient, dtype=float), normal))
                 for h in headers if h.get("ImagePositionPatient") is not None and len(h.ImagePositionPatient) == 3]
    return np.sort(np.asarray(positions, dtype=float))


def _padding_hu(ds: pydicom.Dataset) -> float | None:
    padding = ds.get("PixelPaddingValue")
    if padding is None:
        return None
    try:
        return float(padding) * float(ds.get("RescaleSlope", 1.0)) + float(ds.get("RescaleIntercept", 0.0))
    except (TypeError, ValueError):
        return None
