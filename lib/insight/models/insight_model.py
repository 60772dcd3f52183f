"""The INSIGHT model: encoder -> reduction -> detection and context modules -> heatmap -> pooling.

Heatmap H = sigmoid(detection) * (1 - sigmoid(context)); the scan probability is the pooled H.
One forward call handles one volume given as its stack of N 2.5D slices.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from insight.config import ModelConfig
from insight.models.encoders import build_encoder
from insight.models.insight_head import ContextModule, DetectionModule, ReduceBlock
from insight.models.pooling import build_pooling, zero_below_otsu

__all__ = ["InsightOutput", "InsightModel"]


@dataclass
class InsightOutput:
    """What one volume's forward pass gives.

    Attributes:
        probability: [K] pooled scan-level probability per class.
        heatmap: [N, K, h, w] H = D * (1 - X) in [0, 1], before Otsu zeroing.
        detection_logits: [N, K, h, w] raw detection logits (for spectral decoupling).
        context_logits: [N, K, h, w] raw context logits, or None without a context module.
    """

    probability: torch.Tensor
    heatmap: torch.Tensor
    detection_logits: torch.Tensor
    context_logits: torch.Tensor | None


class InsightModel(nn.Module):
    """INSIGHT on 2.5D CT slices.

    Args:
        config: the model settings (encoder, widths, context depth, pooling).
        in_channels: stacked slices per input (``PreprocessConfig.in_channels``).

    ``forward(slices)`` takes [N, in_channels, H, W] (one volume) and returns :class:`InsightOutput`
    with feature-map resolution h = ceil(H / stride), w = ceil(W / stride).
    """

    def __init__(self, config: ModelConfig, in_channels: int) -> None:
        super().__init__()
        if in_channels < 1:
            raise ValueError(f"in_channels must be >= 1, got {in_channels}")
        self.config = config
        self.encoder = build_encoder(config, in_channels)
        self.reduce = ReduceBlock(self.encoder.out_channels, config.reduce_channels)
        self.detection = DetectionModule(config.reduce_channels, config.head_widths, config.num_classes)
        self.context = (
            ContextModule(config.reduce_channels, config.head_widths, config.num_classes, config.context_depth)
            if config.use_context
            else None
        )
        self.pool = build_pooling(config.pooling, config.smoothmax_alpha)

    @property
    def stride(self) -> int:
        return self.encoder.stride

    def region_cells(self, region: torch.Tensor, cells_hw: tuple[int, int]) -> torch.Tensor:
        """[N, H, W] bool input-resolution region -> [N, 1, h, w] bool: cells holding any of it."""
        if region.ndim != 3:
            raise ValueError(f"expected region [N, H, W], got shape {tuple(region.shape)}")
        cells = torch.nn.functional.max_pool2d(region[:, None].float(), self.stride, ceil_mode=True)
        if tuple(cells.shape[-2:]) != tuple(cells_hw):
            raise ValueError(f"region gives {tuple(cells.shape[-2:])} cells, heatmap has {tuple(cells_hw)}")
        return cells > 0

    @property
    def supports_precompute(self) -> bool:
        """True when the encoder has a parameter-free first part that training may cache per scan."""
        return hasattr(self.encoder, "precompute")

    def forward(self, slices: torch.Tensor, precomputed: bool = False,
                region: torch.Tensor | None = None) -> InsightOutput:
        """``slices`` [N, C, H, W]; with ``precomputed``, the encoder's ``precompute`` output instead.

        ``region`` [N, H, W] bool (input resolution): where heatmap mass may lie. Feature locations
        whose cell holds none of it get heatmap 0 and are left out of the pooling.
        """
        if slices.ndim != 4:
            raise ValueError(f"expected slices [N, C, H, W], got shape {tuple(slices.shape)}")
        if precomputed and not self.supports_precompute:
            raise ValueError(f"encoder {self.config.encoder!r} has no precomputable part")
        encoded = self.encoder(slices, precomputed=True) if precomputed else self.encoder(slices)
        features = self.reduce(encoded)
        detection_logits = self.detection(features)
        heatmap = torch.sigmoid(detection_logits.float())
        context_logits = None
        if self.context is not None:
            context_logits = self.context(features)
            heatmap = heatmap * (1.0 - torch.sigmoid(context_logits.float()))
        mask = self.region_cells(region, heatmap.shape[-2:]) if region is not None else None
        if mask is not None:
            heatmap = heatmap * mask
        pooled_input = zero_below_otsu(heatmap, mask) if (self.config.otsu_in_training or not self.training) else heatmap
        probability = self.pool(pooled_input, mask)
        return InsightOutput(probability, heatmap, detection_logits, context_logits)
