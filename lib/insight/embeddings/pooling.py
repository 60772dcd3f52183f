"""Encoder feature maps -> one unit-length study vector (mean and max per channel)."""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["EMBEDDING_KIND", "pooled_embedding", "embedding_dims"]

#: Names the embedding definition in files that store embeddings (index sidecars, OOD calibrations):
#: a file written for another definition is not comparable.
EMBEDDING_KIND = "encoder_mean_max_l2"


def pooled_embedding(features: torch.Tensor) -> np.ndarray:
    """Encoder features [N, C, h, w] -> L2-normalised float32 [2C]: channel means, then channel maxima.

    Raises:
        ValueError: ``features`` is not 4-D or holds no location.
    """
    if features.ndim != 4:
        raise ValueError(f"expected encoder features [N, C, h, w], got shape {tuple(features.shape)}")
    if features.shape[0] * features.shape[2] * features.shape[3] == 0:
        raise ValueError(f"encoder features {tuple(features.shape)} hold no location to pool")
    values = features.detach()
    if values.dtype != torch.float32:
        values = values.float()
    # reduced where the features are (GPU or CPU): only the [2C] result is copied
    vector = torch.cat([values.mean(dim=(0, 2, 3)), values.amax(dim=(0, 2, 3))]).cpu().numpy().astype(np.float32)
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm > 0 else vector


def embedding_dims(model: torch.nn.Module) -> int:
    """Length of the embeddings of ``model`` (an InsightModel): 2 x its encoder's output channels."""
    encoder = getattr(model, "encoder", None)
    channels = getattr(encoder, "out_channels", None)
    if not isinstance(channels, int):
        raise ValueError(f"{type(model).__name__} has no encoder with an integer out_channels")
    return 2 * channels
