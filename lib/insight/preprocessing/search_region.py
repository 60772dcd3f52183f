"""Where a pulmonary embolus can be: the chest cavity (lungs and the mediastinum between them).

INSIGHT's authors crop CT to the lungs before the encoder. Here the crop is a mask on the model
grid that the model applies to its heatmap (zero outside) and to its pooling (only inside counts).
Without it, a weakly supervised model on CTPA latches on to soft tissue of the chest wall, which
looks like clot (40-60 HU) in every scan, positive or negative alike, and learns nothing.

The mask, per axial slice: the convex hull of the lungs (air inside the body), which takes in the
heart, the pulmonary trunk and the hila, dilated by a margin. Slices without lung get nothing.
A volume with no lungs found (not a chest CT) falls back to the whole body, then to everything.

Narrower regions: ``vessels`` (near contrast-enhanced blood) and ``filling_defects`` (soft tissue
near enhanced blood, where a clot can be; used with anomaly seeding, see
:mod:`insight.training.anomaly_seed`).
"""

from __future__ import annotations

import logging

import numpy as np
from scipy import ndimage
from skimage.morphology import convex_hull_image, disk

from insight.config import SEARCH_REGION_NAMES

__all__ = ["chest_search_region", "vessel_search_region", "filling_defect_search_region", "body_mask", "SEARCH_REGIONS"]

logger = logging.getLogger(__name__)

#: The choices of ``PreprocessConfig.search_region``.
SEARCH_REGIONS = SEARCH_REGION_NAMES

#: HU above which a chest voxel counts as contrast-enhanced blood (CTPA arteries: 250-450 HU).
_ENHANCED_HU = 150.0

#: HU below which an in-body voxel counts as air (lung parenchyma is about -850).
_AIR_HU = -400.0
#: HU above which a voxel belongs to the body (fat is about -100).
_BODY_HU = -500.0
#: HU range (after a light blur) of tissue that can be clot: acute clot is 20-90 HU, and partial volume
#: with lung or contrast widens that at a 2-3 mm grid. Pure contrast, lung and bone fall outside.
_DEFECT_HU = (-200.0, 300.0)
#: How far (mm, in-plane) from enhanced blood a filling defect may reach: the radius of a lobar artery.
_DEFECT_REACH_MM = 10.0
#: Blur (voxels) before the HU test, so one noisy voxel does not punch holes in the region.
_DEFECT_BLUR_VOXELS = 0.7
#: Lung components smaller than this (mL) are ignored (bowel gas, noise).
_MIN_LUNG_ML = 5.0
#: Lung pixels a slice needs before its convex hull counts.
_MIN_SLICE_LUNG_PX = 20


def body_mask(volume_hu: np.ndarray) -> np.ndarray:
    """[Z, Y, X] bool: voxels above -500 HU with the holes of each axial slice filled (lungs inside)."""
    dense = volume_hu > _BODY_HU
    filled = np.zeros_like(dense)
    for z in range(dense.shape[0]):
        filled[z] = ndimage.binary_fill_holes(dense[z])
    return filled


def chest_search_region(volume_hu: np.ndarray, spacing_zyx: tuple[float, float, float],
                        margin_mm: float = 5.0) -> np.ndarray:
    """The chest cavity of a [Z, Y, X] HU volume as a bool mask of the same shape.

    Args:
        volume_hu: HU values (any float dtype), axial slices along axis 0.
        spacing_zyx: voxel size in mm along (z, y, x).
        margin_mm: in-plane dilation of each slice's lung hull.
    """
    body = body_mask(volume_hu)
    lungs = body & (volume_hu < _AIR_HU)
    labels, count = ndimage.label(lungs)
    if count:
        voxel_ml = float(np.prod(spacing_zyx)) / 1000.0
        sizes = np.bincount(labels.ravel())[1:] * voxel_ml
        lungs = np.isin(labels, np.flatnonzero(sizes >= _MIN_LUNG_ML) + 1)
    region = np.zeros_like(lungs)
    for z in range(lungs.shape[0]):
        if lungs[z].sum() >= _MIN_SLICE_LUNG_PX:
            region[z] = convex_hull_image(lungs[z])
    if not region.any():
        logger.warning("no lungs found: the search region falls back to the %s", "body" if body.any() else "whole volume")
        return body if body.any() else np.ones_like(region)
    radius_px = int(round(margin_mm / max(min(spacing_zyx[1:]), 1e-6)))
    if radius_px > 0:
        footprint = disk(radius_px).astype(bool)
        for z in np.flatnonzero(region.any(axis=(1, 2))):
            region[z] = ndimage.binary_dilation(region[z], structure=footprint)
    return region & body


def vessel_search_region(volume_hu: np.ndarray, spacing_zyx: tuple[float, float, float],
                         margin_mm: float = 5.0) -> np.ndarray:
    """Contrast-enhanced vessels of the chest cavity, dilated by ``margin_mm`` in-plane: [Z, Y, X] bool.

    An embolus is a filling defect inside an enhanced artery, so it lies within a few millimetres
    of enhanced blood (an occlusive clot: of the enhanced stretch before it). Falls back to the
    chest region when no enhanced voxel is found (a non-contrast scan).
    """
    chest = chest_search_region(volume_hu, spacing_zyx, margin_mm)
    enhanced = chest & (volume_hu > _ENHANCED_HU)
    if not enhanced.any():
        logger.warning("no contrast-enhanced voxels found: the search region falls back to the chest")
        return chest
    radius_px = max(1, int(round(margin_mm / max(min(spacing_zyx[1:]), 1e-6))))
    depth = max(1, int(round(margin_mm / max(spacing_zyx[0], 1e-6))))
    footprint = np.zeros((2 * depth + 1, 2 * radius_px + 1, 2 * radius_px + 1), bool)
    footprint[:] = disk(radius_px).astype(bool)[None]
    return ndimage.binary_dilation(enhanced, structure=footprint) & chest


def filling_defect_search_region(volume_hu: np.ndarray, spacing_zyx: tuple[float, float, float],
                                 margin_mm: float = 5.0) -> np.ndarray:
    """Soft-tissue voxels near contrast-enhanced blood in the chest: where a filling defect can be.

    The vessel region (:func:`vessel_search_region`, reaching at least 10 mm from enhanced blood, the
    radius of a lobar artery) restricted to voxels whose lightly blurred HU lies in (-200, 300) HU:
    enhanced lumen, aerated lung and bone drop out, clot and the tissue around vessels stay. On the
    default phantoms that is 1.1e5-1.9e5 voxels per scan, a third of the chest region. Same arguments
    and fallbacks as :func:`vessel_search_region`; returns [Z, Y, X] bool.
    """
    vessels = vessel_search_region(volume_hu, spacing_zyx, max(margin_mm, _DEFECT_REACH_MM))
    smooth = ndimage.gaussian_filter(np.asarray(volume_hu, dtype=np.float32), _DEFECT_BLUR_VOXELS)
    return vessels & (smooth > _DEFECT_HU[0]) & (smooth < _DEFECT_HU[1])
