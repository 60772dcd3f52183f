"""The one preprocessing path shared by training and inference."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from insight.config import PreprocessConfig
from insight.preprocessing.intensity import window_hu
from insight.preprocessing.spatial import to_model_grid

__all__ = ["ModelInput", "prepare_volume"]


@dataclass
class ModelInput:
    """A volume on the model grid.

    Attributes:
        grid: the resampled, oriented image (float32 HU) whose geometry defines the model grid.
        windowed: [Z, Y, X] float32 in [0, 1], the HU-windowed voxels of ``grid``.
    """

    grid: sitk.Image
    windowed: np.ndarray


def prepare_volume(image: sitk.Image, config: PreprocessConfig) -> ModelInput:
    """Orient, resample and window ``image`` (any HU volume) for the model."""
    grid = to_model_grid(image, config)
    windowed = window_hu(sitk.GetArrayViewFromImage(grid), config.hu_window)
    return ModelInput(grid=grid, windowed=windowed)
