"""Findings as a DICOM Segmentation (SEG) that references the source CT series, and back.

The SEG is made with highdicom from the source series' headers and the findings' label map (see
:mod:`insight.reports.regions`), which must lie on the source slices exactly: every source image's
ImagePositionPatient must be the corner of one slice k of the heatmap grid (to 0.01 voxel), with the
same ImageOrientationPatient, PixelSpacing, Rows and Columns. The frames then carry the source
images' own positions, and each frame's derivation sequence names the source SOP instance it
segments. A heatmap from a resampled volume (gantry tilt, gaps) does not lie on the source slices
and is refused instead of being written with a position error.

Segments (``mode``):

- ``"findings"`` (default): one segment per finding, segment number = finding label (1 = highest
  peak), label ``PE suspicion <n>``.
- ``"suspicion"``: one segment ``PE suspicion`` holding the union of the findings' regions.

Codes: category SCT 49755003 "Morphologically abnormal structure", type SCT 55584005 "Embolus",
anatomic region SCT 81040000 "Pulmonary artery"; algorithm type AUTOMATIC, family DCM 123110
"Artificial Intelligence", the model version as algorithm version. BINARY segmentation, empty
frames omitted, Explicit VR Little Endian.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Sequence

import highdicom as hd
import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from insight import __version__
from insight.errors import InputError
from insight.inference.findings import Finding

__all__ = ["SEG_MODES", "SEG_SOP_CLASS_UID", "SEG_SERIES_NUMBER", "load_source_series", "order_on_grid", "slice_index_on_grid",
           "build_findings_seg", "seg_to_label_map"]

logger = logging.getLogger(__name__)

SEG_MODES = ("findings", "suspicion")
#: Segmentation Storage.
SEG_SOP_CLASS_UID = "1.2.840.10008.5.1.4.1.1.66.4"
#: SeriesNumber of the SEG series (a PACS sorts series by number; high numbers go after the CT).
SEG_SERIES_NUMBER = 901
#: A source image's corner may lie this far (in voxels) from a grid voxel corner.
GRID_TOLERANCE_VOXELS = 0.01
#: Relative tolerance on direction cosines and pixel spacing between the source images and the grid.
GEOMETRY_TOLERANCE = 1e-4
_PULMONARY_ARTERY = hd.sr.CodedConcept("81040000", "SCT", "Pulmonary artery")


def load_source_series(folder: str | os.PathLike) -> list[Dataset]:
    """Headers (no pixel data) of the DICOM series in ``folder``, the one with the most files.

    This is the series :func:`insight.io.read_image` reads from the same folder.

    Raises:
        InputError: ``folder`` is not a folder or holds no DICOM image with a SeriesInstanceUID.
    """
    root = Path(folder)
    if not root.is_dir():
        raise InputError(f"{root}: a DICOM SEG needs the source DICOM series folder as input")
    by_series: dict[str, list[Dataset]] = {}
    for path in sorted(p for p in root.iterdir() if p.is_file()):
        try:
            dataset = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception:  # not DICOM, or damaged: not part of the series
            logger.debug("load_source_series: %s is not a readable DICOM file", path.name)
            continue
        if dataset.get("SeriesInstanceUID") and dataset.get("ImagePositionPatient") is not None:
            by_series.setdefault(str(dataset.SeriesInstanceUID), []).append(dataset)
    if not by_series:
        raise InputError(f"{root.name}: no DICOM image with a position in this folder; cannot make a DICOM SEG")
    return max(by_series.values(), key=len)


def order_on_grid(grid: sitk.Image, datasets: Sequence[Dataset]) -> list[Dataset]:
    """The source images sorted by their slice index on ``grid``, one per slice.

    Raises:
        InputError: an image does not lie on the grid (orientation, spacing, size or position), two
            images fall on one slice, or a slice of the grid has no source image.
    """
    by_slice: dict[int, Dataset] = {}
    for dataset in datasets:
        slice_index = slice_index_on_grid(grid, dataset)
        if slice_index in by_slice:
            raise InputError(f"source image {dataset.get('InstanceNumber', '?')}: two source images lie on "
                             f"slice {slice_index}; cannot make a DICOM SEG")
        by_slice[slice_index] = dataset
    missing = sorted(set(range(grid.GetSize()[2])) - set(by_slice))
    if missing:
        raise InputError(f"{len(missing)} slice(s) of the heatmap grid (first: {missing[0]}) have no source "
                         "image; cannot make a DICOM SEG")
    return [by_slice[k] for k in range(grid.GetSize()[2])]


def slice_index_on_grid(grid: sitk.Image, header: Dataset, what: str | None = None) -> int:
    """Index k of the slice of ``grid`` that an image (or SEG frame) header lies on.

    ``header`` needs ImageOrientationPatient, ImagePositionPatient, PixelSpacing, Rows, Columns.
    Its position must be the corner of voxel (0, 0, k) to :data:`GRID_TOLERANCE_VOXELS`.

    Raises:
        InputError: orientation, spacing, size or position do not match a slice of the grid.
    """
    where = what or f"source image {header.get('InstanceNumber', '?')}"
    size_x, size_y, size_z = grid.GetSize()
    direction = np.asarray(grid.GetDirection(), dtype=float).reshape(3, 3)
    spacing_x, spacing_y, _ = grid.GetSpacing()
    orientation = np.asarray([float(v) for v in header.ImageOrientationPatient], dtype=float)
    if not (np.allclose(orientation[:3], direction[:, 0], atol=GEOMETRY_TOLERANCE)
            and np.allclose(orientation[3:], direction[:, 1], atol=GEOMETRY_TOLERANCE)):
        raise InputError(f"{where}: its orientation differs from the heatmap grid's")
    row_spacing, column_spacing = (float(v) for v in header.PixelSpacing)
    if not (np.isclose(column_spacing, spacing_x, rtol=GEOMETRY_TOLERANCE)
            and np.isclose(row_spacing, spacing_y, rtol=GEOMETRY_TOLERANCE)):
        raise InputError(f"{where}: PixelSpacing differs from the heatmap grid's")
    if (int(header.Columns), int(header.Rows)) != (size_x, size_y):
        raise InputError(f"{where}: {header.Columns}x{header.Rows} pixels, the heatmap grid has {size_x}x{size_y}")
    i, j, k = grid.TransformPhysicalPointToContinuousIndex([float(v) for v in header.ImagePositionPatient])
    slice_index = int(round(k))
    if (abs(i) > GRID_TOLERANCE_VOXELS or abs(j) > GRID_TOLERANCE_VOXELS
            or abs(k - slice_index) > GRID_TOLERANCE_VOXELS or not 0 <= slice_index < size_z):
        raise InputError(f"{where}: its position is not a slice of the heatmap grid (continuous index "
                         f"{i:.3f}, {j:.3f}, {k:.3f}); was the volume resampled (gantry tilt, missing slices)?")
    return slice_index


def build_findings_seg(label_map: sitk.Image, findings: Sequence[Finding], source: Sequence[Dataset],
                       model_version: str, threshold: float, mode: str = "findings") -> Dataset:
    """A DICOM SEG of the findings, referencing the ``source`` images.

    Args:
        label_map: uint16 label map on the source grid (finding label per voxel, 0 elsewhere), [z, y, x]
            as its numpy view; see :func:`insight.reports.regions.findings_label_map`.
        findings: the findings whose labels appear in ``label_map``.
        source: the source series' datasets (headers suffice), in any order.
        model_version: the checkpoint version (algorithm version in the SEG).
        threshold: the heatmap threshold the findings were cut at (in the content description).
        mode: ``"findings"`` (one segment per finding) or ``"suspicion"`` (one segment).

    Returns:
        The SEG dataset (highdicom ``Segmentation``): same patient and study as the source, a new
        series, one frame per (slice, segment) holding any voxel.

    Raises:
        InputError: no findings, or the source images do not lie on the label map's grid.
        ValueError: an unknown ``mode``.
    """
    if mode not in SEG_MODES:
        raise ValueError(f"mode must be one of {SEG_MODES}, got {mode!r}")
    if not findings:
        raise InputError("no findings above the threshold: a DICOM SEG needs at least one region")
    try:
        ordered = order_on_grid(label_map, source)
    except InputError as err:
        raise InputError(f"cannot make a DICOM SEG on the source slices: {err}") from err
    labels = sitk.GetArrayFromImage(label_map)  # [z, y, x], frame k = source image k
    algorithm = hd.AlgorithmIdentificationSequence(name="SlicerInsight INSIGHT",
                                                   family=codes.cid7162.ArtificialIntelligence,
                                                   version=model_version[:64])
    if mode == "suspicion":
        pixels = (labels > 0).astype(np.uint8)
        names = [(1, "PE suspicion")]
    else:
        pixels = labels
        names = [(int(f.label), f"PE suspicion {int(f.label)}") for f in sorted(findings, key=lambda f: f.label)]
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=number, segment_label=name,
            segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
            segmented_property_type=codes.SCT.Embolus, algorithm_type="AUTOMATIC",
            algorithm_identification=algorithm, anatomic_regions=[_PULMONARY_ARTERY],
            tracking_uid=generate_uid(), tracking_id=name)
        for number, name in names]
    with warnings.catch_warnings():
        # Source PatientName values with a single component (common after de-identification)
        # make highdicom warn; the value is copied unchanged either way.
        warnings.filterwarnings("ignore", message=".*unlikely to represent the intended person name.*")
        seg = hd.seg.Segmentation(
            source_images=ordered, pixel_array=pixels, segmentation_type="BINARY",
            segment_descriptions=descriptions, series_instance_uid=generate_uid(),
            series_number=SEG_SERIES_NUMBER, sop_instance_uid=generate_uid(), instance_number=1,
            manufacturer="SlicerInsight", manufacturer_model_name="insight", software_versions=__version__,
            device_serial_number="0", content_label="PE_SUSPICION",
            content_description=f"INSIGHT heatmap >= {threshold:g}"[:64],
            series_description=f"INSIGHT PE suspicion {model_version}"[:64], omit_empty_frames=True)
    logger.info("DICOM SEG: %d segment(s), %d frame(s) over %d source slices", len(descriptions),
                int(seg.NumberOfFrames), len(ordered))
    return seg


def seg_to_label_map(seg: Dataset, reference: sitk.Image) -> sitk.Image:
    """Decode a BINARY SEG onto ``reference``'s grid by each frame's ImagePositionPatient.

    Returns:
        uint16 image with ``reference``'s geometry: the segment number per voxel, 0 elsewhere.

    Raises:
        InputError: not a SEG, a frame off the grid (position, orientation, spacing, size), or two
            segments claiming one voxel.
    """
    if str(seg.get("SOPClassUID", "")) != SEG_SOP_CLASS_UID:
        raise InputError(f"not a DICOM SEG (SOPClassUID {seg.get('SOPClassUID', 'missing')})")
    size_x, size_y, size_z = reference.GetSize()
    frames = seg.pixel_array
    if frames.ndim == 2:
        frames = frames[np.newaxis]
    shared = seg.SharedFunctionalGroupsSequence[0]
    out = np.zeros((size_z, size_y, size_x), dtype=np.uint16)
    for index, frame_groups in enumerate(seg.PerFrameFunctionalGroupsSequence):
        frame_header = Dataset()
        frame_header.ImageOrientationPatient = _functional(
            frame_groups, shared, "PlaneOrientationSequence").ImageOrientationPatient
        frame_header.PixelSpacing = _functional(frame_groups, shared, "PixelMeasuresSequence").PixelSpacing
        frame_header.Rows, frame_header.Columns = seg.Rows, seg.Columns
        frame_header.ImagePositionPatient = _functional(frame_groups, shared, "PlanePositionSequence").ImagePositionPatient
        k = slice_index_on_grid(reference, frame_header, what=f"SEG frame {index + 1}")
        segment = int(frame_groups.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        on = frames[index] > 0
        if (out[k][on] != 0).any():
            raise InputError(f"SEG frame {index + 1}: segments overlap on slice {k}")
        out[k][on] = segment
    image = sitk.GetImageFromArray(out)
    image.CopyInformation(reference)
    return image


def _functional(frame_groups: Dataset, shared: Dataset, keyword: str) -> Dataset:
    sequence = frame_groups.get(keyword) or shared.get(keyword)
    if not sequence:
        raise InputError(f"SEG lacks {keyword}")
    return sequence[0]
