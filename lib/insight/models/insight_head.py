"""The INSIGHT head: 1x1 reduction, a detection module and a context module.

Shapes: features [N, C, h, w] for the N slices of one volume; logits [N, K, h, w].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ChannelLayerNorm", "DetectionModule", "ContextModule", "ReduceBlock"]


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channel axis at every location of [N, C, ...] tensors."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.movedim(1, -1)).movedim(-1, 1)


class ReduceBlock(nn.Module):
    """1x1 conv C -> width, GELU, LayerNorm. [N, C, h, w] -> [N, width, h, w]."""

    def __init__(self, in_channels: int, width: int) -> None:
        super().__init__()
        self.block = nn.Sequential(nn.Conv2d(in_channels, width, 1), nn.GELU(), ChannelLayerNorm(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


def _stack(conv_factory, widths: tuple[int, ...], num_classes: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for in_w, out_w in zip(widths[:-1], widths[1:]):
        layers += [conv_factory(in_w, out_w), nn.GELU(), ChannelLayerNorm(out_w)]
    layers.append(conv_factory(widths[-1], num_classes))
    return nn.Sequential(*layers)


class DetectionModule(nn.Module):
    """Four 1x1 convs (reduce -> widths -> K) with GELU + LayerNorm between.

    A receptive field of one feature location: it catches small findings.
    [N, reduce_channels, h, w] -> logits [N, K, h, w].
    """

    def __init__(self, reduce_channels: int, widths: tuple[int, int, int], num_classes: int) -> None:
        super().__init__()
        self.layers = _stack(lambda i, o: nn.Conv2d(i, o, 1), (reduce_channels, *widths), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class _ReplicationConv3d(nn.Module):
    """A (depth, 3, 3) conv over [1, C, N, h, w] with replication padding (size kept)."""

    def __init__(self, in_ch: int, out_ch: int, depth: int) -> None:
        super().__init__()
        self.pad = (1, 1, 1, 1, depth // 2, depth // 2)
        self.conv = nn.Conv3d(in_ch, out_ch, kernel_size=(depth, 3, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, self.pad, mode="replicate"))


class ContextModule(nn.Module):
    """Four 3x3 convs with the detection module's widths and replication padding.

    Its broader receptive field lets it suppress local false positives. With ``depth > 1`` each
    3x3 conv also sees ``depth`` neighbouring slices (a (depth, 3, 3) conv over the slice axis).
    [N, reduce_channels, h, w] -> logits [N, K, h, w].
    """

    def __init__(self, reduce_channels: int, widths: tuple[int, int, int], num_classes: int, depth: int = 1) -> None:
        super().__init__()
        if depth < 1 or depth % 2 == 0:
            raise ValueError(f"depth must be a positive odd number, got {depth}")
        self.layers = _stack(lambda i, o: _ReplicationConv3d(i, o, depth), (reduce_channels, *widths), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # slices become the depth axis of one 3D sample: [N, C, h, w] -> [1, C, N, h, w]
        volume = x.transpose(0, 1).unsqueeze(0)
        return self.layers(volume).squeeze(0).transpose(0, 1)
