"""Hide found regions from a model: replace their voxels by the HU of the blood around them.

Used by the iterative ("look again") pseudo-mask rounds when a model is available: once a region
is found, the filling defect it explains is painted over with enhanced-blood HU, and the model is
asked again, so it points at the next most suspicious place.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from insight.metrics import label_components
from insight.pseudo_masks.morphology import ball_mm

__all__ = ["fill_with_surrounding_blood"]

logger = logging.getLogger(__name__)

#: Fewer enhanced voxels than this in a region's shell: fall back to the scan-wide blood median.
_MIN_SHELL_VOXELS = 3


def fill_with_surrounding_blood(image_hu: np.ndarray, regions: np.ndarray, spacing_zyx: Sequence[float],
                                enhanced_hu: tuple[float, float], shell_mm: float) -> np.ndarray:
    """A copy of ``image_hu`` with every region of ``regions`` set to its surrounding blood HU.

    For each 26-connected region, the fill value is the median HU of the enhanced voxels
    (``enhanced_hu`` window) in a shell ``shell_mm`` thick around it; with fewer than three such
    voxels, the median of all enhanced voxels of the scan (or the window's middle when there are none).

    Args:
        image_hu: [z, y, x] CT numbers (any real dtype; the copy is float32).
        regions: bool [z, y, x], the voxels to paint over.
        spacing_zyx: voxel size in mm, (z, y, x).

    Returns:
        float32 [z, y, x].
    """
    if image_hu.shape != regions.shape:
        raise ValueError(f"image and regions differ in shape: {image_hu.shape} vs {regions.shape}")
    out = np.asarray(image_hu, dtype=np.float32).copy()
    labels, count = label_components(regions)
    if count == 0:
        return out
    enhanced = (out >= enhanced_hu[0]) & (out <= enhanced_hu[1]) & ~regions
    fallback = float(np.median(out[enhanced])) if enhanced.any() else 0.5 * (enhanced_hu[0] + enhanced_hu[1])
    element = ball_mm(shell_mm, spacing_zyx)
    pad = [h // 2 + 1 for h in element.shape]
    for index, box in enumerate(ndimage.find_objects(labels), start=1):
        grown = tuple(slice(max(s.start - p, 0), min(s.stop + p, n)) for s, p, n in zip(box, pad, labels.shape))
        region = labels[grown] == index
        shell = ndimage.binary_dilation(region, structure=element) & ~region & enhanced[grown]
        value = float(np.median(out[grown][shell])) if shell.sum() >= _MIN_SHELL_VOXELS else fallback
        out[grown][region] = value
    logger.debug("painted %d region(s) over with surrounding blood HU", count)
    return out
