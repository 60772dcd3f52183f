"""Classification (scan-level) and localization (voxel- and embolus-level) metrics.

Arrays follow the library's conventions: per-scan vectors are [N]; heatmaps and masks are
numpy arrays indexed [z, y, x].
"""

from insight.metrics.classification import (
    auroc,
    bootstrap_auroc_ci,
    expected_calibration_error,
    sensitivity_specificity,
)
from insight.metrics.localization import (
    DEFAULT_DICE_THRESHOLDS,
    RegionMatch,
    best_threshold_dice,
    dice,
    embolus_hits,
    iou,
    label_components,
    match_regions,
    otsu_mask,
    pointing_game,
)

__all__ = [
    "auroc",
    "bootstrap_auroc_ci",
    "sensitivity_specificity",
    "expected_calibration_error",
    "DEFAULT_DICE_THRESHOLDS",
    "RegionMatch",
    "dice",
    "iou",
    "otsu_mask",
    "best_threshold_dice",
    "pointing_game",
    "label_components",
    "match_regions",
    "embolus_hits",
]
