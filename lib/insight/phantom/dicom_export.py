"""Write a volume (e.g. a phantom) as a CT DICOM series: one CT Image Storage file per slice.

Geometry is exact: slice ``k`` of the volume is a file whose ImagePositionPatient is the physical
position of voxel (0, 0, k) (``origin + k * spacing_z * slice direction``), ImageOrientationPatient
the first two columns of the direction matrix, PixelSpacing ``[row spacing (y), column spacing (x)]``,
SliceThickness and SpacingBetweenSlices the z spacing. Decimal strings carry up to 16 characters
(pydicom's ``auto_format``), so reading the series back (:func:`insight.io.read_image`) gives the
same grid to far better than 1e-3 mm. The slice direction must be the cross product of the row and
column directions (a right-handed direction matrix, as every DICOM reader assumes); a left-handed
volume is refused rather than written mirrored.

Pixels: signed 16-bit stored values with RescaleSlope 1 and RescaleIntercept -1024 (stored =
HU + 1024), RescaleType HU; the volume must hold integer HU in [-31744, 31743] (int16 after the
shift). No PHI: the patient is named after the case (``PHANTOM^<name>``), no dates, no institution;
every UID is new (study, series, frame of reference, each instance) unless a study UID is given.

The series appears whole or not at all: files are written into a temporary sibling folder which is
renamed onto ``out_dir`` at the end.

Public API::

    from insight.phantom.dicom_export import write_dicom_series
    paths = write_dicom_series(image, "out/phantom_s5_0000", name="phantom_s5_0000")
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID, generate_uid
from pydicom.valuerep import DSfloat

from insight import __version__
from insight.errors import InputError

__all__ = ["SeriesUids", "write_dicom_series", "RESCALE_INTERCEPT", "DIRECTION_TOLERANCE"]

logger = logging.getLogger(__name__)

#: HU = stored value + RESCALE_INTERCEPT (slope 1).
RESCALE_INTERCEPT = -1024
#: How far the slice direction may be from cross(row, column) (and the columns from unit length).
DIRECTION_TOLERANCE = 1e-6
_INT16 = np.iinfo(np.int16)


@dataclass(frozen=True)
class SeriesUids:
    """The UIDs a written series got (``sop_instance_uids[k]`` is slice k's file)."""

    study_instance_uid: str
    series_instance_uid: str
    frame_of_reference_uid: str
    sop_instance_uids: tuple[str, ...]


def write_dicom_series(image: sitk.Image, out_dir: str | os.PathLike, name: str, *,
                       study_instance_uid: str | None = None, series_number: int = 1,
                       series_description: str = "Synthetic CTPA phantom",
                       body_part: str = "CHEST", contrast_agent: str | None = "Iodinated contrast (synthetic)",
                       ) -> SeriesUids:
    """Write ``image`` (integer HU, 3D) as a CT series into the new folder ``out_dir``.

    Args:
        image: 3D scalar volume of integer HU (any integer pixel type), right-handed direction.
        out_dir: folder to create (must not exist, or be empty); files ``IM00001.dcm`` ... (slice order).
        name: the case name: PatientID ``name``, PatientName ``PHANTOM^name`` (at most 64 characters).
        study_instance_uid: put the series into this study; None: a new study.
        series_number, series_description, body_part: the series' attributes.
        contrast_agent: ContrastBolusAgent (None: attribute left out).

    Returns:
        The UIDs written.

    Raises:
        InputError: not a 3D integer scalar volume, HU out of range, a left-handed or non-orthonormal
            direction, a bad name, or ``out_dir`` exists and is not an empty folder.
    """
    array = _checked_array(image)
    if not name or len(name) > 64 or "\\" in name or not name.isprintable():
        raise InputError(f"name must be 1 to 64 printable characters without '\\', got {name!r}")
    final = Path(out_dir)
    if final.exists() and (not final.is_dir() or any(final.iterdir())):
        raise InputError(f"{final} exists and is not an empty folder")
    row, column, normal = _directions(image)
    spacing_x, spacing_y, spacing_z = (float(v) for v in image.GetSpacing())
    origin = np.asarray(image.GetOrigin(), dtype=float)
    stored = (array.astype(np.int32) - RESCALE_INTERCEPT).astype(np.int16)  # [z, y, x]

    uids = SeriesUids(study_instance_uid=study_instance_uid or generate_uid(), series_instance_uid=generate_uid(),
                      frame_of_reference_uid=generate_uid(),
                      sop_instance_uids=tuple(generate_uid() for _ in range(stored.shape[0])))
    series = _series_dataset(name, uids, series_number, series_description, body_part, contrast_agent)
    series.ImageOrientationPatient = [_ds(v) for v in (*row, *column)]
    series.PixelSpacing = [_ds(spacing_y), _ds(spacing_x)]
    series.SliceThickness = _ds(spacing_z)
    series.SpacingBetweenSlices = _ds(spacing_z)
    series.Rows, series.Columns = int(stored.shape[1]), int(stored.shape[2])

    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    try:
        for k in range(stored.shape[0]):
            position = origin + k * spacing_z * normal
            dataset = _slice_dataset(series, uids, k, position, float(np.dot(position, normal)), stored[k])
            dataset.save_as(staging / f"IM{k + 1:05d}.dcm", write_like_original=False)
        if final.exists():
            final.rmdir()  # empty (checked above); os.replace needs it gone or empty
        os.replace(staging, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(staging)
        raise
    logger.info("wrote %s as a %d-slice CT DICOM series in %s", name, stored.shape[0], final)
    return uids


def _checked_array(image: sitk.Image) -> np.ndarray:
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"a CT series needs a 3D scalar volume, got a {image.GetDimension()}D image with "
                         f"{image.GetNumberOfComponentsPerPixel()} component(s) per voxel")
    array = sitk.GetArrayViewFromImage(image)
    if not np.issubdtype(array.dtype, np.integer):
        raise InputError(f"a CT series needs integer HU, got pixel type {image.GetPixelIDTypeAsString()}")
    low, high = int(array.min()), int(array.max())
    if low + (-RESCALE_INTERCEPT) < _INT16.min or high - RESCALE_INTERCEPT > _INT16.max:
        raise InputError(f"HU range [{low}, {high}] does not fit int16 stored values with intercept "
                         f"{RESCALE_INTERCEPT}")
    return np.asarray(array)


def _directions(image: sitk.Image) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row (x), column (y) and slice (z) unit directions; the slice direction must be row x column."""
    direction = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)
    row, column, normal = direction[:, 0], direction[:, 1], direction[:, 2]
    if not np.allclose(direction.T @ direction, np.eye(3), atol=DIRECTION_TOLERANCE):
        raise InputError("the volume's direction matrix is not orthonormal; cannot write DICOM orientation")
    if not np.allclose(np.cross(row, column), normal, atol=DIRECTION_TOLERANCE):
        raise InputError("the volume's slice direction is not cross(row, column) (a left-handed direction "
                         "matrix); DICOM readers would read it mirrored. Flip the volume along z first.")
    return row, column, normal


def _ds(value: float) -> DSfloat:
    """A decimal string of at most 16 characters, as precise as that allows."""
    return DSfloat(float(value), auto_format=True)


def _series_dataset(name: str, uids: SeriesUids, series_number: int, description: str, body_part: str,
                    contrast_agent: str | None) -> Dataset:
    """The attributes every slice of the series shares (patient, study, series, equipment, pixels)."""
    ds = Dataset()
    ds.SOPClassUID = CTImageStorage
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.PatientName = f"PHANTOM^{name}"[:64]
    ds.PatientID = name
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    ds.PatientIdentityRemoved = "YES"  # nothing was ever identifying: a synthetic volume
    ds.StudyInstanceUID = uids.study_instance_uid
    ds.StudyDate = ""
    ds.StudyTime = ""
    ds.StudyID = ""
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = "Synthetic CTPA"
    ds.Modality = "CT"
    ds.SeriesInstanceUID = uids.series_instance_uid
    ds.SeriesNumber = int(series_number)
    ds.SeriesDescription = description[:64]
    ds.BodyPartExamined = body_part[:16]
    if contrast_agent:
        ds.ContrastBolusAgent = contrast_agent[:64]
    ds.FrameOfReferenceUID = uids.frame_of_reference_uid
    ds.PositionReferenceIndicator = ""
    ds.Manufacturer = "SlicerInsight"
    ds.ManufacturerModelName = "insight phantom"
    ds.SoftwareVersions = __version__
    ds.KVP = ""
    ds.AcquisitionNumber = 1
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.RescaleIntercept = _ds(RESCALE_INTERCEPT)
    ds.RescaleSlope = _ds(1)
    ds.RescaleType = "HU"
    ds.WindowCenter = _ds(100)
    ds.WindowWidth = _ds(700)
    return ds


def _slice_dataset(series: Dataset, uids: SeriesUids, k: int, position: np.ndarray, location: float,
                   pixels: np.ndarray) -> Dataset:
    """Slice ``k``: the shared attributes plus instance, position and pixel data, with file meta."""
    ds = copy.deepcopy(series)
    ds.SOPInstanceUID = uids.sop_instance_uids[k]
    ds.InstanceNumber = k + 1
    ds.ImagePositionPatient = [_ds(v) for v in position]
    ds.SliceLocation = _ds(location)
    ds.PixelData = np.ascontiguousarray(pixels, dtype="<i2").tobytes()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = f"INSIGHT_{__version__}"[:16]
    ds.file_meta = meta
    ds.preamble = b"\x00" * 128
    ds.is_little_endian, ds.is_implicit_VR = True, False
    return ds
