"""Slice encoders: 2.5D slice stacks [N, C_in, H, W] -> feature maps [N, C, H/s, W/s].

Every encoder exposes ``out_channels`` and ``stride`` so the INSIGHT head can be built on any of
them. ``small_cnn`` is trained from scratch (no download needed); ResNet trunks come from
torchvision with random weights unless a local weights file is given.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from monai.networks.blocks import Convolution
from torch import nn

from insight.config import ModelConfig
from insight.errors import ModelError
from insight.models.filter_bank import FilterBankEncoder
from insight.models.vessel_filters import VesselFilterEncoder

__all__ = ["SmallCNNEncoder", "ResNetTrunkEncoder", "build_encoder"]

logger = logging.getLogger(__name__)


def _conv(in_ch: int, out_ch: int, stride: int = 1) -> nn.Module:
    return Convolution(spatial_dims=2, in_channels=in_ch, out_channels=out_ch, kernel_size=3,
                       strides=stride, act="RELU", norm="BATCH")


class SmallCNNEncoder(nn.Module):
    """A small VGG-like CNN: a stride-2 stem, then stride-2 stages of two 3x3 convs.

    Args:
        in_channels: stacked slices (2 * slice_context + 1).
        channels: widths, e.g. (16, 32, 64): the stem has ``channels[0]``, its second conv
            ``channels[1]``; each later stage halves the resolution with the next width (the last
            width repeats if ``stride`` needs more stages).
        stride: output stride, 4 or 8.

    Input [N, in_channels, H, W] -> output [N, C, ceil(H/stride), ceil(W/stride)] (C = last width).
    The full-resolution work is one strided conv, which keeps CPU training affordable.
    """

    def __init__(self, in_channels: int, channels: tuple[int, ...] = (16, 32, 64), stride: int = 4) -> None:
        super().__init__()
        if stride not in (4, 8):
            raise ValueError(f"stride must be 4 or 8, got {stride}")
        n_down = {4: 2, 8: 3}[stride]
        widths = list(channels) + [channels[-1]] * max(0, n_down + 1 - len(channels))
        layers: list[nn.Module] = [_conv(in_channels, widths[0], stride=2), _conv(widths[0], widths[1])]
        for i in range(2, n_down + 1):
            layers += [_conv(widths[i - 1], widths[i], stride=2), _conv(widths[i], widths[i])]
        self.layers = nn.Sequential(*layers)
        self.out_channels = widths[n_down]
        self.stride = stride

    def forward(self, slices: torch.Tensor) -> torch.Tensor:
        return self.layers(slices)


class ResNetTrunkEncoder(nn.Module):
    """A torchvision ResNet-18/34 trunk up to ``layer2``, at stride 8 (or 4: ``layer2`` unstrided).

    Input [N, in_channels, H, W] -> [N, 128, H/stride, W/stride]. With ``in_channels != 3`` the
    stem convolution is rebuilt (pretrained RGB weights are averaged over colour and repeated).
    """

    def __init__(self, name: str, in_channels: int, stride: int = 8, weights_path: str | None = None) -> None:
        super().__init__()
        import torchvision  # lazy: only the ResNet encoders need it

        builders = {"resnet18": torchvision.models.resnet18, "resnet34": torchvision.models.resnet34}
        if name not in builders:
            raise ValueError(f"unknown ResNet trunk {name!r}: use one of {sorted(builders)}")
        net = builders[name](weights=None)
        if weights_path:
            _load_local_weights(net, weights_path)
        if in_channels != 3:
            old = net.conv1
            net.conv1 = nn.Conv2d(in_channels, old.out_channels, kernel_size=7, stride=2, padding=3, bias=False)
            with torch.no_grad():
                net.conv1.weight.copy_(old.weight.mean(dim=1, keepdim=True).repeat(1, in_channels, 1, 1))
        if stride == 4:
            net.layer2[0].conv1.stride = (1, 1)
            net.layer2[0].downsample[0].stride = (1, 1)
        elif stride != 8:
            raise ValueError(f"stride must be 4 or 8, got {stride}")
        self.trunk = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2)
        self.out_channels = 128
        self.stride = stride

    def forward(self, slices: torch.Tensor) -> torch.Tensor:
        return self.trunk(slices)


def _load_local_weights(net: nn.Module, weights_path: str) -> None:
    path = Path(weights_path)
    if not path.is_file():
        raise ModelError(f"encoder weights file not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a corrupt file
        raise ModelError(f"cannot read encoder weights {path}: {err}") from err
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    missing, unexpected = net.load_state_dict(state, strict=False)
    logger.info("loaded encoder weights %s (%d missing, %d unexpected keys)", path, len(missing), len(unexpected))


def build_encoder(config: ModelConfig, in_channels: int) -> nn.Module:
    """Build the encoder named in ``config`` for ``in_channels`` stacked slices."""
    fixed_feature_encoders = {"filter_bank": FilterBankEncoder, "vessel_filters": VesselFilterEncoder}
    if config.encoder in fixed_feature_encoders:
        encoder = fixed_feature_encoders[config.encoder](in_channels, config.encoder_channels[-1], config.encoder_stride)
        if config.encoder_weights:
            _load_local_weights(encoder, config.encoder_weights)
        return encoder
    if config.encoder == "small_cnn":
        encoder = SmallCNNEncoder(in_channels, config.encoder_channels, config.encoder_stride)
        if config.encoder_weights:
            _load_local_weights(encoder, config.encoder_weights)
        return encoder
    return ResNetTrunkEncoder(config.encoder, in_channels, config.encoder_stride, config.encoder_weights)
