"""A fixed multi-scale filter bank with a small learned layer: an encoder that needs no pretraining.

INSIGHT's authors put their head on frozen, pretrained features (DINOv2). No pretrained weights
can be downloaded here, and a CNN learned from scratch on a few hundred weakly labelled scans does
not find millimetre-sized clots (measured: it collapses to a constant heatmap). This encoder
supplies the frozen part from classical image analysis instead, all as torch ops (CPU or GPU):

- intensity and its Gaussian blur;
- grey-level black top-hats (closing minus image) at three radii: dark spots enclosed by brighter
  surroundings, the signature of a filling defect inside an enhanced artery;
- a white top-hat (image minus opening): bright tubes (enhanced vessels);
- local standard deviation;
- through-plane change (centre slice against its two neighbours).

Each map is reduced to the output stride by both average and max pooling (max keeps a clot that
covers a fraction of a cell), then one learned 3x3 conv layer mixes them.
Input [N, C_in, H, W] in [0, 1] (2.5D: the centre channel is the slice itself) ->
output [N, out_channels, ceil(H/stride), ceil(W/stride)].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from insight.config import FIXED_FEATURE_STRIDES

__all__ = ["FilterBankEncoder"]

#: Structuring-element radii (pixels) of the black top-hats, and of the white top-hat.
_BLACK_TOPHAT_RADII = (2, 4, 6)
_WHITE_TOPHAT_RADIUS = 4


def _dilate(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Grey dilation by a (2r+1)^2 square, as a row pass then a column pass (same result, ~3x faster)."""
    size = 2 * radius + 1
    rows = F.max_pool2d(F.pad(x, (radius, radius, 0, 0), mode="replicate"), (1, size), stride=1)
    return F.max_pool2d(F.pad(rows, (0, 0, radius, radius), mode="replicate"), (size, 1), stride=1)


def _erode(x: torch.Tensor, radius: int) -> torch.Tensor:
    return -_dilate(-x, radius)


def _gaussian_kernel(sigma: float) -> torch.Tensor:
    radius = max(1, int(round(3 * sigma)))
    grid = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (grid / sigma) ** 2)
    return kernel / kernel.sum()


class FilterBankEncoder(nn.Module):
    """Fixed morphological/intensity features, pooled to ``stride``, then a learned 3x3 conv.

    Args:
        in_channels: stacked slices (odd; the centre one is the slice of interest).
        out_channels: width of the learned layer.
        stride: output stride (1, 2, 4 or 8).
    """

    N_FIXED = 1 + 1 + len(_BLACK_TOPHAT_RADII) + 1 + 1 + 1

    def __init__(self, in_channels: int, out_channels: int = 32, stride: int = 4) -> None:
        super().__init__()
        if in_channels < 1 or in_channels % 2 == 0:
            raise ValueError(f"in_channels must be odd (centre slice plus neighbours), got {in_channels}")
        if stride not in FIXED_FEATURE_STRIDES:
            raise ValueError(f"stride must be one of {FIXED_FEATURE_STRIDES}, got {stride}")
        self.in_channels = in_channels
        self.stride = stride
        self.out_channels = out_channels
        self.register_buffer("gauss", _gaussian_kernel(1.0), persistent=False)
        self.mix = nn.Sequential(
            nn.Conv2d(2 * self.N_FIXED, out_channels, kernel_size=3, padding=1),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )

    @torch.no_grad()
    def fixed_features(self, slices: torch.Tensor) -> torch.Tensor:
        """The fixed maps at full resolution: [N, C_in, H, W] -> [N, N_FIXED, H, W]."""
        centre = slices[:, self.in_channels // 2 : self.in_channels // 2 + 1].float()
        k = self.gauss.to(centre)
        pad = k.numel() // 2
        blurred = F.conv2d(F.pad(centre, (pad, pad, 0, 0), mode="replicate"), k.view(1, 1, 1, -1))
        blurred = F.conv2d(F.pad(blurred, (0, 0, pad, pad), mode="replicate"), k.view(1, 1, -1, 1))
        maps = [centre, blurred]
        for radius in _BLACK_TOPHAT_RADII:
            maps.append(_erode(_dilate(blurred, radius), radius) - blurred)
        maps.append(blurred - _dilate(_erode(blurred, _WHITE_TOPHAT_RADIUS), _WHITE_TOPHAT_RADIUS))
        mean = F.avg_pool2d(F.pad(centre, (2,) * 4, mode="replicate"), 5, stride=1)
        mean_sq = F.avg_pool2d(F.pad(centre**2, (2,) * 4, mode="replicate"), 5, stride=1)
        maps.append((mean_sq - mean**2).clamp_min(0).sqrt())
        if self.in_channels > 1:
            others = torch.cat([slices[:, : self.in_channels // 2], slices[:, self.in_channels // 2 + 1 :]], 1)
            maps.append((others.float() - centre).abs().mean(dim=1, keepdim=True))
        else:
            maps.append(torch.zeros_like(centre))
        return torch.cat(maps, dim=1)

    @property
    def precomputed_channels(self) -> int:
        """Channels of :meth:`precompute`'s output: ``2 * N_FIXED``, or ``N_FIXED`` at stride 1."""
        return self.N_FIXED if self.stride == 1 else 2 * self.N_FIXED

    @torch.no_grad()
    def precompute(self, slices: torch.Tensor) -> torch.Tensor:
        """The fixed part, pooled to the output stride: [N, C_in, H, W] -> [N, precomputed_channels, h, w].

        Average- and max-pooled maps, stacked. At stride 1 both poolings are the identity, so the maps
        are stored once (half the memory of a training cache) and :meth:`forward` stacks them twice.
        It has no parameters, so training can compute it once per scan and reuse it every epoch.
        """
        fixed = self.fixed_features(slices)
        if self.stride == 1:
            return fixed
        return torch.cat([
            F.avg_pool2d(fixed, self.stride, ceil_mode=True),
            F.max_pool2d(fixed, self.stride, ceil_mode=True),
        ], dim=1)

    def forward(self, slices: torch.Tensor, precomputed: bool = False) -> torch.Tensor:
        """``slices`` [N, C_in, H, W], or with ``precomputed`` the output of :meth:`precompute`."""
        pooled = slices if precomputed else self.precompute(slices)
        if self.stride == 1:  # the learned layer reads (average, max) pooled maps: the same maps twice here
            pooled = torch.cat([pooled, pooled], dim=1)
        return self.mix(pooled.float())
