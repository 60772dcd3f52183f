"""Mask operations in millimetres: balls on anisotropic grids, tiny-component removal, vessel region.

Arrays are [z, y, x]; spacings are given in the same (z, y, x) order, in mm.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Sequence

import numpy as np
from scipy import ndimage
from skimage.morphology import remove_small_objects

__all__ = ["ball_mm", "dilate_mm", "remove_small_regions", "contrast_vessel_region", "min_voxels_for_volume"]

#: skimage >= 0.26 names the cut ``max_size`` (removes <= max_size); older releases ``min_size`` (< min_size).
_HAS_MAX_SIZE = "max_size" in inspect.signature(remove_small_objects).parameters


def ball_mm(radius_mm: float, spacing_zyx: Sequence[float]) -> np.ndarray:
    """A bool ellipsoid [2rz+1, 2ry+1, 2rx+1] holding the voxels within ``radius_mm`` of the centre."""
    if radius_mm < 0:
        raise ValueError(f"radius_mm must be >= 0, got {radius_mm}")
    half = [int(math.floor(radius_mm / s + 1e-9)) for s in spacing_zyx]
    z, y, x = np.ogrid[-half[0]:half[0] + 1, -half[1]:half[1] + 1, -half[2]:half[2] + 1]
    sz, sy, sx = (float(s) for s in spacing_zyx)
    return (z * sz) ** 2 + (y * sy) ** 2 + (x * sx) ** 2 <= radius_mm ** 2 + 1e-6


def dilate_mm(mask: np.ndarray, radius_mm: float, spacing_zyx: Sequence[float]) -> np.ndarray:
    """``mask`` grown by ``radius_mm`` (a no-op below one voxel)."""
    element = ball_mm(radius_mm, spacing_zyx)
    if element.size == 1:
        return mask.astype(bool, copy=True)
    return ndimage.binary_dilation(mask, structure=element)


def min_voxels_for_volume(volume_mm3: float, spacing_zyx: Sequence[float]) -> int:
    """Number of voxels a region needs to be larger than ``volume_mm3``."""
    voxel = float(np.prod(spacing_zyx))
    return int(math.floor(volume_mm3 / voxel + 1e-9)) + 1


def remove_small_regions(mask: np.ndarray, max_volume_mm3: float, spacing_zyx: Sequence[float]) -> np.ndarray:
    """``mask`` without its 26-connected regions of volume <= ``max_volume_mm3`` (skimage.morphology)."""
    mask = np.asarray(mask, dtype=bool)
    if max_volume_mm3 <= 0 or not mask.any():
        return mask.copy()
    keep_from = min_voxels_for_volume(max_volume_mm3, spacing_zyx)  # regions with >= this many voxels stay
    if _HAS_MAX_SIZE:
        return remove_small_objects(mask, max_size=keep_from - 1, connectivity=mask.ndim)
    return remove_small_objects(mask, min_size=keep_from, connectivity=mask.ndim)


def contrast_vessel_region(image_hu: np.ndarray, spacing_zyx: Sequence[float], enhanced_hu: tuple[float, float],
                           dilation_mm: float, soft_tissue_floor_hu: float) -> np.ndarray:
    """Voxels where pulmonary emboli can lie: near contrast-enhanced blood, not lung, air or fat.

    Enhanced blood is ``enhanced_hu[0] <= HU <= enhanced_hu[1]``; it is dilated by ``dilation_mm``
    (clot is a filling defect of 20-90 HU inside or beside enhanced lumen) and cut to
    ``HU >= soft_tissue_floor_hu``.

    Args:
        image_hu: [z, y, x] CT numbers.
        spacing_zyx: voxel size in mm, (z, y, x).

    Returns:
        bool [z, y, x].
    """
    enhanced = (image_hu >= enhanced_hu[0]) & (image_hu <= enhanced_hu[1])
    return dilate_mm(enhanced, dilation_mm, spacing_zyx) & (image_hu >= soft_tissue_floor_hu)
