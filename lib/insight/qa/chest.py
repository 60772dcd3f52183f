"""Coarse chest anatomy for QA: the analysis grid, scanned field, body, lungs and mediastinum.

Everything QA looks at anatomically is measured on one *analysis grid*: the input turned to LPS
(array axes [z, y, x] = [inferior->superior, anterior->posterior, right->left]) and block-averaged
(``SimpleITK.BinShrink``) to about :data:`ANALYSIS_SPACING_MM` in each axis. Averaging cuts CT noise
and makes a 512x512x300 volume about 20 times smaller, so every check below runs in well under a
second. The masks are threshold-and-connectivity estimates meant for screening, not segmentations.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

__all__ = ["ANALYSIS_SPACING_MM", "ChestAnatomy", "analyse_chest", "analysis_grid", "fill_holes_per_slice",
           "ball", "box_dilate_mm", "grey_erode_mm"]

logger = logging.getLogger(__name__)

#: Target voxel edge (mm) of the analysis grid; axes finer than this are block-averaged.
ANALYSIS_SPACING_MM = 2.0
#: Below this the voxel is outside the reconstructed field (padding such as -2048 or -3024 HU).
PADDING_BELOW_HU = -1100.0
#: Above this a voxel belongs to the body (soft tissue, fat partial volume, bone).
BODY_ABOVE_HU = -500.0
#: Rim voxels below this are outside air (lung parenchyma, about -850 HU, stays above it).
OUTSIDE_AIR_BELOW_HU = -950.0
#: Below this a voxel inside the body is air: lungs, airways, bowel gas.
AIR_BELOW_HU = -400.0
#: An air region inside the body counts as lung when at least this fraction of the largest one...
_LUNG_MIN_FRACTION_OF_LARGEST = 0.25
#: ...and at least this big (mL).
_LUNG_MIN_ML = 20.0

#: Fraction of the body's front-to-back depth (at the midline) in front of which no bone lies: the
#: vertebral bodies start at about 60 %; 45 % leaves a margin for kyphosis and shallow upper slices.
SPINE_DEPTH_FRACTION = 0.45
#: Half-width (mm) of the band around the body's midline where that depth is measured.
SPINE_BAND_MM = 20.0

_IN_PLANE = np.array([[[0, 0, 0], [0, 0, 0], [0, 0, 0]],
                      [[0, 1, 0], [1, 1, 1], [0, 1, 0]],
                      [[0, 0, 0], [0, 0, 0], [0, 0, 0]]], dtype=bool)


@dataclass
class ChestAnatomy:
    """Masks on the analysis grid, all bool arrays [z, y, x] (z increasing towards the head).

    Attributes:
        grid: float32 HU image of the analysis grid (LPS orientation); its geometry places the masks.
        hu: [z, y, x] float32 HU of ``grid`` (non-finite input values replaced by -1024).
        in_scan: voxels inside the reconstructed field of view (not padding).
        rim: the field's edge in each slice: in-scan voxels on the image border or next to padding.
        body: the patient with everything the body encloses (lungs, airways), slice by slice.
        lungs: air inside the body in the large connected regions (lungs, with trachea and bronchi).
        midline_x: per slice, the body's centre column (float, x index); NaN where there is no body.
    """

    grid: sitk.Image
    hu: np.ndarray
    in_scan: np.ndarray
    rim: np.ndarray
    body: np.ndarray
    lungs: np.ndarray
    midline_x: np.ndarray

    @property
    def spacing_xyz(self) -> tuple[float, float, float]:
        return tuple(float(s) for s in self.grid.GetSpacing())  # type: ignore[return-value]

    @property
    def voxel_ml(self) -> float:
        """Volume of one analysis voxel in millilitres."""
        return float(np.prod(self.spacing_xyz)) / 1000.0

    @property
    def lung_volume_ml(self) -> float:
        return float(self.lungs.sum()) * self.voxel_ml

    def lung_area_per_slice_mm2(self) -> np.ndarray:
        """[Z] lung cross-section area per slice, mm2."""
        sx, sy, _ = self.spacing_xyz
        return self.lungs.sum(axis=(1, 2)).astype(float) * sx * sy

    def mediastinum(self) -> np.ndarray:
        """Body voxels lying between the right and the left lung on the same row (bool [z, y, x]).

        For each slice and row, the voxels strictly between the right lung's most medial voxel and the
        left lung's most medial voxel; rows lacking either lung contribute nothing. This holds the heart,
        great vessels, trachea and oesophagus, and usually the vertebral body behind them.
        """
        nz, ny, nx = self.lungs.shape
        x = np.arange(nx)[None, None, :]
        mid = np.where(np.isfinite(self.midline_x), self.midline_x, nx / 2.0)[:, None, None]
        right = self.lungs & (x < mid)  # LPS: x grows towards the patient's left
        left = self.lungs & (x >= mid)
        right_inner = np.where(right.any(axis=2), nx - 1 - np.argmax(right[:, :, ::-1], axis=2), -1)  # [z, y]
        left_inner = np.where(left.any(axis=2), np.argmax(left, axis=2), -1)
        valid = (right_inner >= 0) & (left_inner > right_inner + 1)
        between = (x > right_inner[:, :, None]) & (x < left_inner[:, :, None]) & valid[:, :, None]
        return between & self.body & ~self.lungs

    def in_front_of_spine(self, depth_fraction: float = SPINE_DEPTH_FRACTION) -> np.ndarray:
        """Bool [z, y, 1] (broadcastable): rows in front of ``depth_fraction`` of the body's depth.

        The depth is measured slice by slice along the midline band (front-most to back-most body voxel
        within :data:`SPINE_BAND_MM` of the midline), so the line follows each slice's own outline. The
        vertebral bodies start behind about 60 % of the depth; the pulmonary trunk lies at 20-40 %, the
        right and left pulmonary arteries reach about 50 %.
        """
        nz, ny, nx = self.body.shape
        keep = np.zeros((nz, ny, 1), dtype=bool)
        columns, rows = np.arange(nx), np.arange(ny)
        for k in np.flatnonzero(np.isfinite(self.midline_x)):
            band = np.abs(columns - self.midline_x[k]) * self.spacing_xyz[0] <= SPINE_BAND_MM
            body_rows = np.flatnonzero(self.body[k][:, band].any(axis=1))
            if body_rows.size:
                front, back = body_rows[0], body_rows[-1]
                keep[k, :, 0] = rows < front + depth_fraction * (back - front)
        return keep


def analysis_grid(image: sitk.Image, spacing_mm: float = ANALYSIS_SPACING_MM) -> sitk.Image:
    """``image`` in LPS orientation, block-averaged to about ``spacing_mm`` per axis (float32 HU).

    Integer shrink factors ``round(spacing_mm / spacing)`` (at least 1) per axis; non-finite voxels are
    replaced by -1024 HU first so one NaN does not spread over its block.
    """
    identity = np.allclose(image.GetDirection(), np.eye(3).ravel(), atol=1e-6)
    oriented = image if identity else sitk.DICOMOrient(image, "LPS")
    if oriented.GetPixelID() in (sitk.sitkFloat32, sitk.sitkFloat64):
        values = sitk.GetArrayViewFromImage(oriented)
        if not np.isfinite(values).all():
            cleaned = sitk.GetImageFromArray(np.nan_to_num(values, nan=-1024.0, posinf=3071.0, neginf=-1024.0))
            cleaned.CopyInformation(oriented)
            oriented = cleaned
    factors = [max(1, int(round(spacing_mm / s))) for s in oriented.GetSpacing()]
    shrunk = sitk.BinShrink(oriented, factors) if max(factors) > 1 else oriented
    return sitk.Cast(shrunk, sitk.sitkFloat32)


def fill_holes_per_slice(mask: np.ndarray) -> np.ndarray:
    """Fill holes of a [z, y, x] bool mask in each axial slice separately.

    A hole is a 4-connected in-plane region of the complement that does not touch the slice's border.
    """
    if not mask.size:
        return mask
    regions, _ = ndimage.label(~mask, structure=_IN_PLANE)
    border = np.zeros(int(regions.max()) + 1, dtype=bool)
    for edge in (regions[:, 0, :], regions[:, -1, :], regions[:, :, 0], regions[:, :, -1]):
        border[edge] = True
    border[0] = True  # label 0 is the mask itself
    return mask | ~border[regions]


def analyse_chest(image: sitk.Image) -> ChestAnatomy:
    """Estimate scanned field, body and lungs of a CT volume (HU) on the analysis grid.

    The body is the largest connected region above -500 HU with everything it encloses in each slice,
    where "enclosed" means not reachable from the outside air at the field's rim without crossing the
    body. The outside air is seeded only at rim voxels below :data:`OUTSIDE_AIR_BELOW_HU`, so a lung cut
    open by a small field of view (parenchyma, about -850 HU, at the rim) still counts as inside.
    """
    grid = analysis_grid(image)
    hu = sitk.GetArrayFromImage(grid)
    in_scan = hu > PADDING_BELOW_HU
    rim = in_scan & ~_erode_in_plane(in_scan)
    dense = hu > BODY_ABOVE_HU
    tissue = _largest_component(_dilate_in_plane(_erode_in_plane(dense)))  # an opening: cuts thin bridges (table)
    seeds = (rim | ~in_scan) & ~tissue & (hu < OUTSIDE_AIR_BELOW_HU)
    regions, _ = ndimage.label(~tissue, structure=_IN_PLANE)  # in-plane: each slice on its own
    seeded = np.zeros(int(regions.max()) + 1, dtype=bool)
    seeded[regions[seeds]] = True
    seeded[0] = False
    outside = seeded[regions]
    body = ~outside & in_scan & _slices_with(tissue)
    lungs = _lungs(hu, body, grid)
    nz, ny, nx = hu.shape
    counts = body.sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        midline = (body * np.arange(nx)[None, None, :]).sum(axis=(1, 2)) / counts
    midline = np.where(counts > 0, midline, np.nan)
    return ChestAnatomy(grid=grid, hu=hu, in_scan=in_scan, rim=rim, body=body, lungs=lungs, midline_x=midline)


def _slices_with(mask: np.ndarray) -> np.ndarray:
    """[z, 1, 1] bool: slices where ``mask`` has any voxel."""
    return mask.any(axis=(1, 2))[:, None, None]


def _erode_in_plane(mask: np.ndarray) -> np.ndarray:
    """In-plane binary erosion with the 4-neighbour cross; a slice's border counts as empty outside."""
    out = mask.copy()
    out[:, 1:, :] &= mask[:, :-1, :]
    out[:, :-1, :] &= mask[:, 1:, :]
    out[:, :, 1:] &= mask[:, :, :-1]
    out[:, :, :-1] &= mask[:, :, 1:]
    out[:, [0, -1], :] = False
    out[:, :, [0, -1]] = False
    return out


