"""Slice geometry of a CT series: order along the slice normal, spacing, gaps, gantry tilt.

All coordinates are DICOM patient coordinates (LPS, mm). For slice k with ImagePositionPatient
``p_k`` and ImageOrientationPatient rows ``r`` / columns ``c``, the slice normal is ``n = r x c``
and the slice's position along it is ``s_k = n . p_k``. Slices are sorted by ``s_k``. The offset
``p_k - p_0`` of a well-formed axial stack is parallel to ``n``; a component along ``r``/``c``
means the slices are sheared (gantry tilt) and the volume must be resampled.

The target grid of the volume is orthonormal, axes ``(r, c, n)``, origin ``p_0`` (the first slice
along the normal), in-plane spacing from PixelSpacing and a slice spacing ``dz``; when the slices
are regular and not sheared it coincides with the acquired slices exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from insight.dicom.records import DicomHeader, Note

__all__ = ["GeometryError", "SeriesGeometry", "analyze_geometry"]

#: Two orientation vectors (direction cosines) differing by more than this are different orientations.
ORIENTATION_TOLERANCE = 1e-3
#: Slices closer than this along the normal (mm) are at the same position.
DUPLICATE_TOLERANCE_MM = 0.01
#: In-plane drift of the last slice relative to the first, in pixels, above which the stack is sheared.
TILT_TOLERANCE_PIXELS = 0.25


class GeometryError(Exception):
    """The series cannot be turned into one volume; ``note`` says why (a skip reason)."""

    def __init__(self, note: Note):
        super().__init__(note.message)
        self.note = note


@dataclass
class SeriesGeometry:
    """The geometry of one series, its files sorted along the slice normal.

    Attributes:
        files: headers sorted by position along the normal (ascending), N files.
        row_dir, col_dir, normal: unit vectors (3,) in LPS: along a row (x), along a column (y), ``r x c``.
        origin: ImagePositionPatient of ``files[0]`` (3,), mm.
        positions: ``s_k``, position of each slice along the normal relative to ``files[0]`` (N,), mm.
        inplane_offsets: in-plane offset of each slice relative to ``files[0]`` along ``(r, c)`` (N, 2), mm.
        pixel_spacing_xy: spacing between columns (x) and between rows (y), mm.
        size_xy: Columns, Rows.
        slice_spacing: ``dz`` of the target grid, mm.
        n_target_slices: slices in the target grid.
        tilt_deg: angle between the stack axis and the slice normal, degrees (0 for a regular stack).
        needs_resampling: True when the target grid differs from the acquired slices.
        warnings: notes for the manifest (gaps, irregular spacing, tilt, non-axial).
    """

    files: list[DicomHeader]
    row_dir: np.ndarray
    col_dir: np.ndarray
    normal: np.ndarray
    origin: np.ndarray
    positions: np.ndarray
    inplane_offsets: np.ndarray
    pixel_spacing_xy: tuple[float, float]
    size_xy: tuple[int, int]
    slice_spacing: float
    n_target_slices: int
    tilt_deg: float = 0.0
    needs_resampling: bool = False
    warnings: list[Note] = field(default_factory=list)

    @property
    def direction(self) -> tuple[float, ...]:
        """Row-major 3x3 direction matrix with columns ``(r, c, n)``, as SimpleITK wants it."""
        return tuple(np.column_stack([self.row_dir, self.col_dir, self.normal]).ravel().tolist())

    @property
    def spacing(self) -> tuple[float, float, float]:
        return (self.pixel_spacing_xy[0], self.pixel_spacing_xy[1], self.slice_spacing)

    @property
    def target_positions(self) -> np.ndarray:
        """Positions of the target grid's slices along the normal relative to the origin (M,), mm."""
        return np.arange(self.n_target_slices) * self.slice_spacing


