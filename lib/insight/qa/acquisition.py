"""Acquisition QA: slice geometry, corrupted slices, field of view and slice thickness.

Each check returns a :class:`~insight.qa.flags.QAReport` (flags plus what it measured). Slice indices
in messages and details are the input's k index (the last SimpleITK index, the first numpy axis).

Codes raised here (``check = "acquisition"``):

==================== ======== =========================================================================
code                 severity meaning
==================== ======== =========================================================================
missing_slices       fail     a gap between DICOM slices larger than 1.5 x the usual step; SimpleITK
                              then spreads the slices evenly, so the volume's geometry is wrong
irregular_spacing    warn     slice steps that differ from the usual step by more than 5 %
nonfinite_values     fail     NaN or infinite voxels
constant_slices      fail     slices holding a single value (blank or zero-filled)
values_out_of_range  fail     slices with many voxels outside the plausible CT range
not_hounsfield       fail     no voxel near air (-1000 HU): probably not HU (rescale not applied)
truncated_fov        warn     the lungs run into the edge of the reconstructed field in-plane
body_truncated       info     the body wall (not the lungs) runs into that edge: common, harmless for PE
lungs_truncated      warn     the lungs are cut off at the top or bottom of the volume
thick_slices         warn     slice spacing or thickness above 3 mm
==================== ======== =========================================================================
"""

from __future__ import annotations

import logging
import warnings

import numpy as np
import SimpleITK as sitk

from insight.qa.chest import ChestAnatomy
from insight.qa.flags import QAFlag, QAReport

__all__ = ["MAX_SLICE_MM", "check_slice_positions", "check_slice_thickness", "check_voxel_values",
           "check_field_of_view", "slice_axis"]

logger = logging.getLogger(__name__)

#: Thickest slices (spacing or nominal thickness, mm) accepted for PE reading; see :func:`check_slice_thickness`.
MAX_SLICE_MM = 3.0
#: A step this many times the median step between DICOM slices is a gap (one or more slices missing).
GAP_FACTOR = 1.5
#: Relative deviation of a slice step from the median step tolerated before ``irregular_spacing``.
IRREGULAR_TOLERANCE = 0.05
#: Plausible CT numbers (HU). Values below the low end are padding (outside the reconstructed circle,
#: e.g. -2048 or -3024) unless they differ from the padding value; above the high end only dense metal.
PLAUSIBLE_HU = (-1100.0, 4000.0)
#: A slice is out of range when more than this fraction of its voxels is implausible (metal stays below).
OUT_OF_RANGE_SLICE_FRACTION = 0.02
#: ``not_hounsfield`` when less than this fraction of voxels is below -500 HU (a chest CT always has air).
MIN_AIR_FRACTION = 0.005
#: Lung touching the field's edge over at least this length (mm) in a slice counts as a cut lung...
FOV_LUNG_CONTACT_MM = 10.0
#: ...and ``truncated_fov`` is raised when at least this many slices have one.
FOV_LUNG_CONTACT_MIN_SLICES = 2
#: The body touching the field's edge over at least this length (mm) in a slice counts as contact...
FOV_CONTACT_MM = 20.0
#: ...and ``body_truncated`` (info) is raised when at least this fraction of the body's slices has contact.
FOV_CONTACT_SLICE_FRACTION = 0.2
#: ``lungs_truncated`` when the lung area on the top or bottom slice is above this fraction of the
#: largest lung slice area (a complete scan ends at lung tips of a few percent).
LUNG_END_AREA_FRACTION = 0.2
#: Slice indices listed in a flag's details at most (the count is always given).
_MAX_LISTED = 20


def slice_axis(image: sitk.Image) -> int:
    """The image axis (0, 1, 2 = i, j, k) closest to the patient's head-feet direction."""
    direction = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)
    return int(np.argmax(np.abs(direction[2, :])))


def check_slice_positions(positions_mm: np.ndarray) -> QAReport:
    """Gaps and irregular steps between slice positions along the slice normal (DICOM).

    Args:
        positions_mm: [N] slice positions along the normal, mm, any order.
    """
    report = QAReport()
    positions = np.sort(np.asarray(positions_mm, dtype=float).ravel())
    if positions.size < 3:
        return report
    steps = np.diff(positions)
    median = float(np.median(steps))
    report.measurements["slice_step_median_mm"] = median
    if median <= 0:
        report.flags.append(QAFlag("irregular_spacing", "most DICOM slices share one position (duplicated "
                                   "slices); the volume cannot be stacked reliably", "fail",
                                   details={"duplicates": int((steps <= 0).sum())}))
        return report
    gaps = np.flatnonzero(steps > GAP_FACTOR * median)
    if gaps.size:
        missing = int(np.round(steps[gaps] / median - 1).sum())
        where = [f"{positions[i]:.1f} to {positions[i + 1]:.1f} mm" for i in gaps[:5]]
        report.flags.append(QAFlag(
            "missing_slices",
            f"about {missing} slice(s) missing in {gaps.size} gap(s) ({'; '.join(where)}) with a usual step of "
            f"{median:.2f} mm; the stacked volume's geometry is distorted there",
            "fail", details={"gaps_mm": [[float(positions[i]), float(positions[i + 1])] for i in gaps[:_MAX_LISTED]],
                             "missing_estimate": missing, "step_mm": median}))
    deviation = np.abs(steps - median) / median
    irregular = np.flatnonzero((deviation > IRREGULAR_TOLERANCE) & (steps <= GAP_FACTOR * median))
    if irregular.size:
        report.flags.append(QAFlag(
            "irregular_spacing",
            f"{irregular.size} slice step(s) differ from the usual {median:.2f} mm by more than "
            f"{IRREGULAR_TOLERANCE:.0%} (from {steps[irregular].min():.2f} to {steps[irregular].max():.2f} mm)",
            "warn", details={"steps_mm": [float(s) for s in steps[irregular][:_MAX_LISTED]], "step_mm": median}))
    report.measurements["slice_step_max_deviation"] = float(deviation.max())
    return report


