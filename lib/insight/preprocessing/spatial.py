"""Putting volumes onto the model grid and heatmaps back onto the input grid (SimpleITK).

The model grid: the input turned to a fixed orientation (``PreprocessConfig.orientation``) and
resampled to ``target_spacing_xyz`` over the same physical extent. A heatmap computed there is
resampled back through patient coordinates, so it lies exactly on the input's voxel grid
(same size, spacing, origin and direction), oblique inputs included.
"""

from __future__ import annotations

import math

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from insight.config import PreprocessConfig

__all__ = ["to_model_grid", "to_reference_grid", "same_grid", "crop_to_body"]

#: Downsampling by more than this factor along an axis gets Gaussian anti-aliasing first.
_ANTIALIAS_FACTOR = 1.2


def same_grid(a: sitk.Image, b: sitk.Image, tol: float = 1e-5) -> bool:
    """True when two images share size, spacing, origin and direction (within ``tol``)."""
    return (
        a.GetSize() == b.GetSize()
        and np.allclose(a.GetSpacing(), b.GetSpacing(), atol=tol)
        and np.allclose(a.GetOrigin(), b.GetOrigin(), atol=tol * 100)
        and np.allclose(a.GetDirection(), b.GetDirection(), atol=tol)
    )


def to_model_grid(image: sitk.Image, config: PreprocessConfig) -> sitk.Image:
    """Orient ``image`` to ``config.orientation`` and resample it to the target spacing (float32, HU).

    Linear interpolation; Gaussian anti-aliasing along axes downsampled by more than 1.2x; voxels
    outside the scan get ``config.background_hu``. Output spacing is exactly the target; output
    size covers the input's extent (rounded to whole voxels), then is cropped in-plane to the body
    when ``config.body_crop_hu`` is set.
    """
    resampled = _resample_to_spacing(image, config)
    if config.body_crop_hu is None:
        return resampled
    return crop_to_body(resampled, config.body_crop_hu, config.body_crop_margin_mm)


def crop_to_body(image: sitk.Image, threshold_hu: float, margin_mm: float) -> sitk.Image:
    """Crop x and y (all slices kept) to the body's bounding box plus a margin.

    The body is the largest connected region of the axial projection of voxels above
    ``threshold_hu``, so a separate patient table is left out. The crop keeps physical geometry
    (origin moves with the region). An image with nothing above the threshold is returned unchanged.
    """
    projection = (sitk.GetArrayViewFromImage(image) > threshold_hu).any(axis=0)  # [y, x]
    labels, count = ndimage.label(projection)
    if count == 0:
        return image
    sizes = np.bincount(labels.ravel())[1:]
    body = labels == (int(np.argmax(sizes)) + 1)
    ys = np.flatnonzero(body.any(axis=1))
    xs = np.flatnonzero(body.any(axis=0))
    spacing_x, spacing_y = image.GetSpacing()[:2]
    mx, my = int(math.ceil(margin_mm / spacing_x)), int(math.ceil(margin_mm / spacing_y))
    size_x, size_y, size_z = image.GetSize()
    x0, x1 = max(0, xs[0] - mx), min(size_x, xs[-1] + 1 + mx)
    y0, y1 = max(0, ys[0] - my), min(size_y, ys[-1] + 1 + my)
    if (x0, y0, x1, y1) == (0, 0, size_x, size_y):
        return image
    return sitk.RegionOfInterest(image, [int(x1 - x0), int(y1 - y0), size_z], [int(x0), int(y0), 0])


def _resample_to_spacing(image: sitk.Image, config: PreprocessConfig) -> sitk.Image:
    """Orient to ``config.orientation`` and resample to ``config.target_spacing_xyz`` (float32)."""
    oriented = sitk.DICOMOrient(sitk.Cast(image, sitk.sitkFloat32), config.orientation)
    in_spacing = np.array(oriented.GetSpacing(), dtype=float)
    out_spacing = np.array(config.target_spacing_xyz, dtype=float)
    if np.allclose(in_spacing, out_spacing, rtol=1e-4):
        return oriented
    factors = out_spacing / in_spacing
    if np.any(factors > _ANTIALIAS_FACTOR):
        sigma_mm = [0.5 * math.sqrt(max(o**2 - i**2, 0.0)) if f > _ANTIALIAS_FACTOR else 0.0
                    for i, o, f in zip(in_spacing, out_spacing, factors)]
        oriented = _smooth(oriented, sigma_mm)
    in_size = np.array(oriented.GetSize(), dtype=float)
    out_size = [max(1, int(round(n * s / t))) for n, s, t in zip(in_size, in_spacing, out_spacing)]
    # keep the physical centre of the first voxel's footprint: origin shifts by half the spacing change
    direction = np.array(oriented.GetDirection()).reshape(3, 3)
    shift = direction @ ((out_spacing - in_spacing) / 2.0)
    origin = np.array(oriented.GetOrigin()) + shift
    return sitk.Resample(oriented, out_size, sitk.Transform(), sitk.sitkLinear, origin.tolist(),
                         out_spacing.tolist(), oriented.GetDirection(), float(config.background_hu), sitk.sitkFloat32)


def to_reference_grid(image: sitk.Image, reference: sitk.Image, default_value: float = 0.0,
                      interpolator: int = sitk.sitkLinear) -> sitk.Image:
    """Resample ``image`` onto ``reference``'s voxel grid through patient coordinates (float32)."""
    if same_grid(image, reference):
        out = sitk.Cast(image, sitk.sitkFloat32)
        out.CopyInformation(reference)
        return out
    return sitk.Resample(image, reference, sitk.Transform(), interpolator, float(default_value), sitk.sitkFloat32)


def _smooth(image: sitk.Image, sigma_mm: list[float]) -> sitk.Image:
    """Separable Gaussian smoothing with a per-axis sigma in mm (0 = axis untouched)."""
    out = image
    for axis, sigma in enumerate(sigma_mm):
        if sigma <= 0:
            continue
        filt = sitk.RecursiveGaussianImageFilter()
        filt.SetDirection(axis)
        filt.SetSigma(float(sigma))
        filt.SetOrder(0)
        filt.SetNormalizeAcrossScale(False)
        out = filt.Execute(out)
    return out
