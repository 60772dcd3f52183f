"""From INSIGHT heatmaps to voxel pseudo-masks ("label up"), and scoring masks against truth.

Public API (imported lazily, so ``insight.pseudo_masks.config`` stays cheap to import)::

    from insight.pseudo_masks import PseudoMaskConfig, PseudoMaskGenerator
    generator = PseudoMaskGenerator(PseudoMaskConfig(), heatmap_source=None)
    result = generator.generate(image, heatmap, scan_label=1)   # result.mask: uint8 on image's grid
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "PseudoMaskConfig": "config", "THRESHOLD_MODES": "config",
    "PseudoMaskGenerator": "generator", "PseudoMaskResult": "generator", "HeatmapSource": "generator",
    "PSEUDO_LABEL": "generator", "predictor_heatmap_source": "generator",
    "MaskScore": "measure", "score_mask": "measure", "summarize_scores": "measure", "truth_mask_path": "measure",
    "read_truth_mask": "measure",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