def check_slice_thickness(image: sitk.Image, nominal_thickness_mm: float | None = None) -> QAReport:
    """Flag slices too thick for reading PE (``thick_slices``).

    Emboli show as filling defects inside enhanced arteries; segmental arteries are a few millimetres
    wide and subsegmental ones 1-2 mm. A slice averages everything across its thickness, so with slices
    thicker than about 3 mm a small defect is blended with the contrast around it (partial volume) and
    disappears, and vessels running through the slice plane blur into each other. CTPA protocols
    therefore reconstruct thin slices (about 1 mm, often below); 3 mm is already the coarse end of what
    a reader accepts for segmental PE. Both the spacing along the head-feet axis and, for DICOM, the
    nominal SliceThickness are checked (overlapping reconstructions have spacing < thickness).
    """
    report = QAReport()
    spacing = float(image.GetSpacing()[slice_axis(image)])
    report.measurements["slice_spacing_mm"] = spacing
    if nominal_thickness_mm is not None:
        report.measurements["slice_thickness_mm"] = float(nominal_thickness_mm)
    thickest = max(spacing, nominal_thickness_mm or 0.0)
    if thickest > MAX_SLICE_MM + 1e-3:
        what = (f"slice spacing {spacing:.2f} mm" if thickest == spacing
                else f"slice thickness {nominal_thickness_mm:.2f} mm")
        report.flags.append(QAFlag(
            "thick_slices", f"{what} is above {MAX_SLICE_MM:g} mm: small (segmental and subsegmental) emboli can "
            "be missed; use a thin-slice reconstruction if one exists", "warn",
            details={"slice_mm": thickest, "limit_mm": MAX_SLICE_MM}))
    return report


def check_voxel_values(image: sitk.Image, padding_hu: float | None = None) -> QAReport:
    """Corrupted slices: non-finite voxels, constant slices, implausible values; and a non-HU scale.

    Args:
        image: the input volume (HU), any pixel type.
        padding_hu: the value marking voxels outside the reconstructed field, when known (DICOM
            PixelPaddingValue); else the volume's minimum is taken as padding when below -1100 HU.
    """
    report = QAReport()
    values = sitk.GetArrayViewFromImage(image)  # [k, j, i]
    nk = values.shape[0]
    flat = values.reshape(nk, -1)
    if np.issubdtype(flat.dtype, np.floating):
        finite = np.isfinite(flat)
        bad_per_slice = (~finite).sum(axis=1)
        if bad_per_slice.any():
            slices = np.flatnonzero(bad_per_slice)
            report.flags.append(QAFlag(
                "nonfinite_values", f"{int(bad_per_slice.sum())} NaN or infinite voxel(s) in {slices.size} "
                f"slice(s) ({_listing(slices)})", "fail",
                details={"slices": _first(slices), "n_slices": int(slices.size), "n_voxels": int(bad_per_slice.sum())}))
            flat = np.where(finite, flat, np.nan)
            with warnings.catch_warnings():  # all-NaN slices give NaN here, and are reported as constant
                warnings.simplefilter("ignore", RuntimeWarning)
                lows, highs = np.nanmin(flat, axis=1), np.nanmax(flat, axis=1)
        else:
            lows, highs = flat.min(axis=1), flat.max(axis=1)
    else:
        lows, highs = flat.min(axis=1), flat.max(axis=1)

    constant = np.flatnonzero(~(highs - lows > 0.5))  # also catches all-NaN slices (NaN comparisons are False)
    if constant.size:
        report.flags.append(QAFlag(
            "constant_slices", f"{constant.size} slice(s) hold a single value ({_listing(constant)}): blank or "
            "zero-filled data", "fail", details={"slices": _first(constant), "n_slices": int(constant.size)}))

    low_limit, high_limit = PLAUSIBLE_HU
    global_min = float(np.nanmin(lows)) if np.isfinite(lows).any() else 0.0
    padding = padding_hu if padding_hu is not None else (global_min if global_min < low_limit else None)
    global_max = float(np.nanmax(highs)) if np.isfinite(highs).any() else 0.0
    outside = np.zeros(nk, dtype=np.int64)
    with np.errstate(invalid="ignore"):  # the full-volume passes run only when some value is implausible
        if global_min < low_limit:
            too_low = flat < low_limit
            if padding is not None:
                too_low &= flat != padding
            outside += too_low.sum(axis=1)
        if global_max > high_limit:
            outside += (flat > high_limit).sum(axis=1)
        air_fraction = float(np.count_nonzero(flat < -500)) / max(flat.size, 1)
    bad = np.flatnonzero(outside > OUT_OF_RANGE_SLICE_FRACTION * flat.shape[1])
    report.measurements["value_range_hu"] = [global_min, global_max]
    if bad.size:
        report.flags.append(QAFlag(
            "values_out_of_range", f"{bad.size} slice(s) ({_listing(bad)}) have more than "
            f"{OUT_OF_RANGE_SLICE_FRACTION:.0%} of their voxels outside {low_limit:g} to {high_limit:g} HU "
            "(padding excepted): corrupted or not CT numbers", "fail",
            details={"slices": _first(bad), "n_slices": int(bad.size), "plausible_hu": list(PLAUSIBLE_HU)}))
    report.measurements["air_fraction"] = air_fraction
    if air_fraction < MIN_AIR_FRACTION:
        report.flags.append(QAFlag(
            "not_hounsfield", f"only {air_fraction:.2%} of voxels are below -500 HU although a chest CT holds air "
            f"(lungs, surroundings); values range {global_min:g} to {global_max:g}: the volume is "
            "probably not in Hounsfield units (rescale slope/intercept not applied?)", "fail",
            details={"air_fraction": air_fraction}))
    return report


