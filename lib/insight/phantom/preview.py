"""PNG montage of a phantom (or any CT volume): axial slices through the clots and one coronal slice.

Slices are shown in a CTPA window (W 700, L 100 HU) in radiological convention (patient's left on the
image right, anterior up; coronal: superior up), with the clot outline drawn in red.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Union

import numpy as np

from insight.io.atomic import atomic_output

__all__ = ["render_preview", "CTPA_WINDOW"]

logger = logging.getLogger(__name__)

#: (width, level) in HU.
CTPA_WINDOW = (700.0, 100.0)

PathLike = Union[str, os.PathLike]


def _load(case_or_paths, clot_mask_path):
    """(image [z, y, x] HU, clot mask or None, artery mask or None, spacing xyz, title)."""
    from insight.phantom.generator import PhantomCase

    if isinstance(case_or_paths, PhantomCase):
        c = case_or_paths
        title = f"{c.name}  pe={c.pe}  emboli={c.metadata.get('n_emboli', '?')}"
        return c.image_hu, c.clot_mask, c.artery_mask, c.spacing_xyz, title
    import SimpleITK as sitk

    if isinstance(case_or_paths, (tuple, list)):
        if len(case_or_paths) not in (1, 2):
            raise ValueError("give an image path, or (image path, clot mask path)")
        image_path = case_or_paths[0]
        clot_mask_path = case_or_paths[1] if len(case_or_paths) == 2 else clot_mask_path
    else:
        image_path = case_or_paths
    img = sitk.ReadImage(str(image_path))
    image = sitk.GetArrayFromImage(img)
    clot = None
    if clot_mask_path is not None:
        m = sitk.ReadImage(str(clot_mask_path))
        clot = sitk.GetArrayFromImage(m)
        if clot.shape != image.shape:
            raise ValueError(f"clot mask shape {clot.shape} differs from image shape {image.shape}")
    return image, clot, None, tuple(img.GetSpacing()), Path(str(image_path)).name


def _pick_slices(image, clot, artery, slice_mm: float, n_axial: int = 3) -> tuple[list[int], int]:
    """Axial slice indices (through clots, else through the hila) and a coronal row index."""
    nz, ny, _ = image.shape
    gap = max(2, int(round(12.0 / slice_mm)))  # picks at least 12 mm apart
    if clot is not None and clot.any():
        per_z = clot.reshape(nz, -1).sum(axis=1).astype(float)
        chosen: list[int] = []
        for _ in range(n_axial):
            if per_z.max() <= 0:
                break
            z = int(np.argmax(per_z))
            chosen.append(z)
            per_z[max(0, z - gap):z + gap + 1] = 0
        ys = np.nonzero(clot[chosen[0]])[0]
        y_cor = int(np.median(ys))
        if len(chosen) < n_axial and artery is not None and artery.any():  # add slices through the hila
            per_a = artery.reshape(nz, -1).sum(axis=1).astype(float)
            for z in chosen:
                per_a[max(0, z - gap):z + gap + 1] = 0
            while len(chosen) < n_axial and per_a.max() > 0:
                z = int(np.argmax(per_a))
                chosen.append(z)
                per_a[max(0, z - gap):z + gap + 1] = 0
    elif artery is not None and artery.any():
        per_z = artery.reshape(nz, -1).sum(axis=1).astype(float)
        zc = int(np.argmax(per_z))
        step = max(1, int(round(25.0 / slice_mm)))
        chosen = [min(nz - 1, zc + step), zc, max(0, zc - step)]
        y_cor = int(np.median(np.nonzero(artery[zc])[0]))
    else:
        chosen = [int(nz * f) for f in (0.7, 0.55, 0.4)]
        y_cor = ny // 2
    chosen = sorted(set(chosen), reverse=True)  # superior first
    return chosen, y_cor


def render_preview(case_or_paths, png_path: PathLike, clot_mask_path: PathLike | None = None,
                   window: tuple[float, float] = CTPA_WINDOW) -> Path:
    """Write a PNG montage of a few axial slices and one coronal slice, clot outlined in red.

    Args:
        case_or_paths: a :class:`~insight.phantom.generator.PhantomCase`, an image path, or a tuple
            (image path, clot mask path).
        png_path: output PNG, written atomically.
        clot_mask_path: optional clot mask to outline when an image path is given.
        window: (width, level) in HU.
    Returns:
        The PNG path.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    image, clot, artery, spacing, title = _load(case_or_paths, clot_mask_path)
    sx, sy, sz = spacing
    axial, y_cor = _pick_slices(image, clot, artery, sz)
    vmin, vmax = window[1] - window[0] / 2, window[1] + window[0] / 2
    n = len(axial) + 1
    fig = Figure(figsize=(4.2 * n, 4.6), dpi=110)
    axes = fig.subplots(1, n)
    for ax, z in zip(axes, axial):
        ax.imshow(image[z], cmap="gray", vmin=vmin, vmax=vmax, aspect=sy / sx, interpolation="nearest")
        if clot is not None and clot[z].any():
            ax.contour(clot[z], levels=[0.5], colors="red", linewidths=0.9)
        ax.set_title(f"axial z={z}", fontsize=9)
    ax = axes[-1]
    cor = image[:, y_cor, :]
    ax.imshow(cor, cmap="gray", vmin=vmin, vmax=vmax, aspect=sz / sx, origin="lower", interpolation="nearest")
    if clot is not None and clot[:, y_cor, :].any():
        ax.contour(clot[:, y_cor, :], levels=[0.5], colors="red", linewidths=0.9, origin="lower")
    for z in axial:
        ax.axhline(z, color="yellow", lw=0.4, alpha=0.6)
    ax.set_title(f"coronal y={y_cor}", fontsize=9)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"{title}   (W {window[0]:.0f} / L {window[1]:.0f})", fontsize=10)
    fig.tight_layout()
    out = Path(png_path)
    with atomic_output(out) as tmp:
        fig.savefig(tmp, format="png")
    return out
