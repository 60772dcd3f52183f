"""From a CT volume on any grid to the model's input, and heatmaps back to the input grid."""

from insight.preprocessing.intensity import slice_stack, window_hu
from insight.preprocessing.pipeline import ModelInput, prepare_volume
from insight.preprocessing.spatial import same_grid, to_model_grid, to_reference_grid

__all__ = ["slice_stack", "window_hu", "same_grid", "to_model_grid", "to_reference_grid", "ModelInput", "prepare_volume"]
