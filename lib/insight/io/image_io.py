"""Reading and writing CT volumes with their geometry (SimpleITK).

Every reader returns a ``SimpleITK.Image``: voxels plus spacing, origin and direction in LPS
patient space (mm). Arrays taken from it with ``GetArrayFromImage`` are indexed [z, y, x].
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import SimpleITK as sitk

from insight.errors import InputError
from insight.io.atomic import atomic_output

__all__ = ["IMAGE_SUFFIXES", "case_name", "read_image", "read_dicom_series", "write_image", "find_images"]

logger = logging.getLogger(__name__)

#: File name endings read as single-file volumes, longest first so ``.nii.gz`` wins over ``.gz``.
IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")


def case_name(path: str | os.PathLike) -> str:
    """The case name of an input: file name without its image extension, or a DICOM folder's name."""
    p = Path(path)
    lower = p.name.lower()
    for suffix in IMAGE_SUFFIXES:
        if lower.endswith(suffix):
            return p.name[: -len(suffix)]
    return p.name


def find_images(folder: str | os.PathLike) -> list[Path]:
    """Single-file volumes directly inside ``folder`` (not recursive), sorted by name."""
    root = Path(folder)
    return sorted(p for p in root.iterdir() if p.is_file() and p.name.lower().endswith(IMAGE_SUFFIXES)
                  and not p.name.startswith("."))


def read_image(path: str | os.PathLike) -> sitk.Image:
    """Read a 3D volume from a NIfTI/NRRD/MetaImage file or a folder holding one DICOM series.

    Raises:
        InputError: the path does not exist, cannot be read, or is not a 3D scalar volume.
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"input not found: {p}")
    if p.is_dir():
        image = read_dicom_series(p)
    else:
        if not p.name.lower().endswith(IMAGE_SUFFIXES) and not _looks_like_dicom(p):
            raise InputError(f"{p.name}: unsupported file type (expected one of {', '.join(IMAGE_SUFFIXES)} "
                             "or a folder holding a DICOM series)")
        try:
            image = sitk.ReadImage(str(p))
        except RuntimeError as err:
            raise InputError(f"{p.name}: cannot read image ({_first_line(err)})") from err
    _check_volume(image, p)
    return image


def read_dicom_series(folder: str | os.PathLike) -> sitk.Image:
    """Read the DICOM series in ``folder``; with several series, the one with the most files.

    Slices are ordered by position along the slice normal (GDCM), rescale slope/intercept applied.
    """
    folder = Path(folder)
    reader = sitk.ImageSeriesReader()
    try:
        series_ids = reader.GetGDCMSeriesIDs(str(folder))
    except RuntimeError as err:
        raise InputError(f"{folder.name}: cannot scan folder for DICOM ({_first_line(err)})") from err
    if not series_ids:
        raise InputError(f"{folder.name}: folder holds no DICOM series and no readable volume")
    files_by_series = {sid: reader.GetGDCMSeriesFileNames(str(folder), sid) for sid in series_ids}
    chosen = max(files_by_series, key=lambda sid: len(files_by_series[sid]))
    if len(series_ids) > 1:
        logger.warning("%s holds %d DICOM series; reading %s (%d files)", folder.name, len(series_ids), chosen,
                       len(files_by_series[chosen]))
    reader.SetFileNames(files_by_series[chosen])
    reader.MetaDataDictionaryArrayUpdateOn()
    try:
        return reader.Execute()
    except RuntimeError as err:
        raise InputError(f"{folder.name}: cannot read DICOM series ({_first_line(err)})") from err


def write_image(image: sitk.Image, path: str | os.PathLike, compress: bool = True) -> Path:
    """Write ``image`` to ``path`` atomically (format from the extension); returns the path."""
    with atomic_output(path) as tmp:
        sitk.WriteImage(image, str(tmp), useCompression=compress)
    return Path(path)


def _check_volume(image: sitk.Image, path: Path) -> None:
    if image.GetDimension() != 3:
        raise InputError(f"{path.name}: expected a 3D volume, got a {image.GetDimension()}D image")
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"{path.name}: expected a scalar (grey-value) volume, got "
                         f"{image.GetNumberOfComponentsPerPixel()} components per voxel")
    if min(image.GetSize()) < 2:
        raise InputError(f"{path.name}: volume of size {image.GetSize()} is too small to analyze "
                         "(a single slice is not a CT volume)")


def _looks_like_dicom(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            handle.seek(128)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


def _first_line(err: Exception) -> str:
    text = str(err).strip().splitlines()
    useful = [line for line in text if line.strip() and "sitk::ERROR" in line] or text[-1:] or ["unknown error"]
    return useful[0].split("sitk::ERROR:")[-1].strip()
