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

from insight.config import PreprocessConfig

__all__ = ["to_model_grid", "to_reference_grid", "same_grid"]

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
    size covers the input's extent (rounded to whole voxels).
    """
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
