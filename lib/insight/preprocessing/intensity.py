"""HU windowing and the 2.5D slice stack the encoder reads."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["window_hu", "slice_stack"]


def window_hu(volume_hu: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    """Clip HU to ``window`` and map it linearly onto [0, 1]. Any shape -> float32, same shape."""
    low, high = float(window[0]), float(window[1])
    if not high > low:
        raise ValueError(f"window must be (low, high) with low < high, got {window}")
    out = np.clip(volume_hu.astype(np.float32, copy=False), low, high)
    out -= low
    out /= high - low
    return out


def slice_stack(volume: torch.Tensor, context: int) -> torch.Tensor:
    """Stack each axial slice with its ``context`` neighbours on each side as channels.

    [Z, Y, X] -> [Z, 2 * context + 1, Y, X]; slices past either end repeat the edge slice.
    """
    if volume.ndim != 3:
        raise ValueError(f"expected a volume [Z, Y, X], got shape {tuple(volume.shape)}")
    if context == 0:
        return volume.unsqueeze(1)
    padded = F.pad(volume.unsqueeze(0).unsqueeze(0), (0, 0, 0, 0, context, context), mode="replicate")[0, 0]
    return torch.stack([padded[i : i + volume.shape[0]] for i in range(2 * context + 1)], dim=1)