def _dilate_axis(mask: np.ndarray, axis: int, steps: int) -> np.ndarray:
    """Binary dilation along one axis by ``steps`` voxels each way (shift-and-or)."""
    out = mask.copy()
    n = mask.shape[axis]
    for step in range(1, min(steps, n - 1) + 1):
        lead = [slice(None)] * 3
        lag = [slice(None)] * 3
        lead[axis], lag[axis] = slice(step, None), slice(None, -step)
        out[tuple(lead)] |= mask[tuple(lag)]
        out[tuple(lag)] |= mask[tuple(lead)]
    return out


def _dilate_in_plane(mask: np.ndarray) -> np.ndarray:
    """In-plane binary dilation with the 4-neighbour cross."""
    out = mask.copy()
    out[:, 1:, :] |= mask[:, :-1, :]
    out[:, :-1, :] |= mask[:, 1:, :]
    out[:, :, 1:] |= mask[:, :, :-1]
    out[:, :, :-1] |= mask[:, :, 1:]
    return out


def box_dilate_mm(mask: np.ndarray, radius_mm: float, spacing_xyz: tuple[float, float, float]) -> np.ndarray:
    """Binary dilation of a [z, y, x] mask by a box reaching ``radius_mm`` along each axis (separable)."""
    out = mask
    for axis, spacing in zip((0, 1, 2), spacing_xyz[::-1]):
        out = _dilate_axis(out, axis, max(0, int(round(radius_mm / spacing))))
    return out


