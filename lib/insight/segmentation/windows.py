"""Sliding-window PE probability of a whole volume on the segmentation grid."""

from __future__ import annotations

import torch
from monai.inferers import sliding_window_inference

from insight.devices import autocast_for
from insight.segmentation.config import SegmentationConfig

__all__ = ["pe_probability"]


@torch.no_grad()
def pe_probability(model: torch.nn.Module, windowed: torch.Tensor, config: SegmentationConfig,
                   device: torch.device, amp: bool = True) -> torch.Tensor:
    """PE probability of every voxel.

    Args:
        model: the network (eval mode is the caller's business), [B, 1, ...] -> [B, 2, ...] logits.
        windowed: [Z, Y, X] or [1, Z, Y, X] HU-windowed volume in [0, 1] on the segmentation grid.
        config: patch size (the window) and sliding-window settings.
        device: where the windows run; the volume itself stays on the CPU (``sw_device``/``device``).

    Returns:
        float32 [Z, Y, X] on the CPU, softmax probability of the PE channel.
    """
    volume = windowed.float().reshape(1, 1, *windowed.shape[-3:])
    inference = config.inference
    with autocast_for(device, amp):
        logits = sliding_window_inference(volume, roi_size=tuple(config.patch_size_zyx),
                                          sw_batch_size=inference.sw_batch_size, predictor=model,
                                          overlap=inference.overlap, mode="gaussian", padding_mode="constant",
                                          sw_device=device, device=torch.device("cpu"))
    return torch.softmax(logits.float(), dim=1)[0, 1]