def analyze_geometry(files: list[DicomHeader]) -> SeriesGeometry:
    """Sort ``files`` along the slice normal and describe their geometry.

    Raises:
        GeometryError: missing geometry attributes, mixed orientations, sizes or pixel spacings,
            an orientation that is not orthonormal, fewer than 2 slices, or slices sharing a position.
    """
    if len(files) < 2:
        raise GeometryError(Note("too_few_slices", f"{len(files)} image(s): a volume needs at least 2"))
    missing = [name for name, present in (
        ("ImagePositionPatient", all(f.position for f in files)),
        ("ImageOrientationPatient", all(f.orientation for f in files)),
        ("PixelSpacing", all(f.pixel_spacing for f in files)),
        ("Rows/Columns", all(f.rows and f.columns for f in files))) if not present]
    if missing:
        raise GeometryError(Note("missing_geometry", f"some images lack {', '.join(missing)}"))
    if any(f.number_of_frames > 1 for f in files):
        raise GeometryError(Note("multiframe", "multi-frame images are not supported"))
    if any(f.samples_per_pixel != 1 for f in files):
        raise GeometryError(Note("not_greyscale", "images are not single-sample (greyscale)"))

    orientations = np.array([f.orientation for f in files], dtype=float)
    if np.abs(orientations - orientations[0]).max() > ORIENTATION_TOLERANCE:
        raise GeometryError(Note("inconsistent_orientation", "images of the series have different "
                                                            "ImageOrientationPatient (several stacks in one series?)"))
    if len({(f.rows, f.columns) for f in files}) > 1:
        raise GeometryError(Note("inconsistent_size", "images of the series have different Rows/Columns"))
    spacings = np.array([f.pixel_spacing for f in files], dtype=float)
    if np.abs(spacings - spacings[0]).max() > 1e-4:
        raise GeometryError(Note("inconsistent_pixel_spacing", "images of the series have different PixelSpacing"))
    if spacings[0].min() <= 0:
        raise GeometryError(Note("missing_geometry", "PixelSpacing is not positive"))

    row_dir, col_dir = _unit(orientations[0, :3]), _unit(orientations[0, 3:])
    if row_dir is None or col_dir is None or abs(float(row_dir @ col_dir)) > ORIENTATION_TOLERANCE:
        raise GeometryError(Note("invalid_orientation", "ImageOrientationPatient is not two orthogonal unit vectors"))
    normal = np.cross(row_dir, col_dir)
    normal /= np.linalg.norm(normal)

    raw_positions = np.array([f.position for f in files], dtype=float)
    along = raw_positions @ normal
    instance = np.array([f.instance_number if f.instance_number is not None else 0 for f in files])
    order = np.lexsort((instance, along))
    files = [files[i] for i in order]
    raw_positions = raw_positions[order]
    origin = raw_positions[0]
    offsets = raw_positions - origin
    positions = offsets @ normal
    inplane = np.column_stack([offsets @ row_dir, offsets @ col_dir])

    steps = np.diff(positions)
    n_duplicates = int((steps < DUPLICATE_TOLERANCE_MM).sum())
    if n_duplicates:
        raise GeometryError(Note("duplicate_positions", f"{n_duplicates} image(s) share a slice position with "
                                                       "another (several phases or acquisitions in one series?)"))

    pixel_xy = (float(spacings[0][1]), float(spacings[0][0]))  # PixelSpacing = (between rows, between columns)
    geometry = SeriesGeometry(
        files=files, row_dir=row_dir, col_dir=col_dir, normal=normal, origin=origin, positions=positions,
        inplane_offsets=inplane, pixel_spacing_xy=pixel_xy, size_xy=(int(files[0].columns), int(files[0].rows)),
        slice_spacing=float(positions[-1] / (len(files) - 1)), n_target_slices=len(files))
    _check_tilt(geometry)
    _check_spacing(geometry, steps)
    _check_axial(geometry)
    return geometry


def _check_tilt(geometry: SeriesGeometry) -> None:
    drift = float(np.hypot(*geometry.inplane_offsets[-1]))
    length = float(geometry.positions[-1])
    header_tilts = [f.gantry_tilt_deg for f in geometry.files if f.gantry_tilt_deg]
    header_tilt = header_tilts[0] if header_tilts else 0.0
    if drift > TILT_TOLERANCE_PIXELS * min(geometry.pixel_spacing_xy):
        geometry.tilt_deg = math.degrees(math.atan2(drift, length))
        geometry.needs_resampling = True
        geometry.warnings.append(Note("gantry_tilt", (
            f"slices are sheared: the stack axis is {geometry.tilt_deg:.2f} deg off the slice normal "
            f"(GantryDetectorTilt {header_tilt:.2f} deg); resampled onto an orthogonal grid (linear), "
            "the image plane kept")))
    elif abs(header_tilt) > 0.01:
        geometry.warnings.append(Note("gantry_tilt_header", (
            f"GantryDetectorTilt is {header_tilt:.2f} deg but the slice positions lie along the slice normal; "
            "no correction needed")))


def _check_spacing(geometry: SeriesGeometry, steps: np.ndarray) -> None:
    nominal = float(np.median(steps))
    tolerance = max(0.02, 0.01 * nominal)
    multiples = np.rint(steps / nominal)
    gaps = (multiples >= 2) & (np.abs(steps - multiples * nominal) <= tolerance * multiples)
    irregular = ~gaps & (np.abs(steps - nominal) > tolerance)
    if not gaps.any() and not irregular.any():
        return  # regular: keep dz = mean step, the target grid is the acquired slices
    geometry.slice_spacing = nominal
    geometry.n_target_slices = int(math.floor(float(geometry.positions[-1]) / nominal + 0.5)) + 1
    geometry.needs_resampling = True
    if gaps.any():
        n_missing = int((multiples[gaps] - 1).sum())
        geometry.warnings.append(Note("missing_slices", (
            f"{n_missing} slice(s) missing in {int(gaps.sum())} gap(s) (largest gap {steps[gaps].max():.3f} mm, "
            f"slice spacing {nominal:.3f} mm); the missing slices are filled by linear interpolation")))
    if irregular.any():
        geometry.warnings.append(Note("irregular_spacing", (
            f"slice spacing varies from {steps.min():.3f} to {steps.max():.3f} mm (median {nominal:.3f} mm); "
            f"resampled to {nominal:.3f} mm by linear interpolation along the slice normal")))


def _check_axial(geometry: SeriesGeometry) -> None:
    angle = math.degrees(math.acos(min(1.0, abs(float(geometry.normal[2])))))
    if angle > 30.0:
        geometry.warnings.append(Note("non_axial", f"the slice normal is {angle:.0f} deg from the patient's "
                                                   "head-foot axis (not an axial series)"))


def _unit(vector: np.ndarray) -> np.ndarray | None:
    norm = float(np.linalg.norm(vector))
    if not math.isfinite(norm) or abs(norm - 1.0) > 0.01:
        return None
    return vector / norm