def check_field_of_view(anatomy: ChestAnatomy) -> QAReport:
    """Lungs or body cut by the in-plane field of view; lungs cut at the top or bottom of the volume."""
    report = QAReport()
    sx, sy, _ = anatomy.spacing_xyz
    pixel_mm = float(np.sqrt(sx * sy))
    lung_contact_mm = (anatomy.lungs & anatomy.rim).sum(axis=(1, 2)) * pixel_mm  # [z]
    body_contact_mm = (anatomy.body & anatomy.rim).sum(axis=(1, 2)) * pixel_mm
    report.measurements["fov_lung_contact_max_mm"] = float(lung_contact_mm.max(initial=0.0))
    report.measurements["fov_body_contact_max_mm"] = float(body_contact_mm.max(initial=0.0))
    lung_cut = np.flatnonzero(lung_contact_mm >= FOV_LUNG_CONTACT_MM)
    body_slices = anatomy.body.any(axis=(1, 2))
    n_body = int(body_slices.sum())
    body_cut = np.flatnonzero(body_slices & (body_contact_mm >= FOV_CONTACT_MM))
    body_fraction = body_cut.size / n_body if n_body else 0.0
    report.measurements["fov_body_contact_slice_fraction"] = body_fraction
    if lung_cut.size >= FOV_LUNG_CONTACT_MIN_SLICES:
        report.flags.append(QAFlag(
            "truncated_fov", f"the lungs reach the edge of the reconstructed field in {lung_cut.size} slice(s) (up "
            f"to {lung_contact_mm.max():.0f} mm): lung and arteries outside the field are missing", "warn",
            details={"n_slices": int(lung_cut.size), "max_contact_mm": float(lung_contact_mm.max())}))
    elif n_body and body_fraction >= FOV_CONTACT_SLICE_FRACTION:
        report.flags.append(QAFlag(
            "body_truncated", f"the body wall reaches the edge of the reconstructed field in {body_fraction:.0%} of "
            f"slices (up to {body_contact_mm.max():.0f} mm); the lungs lie inside it", "info",
            details={"slice_fraction": body_fraction, "max_contact_mm": float(body_contact_mm.max())}))

    area = anatomy.lung_area_per_slice_mm2()
    if area.size and area.max() > 0:
        bottom, top = float(area[0] / area.max()), float(area[-1] / area.max())
        report.measurements["lung_area_fraction_top_slice"] = top
        report.measurements["lung_area_fraction_bottom_slice"] = bottom
        cut = [name for name, value in (("apices (top)", top), ("bases (bottom)", bottom))
               if value > LUNG_END_AREA_FRACTION]
        if cut:
            report.flags.append(QAFlag(
                "lungs_truncated", f"the lungs are cut off at the {' and '.join(cut)} of the volume (end-slice lung "
                f"area {top:.0%} top, {bottom:.0%} bottom, of the largest): arteries there are not seen", "warn",
                details={"top_area_fraction": top, "bottom_area_fraction": bottom,
                         "limit_fraction": LUNG_END_AREA_FRACTION}))
    return report


def _first(indices: np.ndarray) -> list[int]:
    return [int(i) for i in indices[:_MAX_LISTED]]


def _listing(indices: np.ndarray) -> str:
    shown = ", ".join(str(int(i)) for i in indices[:8])
    return f"k = {shown}{', ...' if indices.size > 8 else ''}"
