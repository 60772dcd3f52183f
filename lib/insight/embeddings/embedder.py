"""Embed whole studies with a checkpoint's encoder, without running the rest of the model or QA."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from insight.config import InsightConfig
from insight.devices import autocast_for, resolve_device
from insight.embeddings.pooling import embedding_dims, pooled_embedding
from insight.io.image_io import case_name, read_image
from insight.models.checkpoint import load_checkpoint
from insight.models.insight_model import InsightModel
from insight.preprocessing import slice_stack, to_model_grid, window_hu

__all__ = ["CaseEmbedding", "CaseEmbedder"]

logger = logging.getLogger(__name__)


@dataclass
class CaseEmbedding:
    """One study's embedding.

    Attributes:
        name: the case name (file name without extension, or the DICOM folder's name).
        vector: float32 [dims], unit length (see :mod:`insight.embeddings`).
        model_version: the checkpoint version that made it; vectors of two versions are not comparable.
        source: the input path, when read from disk.
        seconds: time spent (read, preprocessing and encoder).
    """

    name: str
    vector: np.ndarray
    model_version: str
    source: str | None = None
    seconds: float = field(default=0.0, compare=False)


class CaseEmbedder:
    """A checkpoint's encoder, loaded once, embedding one study at a time.

    The input goes through the model's own preprocessing (orientation, resampling, body crop, HU
    window, 2.5D slice stacks), so an embedding equals the one captured while
    :class:`insight.inference.InsightPredictor` predicts the same volume.

    Args:
        model: an INSIGHT model (only its encoder runs).
        config: the checkpoint's configuration (its preprocessing is used).
        model_version: the checkpoint's version string, stored with every embedding.
        device: where the encoder runs.
    """

    def __init__(self, model: InsightModel, config: InsightConfig, model_version: str,
                 device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.config = config
        self.model_version = model_version

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, device: str | None = "auto") -> "CaseEmbedder":
        """Load ``path`` (ModelError when it is missing or not an insight checkpoint)."""
        dev = resolve_device(device)
        loaded = load_checkpoint(path, dev)
        return cls(loaded.model, loaded.config, loaded.model_version, dev)

    @property
    def dims(self) -> int:
        """Length of this model's embeddings (2 x encoder channels)."""
        return embedding_dims(self.model)

    def embed_file(self, path: str | os.PathLike) -> CaseEmbedding:
        """Read a NIfTI/NRRD file or DICOM series folder and embed it (InputError when unreadable)."""
        start = time.perf_counter()
        image = read_image(path)
        case = self.embed_image(image, name=case_name(path))
        case.source = str(Path(path))
        case.seconds = time.perf_counter() - start
        return case

    def embed_image(self, image: sitk.Image, name: str = "volume") -> CaseEmbedding:
        """Embed one volume (HU)."""
        start = time.perf_counter()
        preprocess = self.config.preprocess
        grid = to_model_grid(image, preprocess)
        windowed = window_hu(sitk.GetArrayViewFromImage(grid), preprocess.hu_window)
        slices = slice_stack(torch.from_numpy(windowed), preprocess.slice_context)
        with torch.inference_mode(), autocast_for(self.device):
            features = self.model.encoder(slices.to(self.device, non_blocking=True))
        vector = pooled_embedding(features)
        seconds = time.perf_counter() - start
        logger.debug("%s: embedded %s slices into %d dims in %.2f s", name, slices.shape[0], vector.size, seconds)
        return CaseEmbedding(name=name, vector=vector, model_version=self.model_version, seconds=seconds)
