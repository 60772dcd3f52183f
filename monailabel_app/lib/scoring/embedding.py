"""Per-scan embeddings from the INSIGHT model, captured during a prediction (active learning's ``diversity``).

The computation lives in the library (:mod:`insight.embeddings`), so the diversity score, similar-case
retrieval and out-of-distribution QA share one definition: the encoder's feature maps [N, C, h, w]
pooled to the channel-wise mean and max over all slices and positions ([2C]), L2-normalised.
:class:`EncoderFeatureCapture` takes them with a forward hook while
:class:`insight.inference.InsightPredictor` runs, so one pass gives the prediction and the embedding.
"""

from __future__ import annotations

from insight.embeddings import EncoderFeatureCapture, pooled_embedding

__all__ = ["EncoderFeatureCapture", "pooled_embedding"]
