"""The one preprocessing path shared by training and inference."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from insight.config import PreprocessConfig
from insight.preprocessing.intensity import window_hu
from insight.preprocessing.search_region import (body_mask, chest_search_region, filling_defect_search_region,
                                                 vessel_search_region)
from insight.preprocessing.spatial import to_model_grid

__all__ = ["ModelInput", "prepare_volume"]


@dataclass
class ModelInput:
    """A volume on the model grid.

    Attributes:
        grid: the resampled, oriented image (float32 HU) whose geometry defines the model grid.
        windowed: [Z, Y, X] float32 in [0, 1], the HU-windowed voxels of ``grid``.
        region: [Z, Y, X] bool, where the model may place heatmap mass (``config.search_region``:
            the chest cavity, the body, or everywhere).
    """

    grid: sitk.Image
    windowed: np.ndarray
    region: np.ndarray


def prepare_volume(image: sitk.Image, config: PreprocessConfig) -> ModelInput:
    """Orient, resample and window ``image`` (any HU volume) for the model."""
    grid = to_model_grid(image, config)
    hu = sitk.GetArrayViewFromImage(grid)
    windowed = window_hu(hu, config.hu_window)
    return ModelInput(grid=grid, windowed=windowed, region=search_region(hu, grid.GetSpacing()[::-1], config))


def search_region(volume_hu: np.ndarray, spacing_zyx: tuple[float, float, float],
                  config: PreprocessConfig) -> np.ndarray:
    """[Z, Y, X] bool mask of where heatmap mass may lie (see :mod:`insight.preprocessing.search_region`)."""
    if config.search_region == "filling_defects":
        return filling_defect_search_region(volume_hu, spacing_zyx, config.search_margin_mm)
    if config.search_region == "vessels":
        return vessel_search_region(volume_hu, spacing_zyx, config.search_margin_mm)
    if config.search_region == "chest":
        return chest_search_region(volume_hu, spacing_zyx, config.search_margin_mm)
    if config.search_region == "body":
        return body_mask(volume_hu)
    return np.ones(volume_hu.shape, dtype=bool)
