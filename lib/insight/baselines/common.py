"""Helpers shared by the baseline networks."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["region_cells"]


def region_cells(region: torch.Tensor, stride: int, cells_hw: tuple[int, int] | None = None) -> torch.Tensor:
    """Input-resolution search region [N, H, W] bool -> [N, 1, h, w] bool: feature cells holding any of it.

    A cell i covers input pixels [i * stride, (i + 1) * stride) (``ceil_mode``, as the encoders'
    output size ceil(H / stride)). ``cells_hw`` checks the result against a feature map's size.
    """
    if region.ndim != 3:
        raise ValueError(f"expected region [N, H, W], got shape {tuple(region.shape)}")
    cells = F.max_pool2d(region[:, None].float(), stride, ceil_mode=True) > 0
    if cells_hw is not None and tuple(cells.shape[-2:]) != tuple(cells_hw):
        raise ValueError(f"region gives {tuple(cells.shape[-2:])} cells, the feature map has {tuple(cells_hw)}")
    return cells
