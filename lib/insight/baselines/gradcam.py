"""Grad-CAM (Selvaraju et al., ICCV 2017) for :class:`GlobalPoolCNN`, with its cost measured.

For class k with logit y_k and target-layer activations A [N, W, h, w] (all slices of a scan):

    alpha_kc = mean over (n, i, j) of dy_k / dA_c[n, i, j]      (one backward pass)
    cam_k    = ReLU(sum_c alpha_kc A_c)                          [N, h, w]

The map is zeroed outside the search region's cells, divided by its maximum and multiplied by the
scan probability p_k (so a scan called negative gives a cool map, as an attention or INSIGHT
heatmap does; an all-zero map stays zero).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from insight.baselines.global_pool_cnn import GlobalPoolCNN

__all__ = ["GradCAMResult", "grad_cam", "upsample_to_input"]


@dataclass
class GradCAMResult:
    """One volume's Grad-CAM.

    Attributes:
        probability: [K] scan probabilities (float32, detached).
        heatmap: [N, K, h, w] float32 in [0, 1]: the normalized map times the probability.
        forward_s: seconds of the forward pass that keeps activations for the gradient.
        backward_s: seconds of the extra backward pass and the map (the cost Grad-CAM adds).
    """

    probability: torch.Tensor
    heatmap: torch.Tensor
    forward_s: float
    backward_s: float


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def grad_cam(model: GlobalPoolCNN, slices: torch.Tensor, region: torch.Tensor | None = None,
             autocast: torch.autocast | None = None, precomputed: bool = False) -> GradCAMResult:
    """Grad-CAM of every class for one volume.

    Args:
        model: the classifier (put it in eval mode first; its weights are not changed).
        slices: [N, C, H, W] slice stacks on the model's device.
        region: [N, H, W] bool search region, or None.
        autocast: an autocast context to run the forward pass in (e.g. bf16 on CUDA), or None.
        precomputed: ``slices`` is the encoder's parameter-free output [N, C', h, w] instead.
    """
    device = slices.device
    _sync(device)
    started = time.perf_counter()
    with torch.enable_grad():
        if autocast is not None:
            with autocast:
                features = model.feature_maps(slices, precomputed)
        else:
            features = model.feature_maps(slices, precomputed)
        if not features.requires_grad:  # frozen weights: track the activations themselves
            features = features.detach().requires_grad_(True)
        mask = model.cells(region, features)
        logits = model.classify(features, mask)
        _sync(device)
        forward_s = time.perf_counter() - started
        started = time.perf_counter()
        maps = []
        for k in range(logits.shape[0]):
            (gradient,) = torch.autograd.grad(logits[k], features, retain_graph=k + 1 < logits.shape[0])
            alpha = gradient.float().mean(dim=(0, 2, 3))  # [W]
            maps.append(F.relu((features.detach().float() * alpha.view(1, -1, 1, 1)).sum(dim=1)))
    probability = torch.sigmoid(logits.detach().float())
    cam = torch.stack(maps, dim=1)  # [N, K, h, w]
    if mask is not None and bool(mask.any()):
        cam = cam * mask
    peak = cam.amax(dim=(0, 2, 3), keepdim=True)
    cam = torch.where(peak > 0, cam / peak.clamp_min(torch.finfo(torch.float32).tiny), torch.zeros_like(cam))
    heatmap = cam * probability.view(1, -1, 1, 1)
    _sync(device)
    backward_s = time.perf_counter() - started
    return GradCAMResult(probability, heatmap, forward_s, backward_s)


def upsample_to_input(heatmap: torch.Tensor, stride: int, size_hw: tuple[int, int]) -> torch.Tensor:
    """Feature-resolution maps [N, h, w] -> the input's in-plane grid [N, H, W].

    Bilinear with ``align_corners=False``, so cell i covers input pixels [i * stride, (i + 1) * stride),
    cropped to ``size_hw`` (the encoders round up).
    """
    if heatmap.ndim != 3:
        raise ValueError(f"expected maps [N, h, w], got shape {tuple(heatmap.shape)}")
    up = F.interpolate(heatmap[:, None].float(), scale_factor=stride, mode="bilinear", align_corners=False)
    return up[:, 0, : size_hw[0], : size_hw[1]]
