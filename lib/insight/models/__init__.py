"""INSIGHT networks: slice encoders, detection/context modules, pooling, losses and checkpoints."""

from insight.models.insight_model import InsightModel, InsightOutput
from insight.models.losses import InsightLoss
from insight.models.pooling import MaxPool, SmoothMaxPool, otsu_threshold, zero_below_otsu

__all__ = ["InsightModel", "InsightOutput", "InsightLoss", "SmoothMaxPool", "MaxPool", "otsu_threshold", "zero_below_otsu"]
