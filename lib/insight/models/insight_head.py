"""The INSIGHT head: 1x1 reduction, a detection module and a context module.

Shapes: features [N, C, h, w] for the N slices of one volume; logits [N, K, h, w].
"""

from __future__ import annotations

import torch
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


class _SliceNeighbourConv(nn.Module):
    """A 3x3 conv that also sees ``depth`` neighbouring slices, on [N, C, h, w] slice stacks.

    Equivalent to a (depth, 3, 3) 3D conv with replication padding over the slice axis, computed
    as one 2D conv over the neighbours stacked as channels (much faster than Conv3d on CPU).
    [N, C_in, h, w] -> [N, C_out, h, w].
    """

    def __init__(self, in_ch: int, out_ch: int, depth: int) -> None:
        super().__init__()
        self.depth = depth
        self.conv = nn.Conv2d(in_ch * depth, out_ch, kernel_size=3, padding=1, padding_mode="replicate")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.depth > 1:
            half = self.depth // 2
            idx = torch.arange(x.shape[0], device=x.device)
            neighbours = [x[(idx + offset).clamp(0, x.shape[0] - 1)] for offset in range(-half, half + 1)]
            x = torch.cat(neighbours, dim=1)
        return self.conv(x)


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
        self.layers = _stack(lambda i, o: _SliceNeighbourConv(i, o, depth), (reduce_channels, *widths), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)
