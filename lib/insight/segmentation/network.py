"""The segmentation network: a MONAI 3D UNet, [B, 1, Z, Y, X] windowed CT -> [B, 2, Z, Y, X] logits."""

from __future__ import annotations

import torch
from monai.networks.layers import Norm
from monai.networks.nets import UNet

from insight.segmentation.config import SegNetworkConfig

__all__ = ["build_network", "NUM_CLASSES"]

#: Output channels: background and PE.
NUM_CLASSES = 2


def build_network(config: SegNetworkConfig) -> torch.nn.Module:
    """A freshly initialised UNet (initialisation follows torch's global RNG: seed it first)."""
    return UNet(spatial_dims=3, in_channels=1, out_channels=NUM_CLASSES, channels=tuple(config.channels),
                strides=(2,) * (len(config.channels) - 1), num_res_units=config.num_res_units, norm=Norm.INSTANCE,
                dropout=config.dropout)
