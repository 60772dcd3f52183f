"""A plain CNN scan classifier with global average pooling (explained post hoc by Grad-CAM).

    features = GELU(conv3x3(LN(GELU(conv3x3(reduce(encoder(slices)))))))   [N, W, h, w]
    logit_k  = c_k^T mean over the search region's cells of features + b_k
    p_k      = sigmoid(logit_k)

The network has no heatmap of its own: :func:`insight.baselines.gradcam.grad_cam` makes one from
the gradient of the logit with respect to ``features`` (its last convolutional layer).
"""

from __future__ import annotations

import torch
from torch import nn

from insight.baselines.common import region_cells
from insight.config import ModelConfig
from insight.models.encoders import build_encoder
from insight.models.insight_head import ChannelLayerNorm, ReduceBlock
from insight.models.insight_model import InsightOutput

__all__ = ["GlobalPoolCNN"]


class GlobalPoolCNN(nn.Module):
    """Encoder, the INSIGHT reduction, two 3x3 conv layers, masked global average pooling, linear.

    Args:
        config: the shared model settings: the encoder, ``reduce_channels`` and ``head_widths[:2]``
            (widths of the two conv layers) and ``num_classes`` K are used.
        in_channels: stacked slices per input.

    ``forward`` -> :class:`InsightOutput` with probability [K], an all-zero heatmap [N, K, h, w]
    (no built-in heatmap: use Grad-CAM), detection_logits [1, K, 1, 1] (the scan logits).
    """

    def __init__(self, config: ModelConfig, in_channels: int) -> None:
        super().__init__()
        if in_channels < 1:
            raise ValueError(f"in_channels must be >= 1, got {in_channels}")
        self.config = config
        first, second = config.head_widths[0], config.head_widths[1]
        self.encoder = build_encoder(config, in_channels)
        self.reduce = ReduceBlock(self.encoder.out_channels, config.reduce_channels)
        self.head = nn.Sequential(
            nn.Conv2d(config.reduce_channels, first, 3, padding=1, padding_mode="replicate"),
            nn.GELU(),
            ChannelLayerNorm(first),
            nn.Conv2d(first, second, 3, padding=1, padding_mode="replicate"),
            nn.GELU(),
        )
        self.classifier = nn.Linear(second, config.num_classes)

    @property
    def stride(self) -> int:
        return self.encoder.stride

    @property
    def supports_precompute(self) -> bool:
        return hasattr(self.encoder, "precompute")

    def feature_maps(self, slices: torch.Tensor, precomputed: bool = False) -> torch.Tensor:
        """The last conv layer's output [N, W, h, w] (Grad-CAM's target layer)."""
        if slices.ndim != 4:
            raise ValueError(f"expected slices [N, C, H, W], got shape {tuple(slices.shape)}")
        if precomputed and not self.supports_precompute:
            raise ValueError(f"encoder {self.config.encoder!r} has no precomputable part")
        encoded = self.encoder(slices, precomputed=True) if precomputed else self.encoder(slices)
        return self.head(self.reduce(encoded))

    def classify(self, features: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Scan logits [K] from ``features`` [N, W, h, w], averaged over ``mask`` [N, 1, h, w] cells
        (all cells when None or empty)."""
        feats = features.float()
        if mask is not None and bool(mask.any()):
            weights = mask.float()
            pooled = (feats * weights).sum(dim=(0, 2, 3)) / weights.sum()
        else:
            pooled = feats.mean(dim=(0, 2, 3))
        return self.classifier(pooled)

    def cells(self, region: torch.Tensor | None, features: torch.Tensor) -> torch.Tensor | None:
        """The search region's feature cells [N, 1, h, w] for ``features``, or None."""
        return region_cells(region, self.stride, features.shape[-2:]) if region is not None else None

    def forward(self, slices: torch.Tensor, precomputed: bool = False,
                region: torch.Tensor | None = None) -> InsightOutput:
        features = self.feature_maps(slices, precomputed)
        logits = self.classify(features, self.cells(region, features))
        probability = torch.sigmoid(logits)
        n, _, h, w = features.shape
        heatmap = features.new_zeros((n, logits.shape[0], h, w), dtype=torch.float32)
        return InsightOutput(probability, heatmap, logits.view(1, -1, 1, 1), None)
