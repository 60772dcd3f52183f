"""Fixed 3D vessel and filling-defect features with a small learned layer: ``vessel_filters``.

The 2D ``filter_bank`` sees one slice at a time, and its features could not tell a clot from the
partial-volume rim of every artery even with clot masks as supervision (docs/experiments/
2026-11-23-cpu-big-clot-diagnostic). A clot is a 3D object: a soft-tissue stretch *inside* a
contrast-filled tube, closed off by contrast along the vessel, while the rim is one voxel thin with
lung on one side. This encoder computes, on the whole volume at once:

- intensity and a light Gaussian blur;
- Hessian eigenvalues at three scales (sigma 1, 1.6 and 2.5 voxels): dark blobs and tubes inside bright
  surroundings have large positive eigenvalues, bright tubes negative ones;
- grey-level black top-hats (closing minus image) with 3 x (2r+1)^2 boxes, r = 1, 2, 3;
- the local maximum over the same boxes (how bright the nearest contrast is);
- the local minimum over a 3 x 5 x 5 box (lung next to the voxel);
- the fraction of contrast-enhanced voxels and of aerated voxels in 3 x 5 x 5 and 3 x 9 x 9 boxes.

Thresholds are in window units: the input is the PE window (-250 to 450 HU) mapped onto [0, 1]
(:class:`insight.config.PreprocessConfig` default), so 200 HU is 0.643 and anything at or below
about -215 HU is 0.05 or less.

The fixed maps are pooled per slice to the output stride (average and max, as ``filter_bank``) and
mixed by one learned 3x3 conv. Input: the whole volume's slice stacks [N, C_in, H, W] in slice order
(the centre channel of stack i is slice i), as training and inference pass them; output
[N, out_channels, ceil(H/stride), ceil(W/stride)].
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from insight.models.filter_bank import FilterBankEncoder, _gaussian_kernel

__all__ = ["VesselFilterEncoder", "hessian_eigenvalues", "symmetric_eigenvalues"]

#: Hessian scales in voxels.
_HESSIAN_SIGMAS = (1.0, 1.6, 2.5)
#: In-plane radii (voxels) of the 3 x (2r+1) x (2r+1) boxes of the top-hats and local maxima.
_BOX_RADII = (1, 2, 3)
#: Window units: the lower end of the clipped contrast image (-100 HU) and the contrast threshold (200 HU).
_CLIP_LOW = 150.0 / 700.0
_CONTRAST = 450.0 / 700.0
#: Window units: aerated lung (at or below about -215 HU).
_AERATED = 0.05


def _pad_axis(volume: torch.Tensor, axis: int, pad: int) -> torch.Tensor:
    """Replicate-pad [1, 1, Z, Y, X] by ``pad`` voxels on both sides of spatial ``axis`` (0 = z)."""
    padding = [0] * 6  # F.pad lists the last axis (x) first
    padding[2 * (2 - axis)] = padding[2 * (2 - axis) + 1] = pad
    return F.pad(volume, padding, mode="replicate")


def _blur3d(volume: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of [1, 1, Z, Y, X] (replicate padding), sigma in voxels."""
    kernel = _gaussian_kernel(sigma).to(volume)
    out = volume
    for axis in range(3):
        shape = [1, 1, 1, 1, 1]
        shape[2 + axis] = -1
        out = F.conv3d(_pad_axis(out, axis, kernel.numel() // 2), kernel.view(shape))
    return out


def _box_max(volume: torch.Tensor, size: tuple[int, int, int]) -> torch.Tensor:
    """Grey dilation of [1, 1, Z, Y, X] by a box (odd sizes), replicate padding.

    One 1D max per axis: the same result as one box-shaped max, 2.7x faster for a 3 x 7 x 7 box
    (``benchmarks/vessel_filters_speed.py``).
    """
    out = volume
    for axis, length in enumerate(size):
        if length == 1:
            continue
        kernel = [1, 1, 1]
        kernel[axis] = length
        out = F.max_pool3d(_pad_axis(out, axis, length // 2), tuple(kernel), stride=1)
    return out


def _box_mean(volume: torch.Tensor, size: tuple[int, int, int]) -> torch.Tensor:
    pz, py, px = (s // 2 for s in size)
    return F.avg_pool3d(F.pad(volume, (px, px, py, py, pz, pz), mode="replicate"), size, stride=1)


def _gradient(volume: torch.Tensor, axis: int) -> torch.Tensor:
    """Central differences along spatial ``axis`` (0 = z) of [1, 1, Z, Y, X]; one-sided at the ends.

    An axis one voxel long (a single-slice scan) has no change along it: zeros.
    """
    if volume.shape[2 + axis] < 2:
        return torch.zeros_like(volume)
    return torch.gradient(volume, dim=2 + axis)[0]


def symmetric_eigenvalues(a11: torch.Tensor, a22: torch.Tensor, a33: torch.Tensor, a12: torch.Tensor,
                          a13: torch.Tensor, a23: torch.Tensor) -> torch.Tensor:
    """Eigenvalues (ascending) of symmetric 3x3 matrices given by their six entries (same shapes).

    The closed-form trigonometric solution (Smith 1961), exact to float32 rounding. On 80x100x116
    matrices it took 0.048 s against 0.97 s for ``torch.linalg.eigvalsh`` (one CPU thread;
    ``benchmarks/vessel_filters_speed.py``).
    Returns [3, *shape].
    """
    q = (a11 + a22 + a33) / 3.0
    off = a12 * a12 + a13 * a13 + a23 * a23
    b11, b22, b33 = a11 - q, a22 - q, a33 - q
    p = torch.sqrt(((b11 * b11 + b22 * b22 + b33 * b33 + 2.0 * off) / 6.0).clamp_min(1e-30))
    det = (b11 * (b22 * b33 - a23 * a23) - a12 * (a12 * b33 - a23 * a13) + a13 * (a12 * a23 - b22 * a13))
    # Where the matrix is (nearly) a multiple of the identity, p is ~0 and all three eigenvalues are q.
    r = torch.where(p > 1e-12, det / (2.0 * p ** 3), torch.zeros_like(p)).clamp(-1.0, 1.0)
    phi = torch.acos(r) / 3.0
    largest = q + 2.0 * p * torch.cos(phi)
    smallest = q + 2.0 * p * torch.cos(phi + 2.0 * math.pi / 3.0)
    return torch.stack([smallest, 3.0 * q - largest - smallest, largest])


def hessian_eigenvalues(volume: torch.Tensor, sigma: float) -> torch.Tensor:
    """Eigenvalues (ascending) of the Hessian of the blurred volume, scale-normalised by sigma^2.

    Derivatives are central differences of the Gaussian-blurred volume (as scikit-image's
    ``hessian_matrix(..., use_gaussian_derivatives=False)``). [1, 1, Z, Y, X] -> [3, Z, Y, X].
    """
    smooth = _blur3d(volume, sigma)
    first = [_gradient(smooth, a) for a in range(3)]
    second = {(i, j): _gradient(first[i], j)[0, 0] for i in range(3) for j in range(i, 3)}
    eig = symmetric_eigenvalues(second[0, 0], second[1, 1], second[2, 2], second[0, 1], second[0, 2], second[1, 2])
    return eig * (sigma * sigma)


class VesselFilterEncoder(FilterBankEncoder):
    """``filter_bank``'s pooling and learned layer on fixed 3D vessel/filling-defect features.

    Args:
        in_channels: stacked slices (odd; the centre channel is the slice itself).
        out_channels: width of the learned layer.
        stride: output stride (1, 2, 4 or 8).
    """

    N_FIXED = 2 + 3 * len(_HESSIAN_SIGMAS) + 2 * len(_BOX_RADII) + 1 + 4

    @torch.no_grad()
    def fixed_features(self, slices: torch.Tensor) -> torch.Tensor:
        """The fixed maps at full resolution: [N, C_in, H, W] (whole volume, in slice order) -> [N, N_FIXED, H, W]."""
        centre = slices[:, self.in_channels // 2].float()  # [Z, Y, X]
        volume = centre[None, None]
        maps = [volume, _blur3d(volume, 0.7)]
        clipped = volume.clamp(min=_CLIP_LOW)
        for sigma in _HESSIAN_SIGMAS:
            maps.append(hessian_eigenvalues(clipped, sigma)[None])
        for radius in _BOX_RADII:
            box = (3, 2 * radius + 1, 2 * radius + 1)
            dilated = _box_max(clipped, box)
            closed = -_box_max(-dilated, box)
            maps += [closed - clipped, dilated]
        maps.append(-_box_max(-volume, (3, 5, 5)))
        contrast = (volume > _CONTRAST).float()
        aerated = (volume <= _AERATED).float()
        for size in ((3, 5, 5), (3, 9, 9)):
            maps += [_box_mean(contrast, size), _box_mean(aerated, size)]
        stacked = torch.cat([m.reshape(-1, *centre.shape) for m in maps], dim=0)  # [N_FIXED, Z, Y, X]
        return stacked.permute(1, 0, 2, 3).contiguous()
