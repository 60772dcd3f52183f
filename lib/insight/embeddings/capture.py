"""Capture a model's encoder output during a forward pass that runs anyway (one pass, two results)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from insight.embeddings.pooling import pooled_embedding

__all__ = ["EncoderFeatureCapture"]


class EncoderFeatureCapture:
    """Context manager: pools the output of ``model.encoder`` of the forward passes run inside it.

    Usage::

        with EncoderFeatureCapture(predictor.model) as capture:
            result = predictor.predict_file(path)
        vector = capture.embedding()    # [2C], see insight.embeddings

    Raises:
        ValueError: the model has no ``encoder`` module.
    """

    def __init__(self, model: torch.nn.Module) -> None:
        encoder = getattr(model, "encoder", None)
        if not isinstance(encoder, torch.nn.Module):
            raise ValueError(f"{type(model).__name__} has no encoder module to take features from")
        self._encoder = encoder
        self._handle: Any = None
        self._embedding: np.ndarray | None = None

    def _hook(self, _module: torch.nn.Module, _inputs: Any, output: Any) -> None:
        tensor = output[0] if isinstance(output, (tuple, list)) else output
        self._embedding = pooled_embedding(tensor)  # pooled on the features' device: no feature-map copy

    def __enter__(self) -> "EncoderFeatureCapture":
        self._embedding = None
        self._handle = self._encoder.register_forward_hook(self._hook)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def embedding(self) -> np.ndarray:
        """The pooled embedding [2C] of the last forward pass (RuntimeError when none ran)."""
        if self._embedding is None:
            raise RuntimeError("no encoder features captured: no forward pass ran inside the capture")
        return self._embedding