def ball(spacing_xyz: tuple[float, float, float], radius_mm: float) -> np.ndarray:
    """Boolean ball footprint [z, y, x] of ``radius_mm`` on a grid with ``spacing_xyz`` (mm)."""
    rx, ry, rz = (max(0, int(np.floor(radius_mm / s))) for s in spacing_xyz)
    z, y, x = np.ogrid[-rz:rz + 1, -ry:ry + 1, -rx:rx + 1]
    return (z * spacing_xyz[2]) ** 2 + (y * spacing_xyz[1]) ** 2 + (x * spacing_xyz[0]) ** 2 <= radius_mm ** 2 + 1e-6


def grey_erode_mm(values: np.ndarray, radius_mm: float, spacing_xyz: tuple[float, float, float]) -> np.ndarray:
    """Grey erosion (minimum over a ball of ``radius_mm``) of a [z, y, x] array."""
    return ndimage.grey_erosion(values, footprint=ball(spacing_xyz, radius_mm))


def _largest_component(mask: np.ndarray) -> np.ndarray:
    labels, count = ndimage.label(mask)
    if count == 0:
        return mask
    sizes = np.bincount(labels.ravel())[1:]
    return labels == (int(np.argmax(sizes)) + 1)


def _lungs(hu: np.ndarray, body: np.ndarray, grid: sitk.Image) -> np.ndarray:
    """Air inside the body, kept where its 3D connected region is lung-sized (see the module constants)."""
    air = (hu < AIR_BELOW_HU) & body
    labels, count = ndimage.label(air)
    if count == 0:
        return air
    voxel_ml = float(np.prod(grid.GetSpacing())) / 1000.0
    sizes_ml = np.bincount(labels.ravel())[1:] * voxel_ml
    keep = (sizes_ml >= _LUNG_MIN_FRACTION_OF_LARGEST * sizes_ml.max()) & (sizes_ml >= _LUNG_MIN_ML)
    lut = np.concatenate([[False], keep])
    return lut[labels]
