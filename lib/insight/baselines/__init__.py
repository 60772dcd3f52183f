"""Baselines INSIGHT is measured against, on the same encoders and the same training loop.

- :class:`GatedAttentionMIL`: attention MIL (ABMIL, gated attention) over region features; its
  attention map is its heatmap.
- :class:`GlobalPoolCNN` with :func:`grad_cam`: a plain CNN classifier with global average pooling,
  explained post hoc by Grad-CAM (one extra backward pass per volume).
- Max-pooling MIL needs no class here: it is :class:`insight.models.InsightModel` with
  ``use_context=False`` and ``pooling="max"``.

All of them take one volume as its stack of N 2.5D slices [N, C, H, W] and return
:class:`insight.models.InsightOutput`, so :class:`BaselineTrainer` trains them with the INSIGHT
trainer's loop.
"""

from insight.baselines.attention_mil import GatedAttentionMIL
from insight.baselines.common import region_cells
from insight.baselines.global_pool_cnn import GlobalPoolCNN
from insight.baselines.gradcam import GradCAMResult, grad_cam, upsample_to_input
from insight.baselines.trainer import (BASELINE_KINDS, BaselineTrainer, LoadedBaseline, build_baseline,
                                      load_baseline_checkpoint)

__all__ = ["GatedAttentionMIL", "GlobalPoolCNN", "GradCAMResult", "grad_cam", "upsample_to_input", "region_cells",
           "BaselineTrainer", "BASELINE_KINDS", "LoadedBaseline", "build_baseline", "load_baseline_checkpoint"]
