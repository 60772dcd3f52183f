"""Attention MIL (ABMIL): gated attention pooling over region features, its attention as the heatmap.

Ilse, Tomczak, Welling, "Attention-based Deep Multiple Instance Learning", ICML 2018 (the gated
variant, as CLAM uses it). The instances of a scan are its feature locations: every cell of
every slice's encoder feature map inside the search region.

    h_m = LayerNorm(GELU(W_e f_m))                        embedding of instance m (the INSIGHT reduction)
    s_km = w_k^T (tanh(V h_m) * sigmoid(U h_m))           attention score, class k
    a_km = softmax_m(s_km)                                attention weights, sum_m a_km = 1
    z_k = sum_m a_km h_m;  p_k = sigmoid(c_k^T z_k + b_k) scan probability

Heatmap (for display and localization): ``p_k * a_km / max_m a_km``, so the hottest instance of a
scan reads as the scan's probability and a scan called negative stays cool.
"""

from __future__ import annotations

import torch
from torch import nn

from insight.baselines.common import region_cells
from insight.config import ModelConfig
from insight.models.encoders import build_encoder
from insight.models.insight_head import ReduceBlock
from insight.models.insight_model import InsightOutput

__all__ = ["GatedAttentionMIL"]


class GatedAttentionMIL(nn.Module):
    """ABMIL on 2.5D CT slices, built on the same encoder as INSIGHT.

    Args:
        config: the shared model settings: the encoder, ``reduce_channels`` (embedding width D),
            ``head_widths[0]`` (attention width L) and ``num_classes`` K are used.
        in_channels: stacked slices per input.

    ``forward(slices [N, C, H, W], precomputed=False, region=None)`` -> :class:`InsightOutput` with
    probability [K], heatmap [N, K, h, w] (detached; see the module docstring), detection_logits
    [1, K, 1, 1] (the scan logits) and no context logits.
    """

    def __init__(self, config: ModelConfig, in_channels: int) -> None:
        super().__init__()
        if in_channels < 1:
            raise ValueError(f"in_channels must be >= 1, got {in_channels}")
        self.config = config
        width, hidden, classes = config.reduce_channels, config.head_widths[0], config.num_classes
        self.encoder = build_encoder(config, in_channels)
        self.embed = ReduceBlock(self.encoder.out_channels, width)
        self.attention_v = nn.Conv2d(width, hidden, 1)
        self.attention_u = nn.Conv2d(width, hidden, 1)
        self.attention_w = nn.Conv2d(hidden, classes, 1)
        self.classifier_weight = nn.Parameter(torch.empty(classes, width))
        self.classifier_bias = nn.Parameter(torch.zeros(classes))
        nn.init.xavier_uniform_(self.classifier_weight)

    @property
    def stride(self) -> int:
        return self.encoder.stride

    @property
    def supports_precompute(self) -> bool:
        return hasattr(self.encoder, "precompute")

    def attention(self, embeddings: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """Attention weights [N, K, h, w] (float32) summing to 1 per class over the masked locations.

        ``embeddings`` [N, D, h, w]; ``mask`` [N, 1, h, w] bool or None (all locations; an empty
        mask also means all).
        """
        gated = torch.tanh(self.attention_v(embeddings)) * torch.sigmoid(self.attention_u(embeddings))
        scores = self.attention_w(gated).float()  # [N, K, h, w]
        if mask is not None and bool(mask.any()):
            scores = scores.masked_fill(~mask, float("-inf"))
        n, k, h, w = scores.shape
        flat = torch.softmax(scores.transpose(0, 1).reshape(k, -1), dim=1)
        return flat.reshape(k, n, h, w).transpose(0, 1)

    def forward(self, slices: torch.Tensor, precomputed: bool = False,
                region: torch.Tensor | None = None) -> InsightOutput:
        if slices.ndim != 4:
            raise ValueError(f"expected slices [N, C, H, W], got shape {tuple(slices.shape)}")
        if precomputed and not self.supports_precompute:
            raise ValueError(f"encoder {self.config.encoder!r} has no precomputable part")
        encoded = self.encoder(slices, precomputed=True) if precomputed else self.encoder(slices)
        embeddings = self.embed(encoded)
        mask = region_cells(region, self.stride, embeddings.shape[-2:]) if region is not None else None
        weights = self.attention(embeddings, mask)
        bag = torch.einsum("nkhw,ndhw->kd", weights, embeddings.float())  # [K, D]
        logits = (bag * self.classifier_weight.float()).sum(dim=1) + self.classifier_bias.float()
        probability = torch.sigmoid(logits)
        with torch.no_grad():
            peak = weights.amax(dim=(0, 2, 3), keepdim=True).clamp_min(torch.finfo(torch.float32).tiny)
            heatmap = probability.detach().view(1, -1, 1, 1) * weights / peak
        return InsightOutput(probability, heatmap, logits.view(1, -1, 1, 1), None)
