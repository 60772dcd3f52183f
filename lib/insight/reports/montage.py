"""A PNG montage of the key slices: CT, heatmap overlay, finding outlines and numbers.

Key slices (:func:`select_key_slices`) are the axial slices through the peak voxel of the top
findings, in rank order, then the slices with the highest heatmap values, up to ``max_tiles``.
Each tile shows one slice of the CT (window centre 100 HU, width 700 HU, a common window for
reading emboli in contrast-filled arteries), the heatmap in colour where it is at least
:data:`OVERLAY_MIN`, the outline of every finding region crossing the slice and its number.

Tiles are shown in the radiological convention when the slices are axial-like (patient's left on
the image's right, anterior up): rows and columns are flipped or swapped according to the image
direction; other orientations are shown in stored order. Non-square pixels keep their aspect.

Rendering uses matplotlib's Agg canvas directly (no pyplot state, safe in servers). The PNG is
``cols * TILE_PX`` wide and ``HEADER_PX + rows * TILE_PX`` high (see :func:`montage_pixel_size`).
"""

from __future__ import annotations

import io
import logging
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import SimpleITK as sitk
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from insight.inference.findings import Finding

__all__ = ["KeySlice", "select_key_slices", "render_montage", "montage_pixel_size", "TILE_PX", "HEADER_PX",
           "MAX_COLUMNS"]

logger = logging.getLogger(__name__)

#: Side of one tile, pixels.
TILE_PX = 400
#: Height of the title band above the tiles, pixels.
HEADER_PX = 64
#: Tiles per row.
MAX_COLUMNS = 3
#: Display window for the CT, HU (centre, width).
CT_WINDOW_HU = (100.0, 700.0)
#: Heatmap values below this are not drawn.
OVERLAY_MIN = 0.1
_DPI = 100


@dataclass(frozen=True)
class KeySlice:
    """One tile of the montage.

    Attributes:
        index: slice index k on the input grid (numpy axis 0 of the [z, y, x] view).
        reason: ``"finding"`` (through a finding's peak) or ``"hottest"`` (high heatmap values).
        findings: labels of the findings whose region crosses this slice.
        heatmap_max: highest heatmap value on the slice.
    """

    index: int
    reason: str
    findings: tuple[int, ...]
    heatmap_max: float

    def to_dict(self) -> dict:
        return {"slice_index": self.index, "reason": self.reason, "findings": list(self.findings),
                "heatmap_max": round(self.heatmap_max, 4)}


def select_key_slices(heatmap: sitk.Image, findings: Sequence[Finding], label_map: sitk.Image,
                      max_tiles: int = 6) -> list[KeySlice]:
    """Slices through the top findings' peaks (rank order), then the hottest slices, ``max_tiles`` at most.

    Args:
        heatmap: the prediction's heatmap (input grid).
        findings: its findings, rank order (label 1 first).
        label_map: the findings' regions (see :func:`insight.reports.regions.findings_label_map`).
        max_tiles: at most this many slices (>= 1).
    """
    if max_tiles < 1:
        raise ValueError(f"max_tiles must be >= 1, got {max_tiles}")
    heat = sitk.GetArrayViewFromImage(heatmap)
    labels = sitk.GetArrayViewFromImage(label_map)
    slice_max = heat.reshape(heat.shape[0], -1).max(axis=1)
    chosen: list[tuple[int, str]] = []
    for finding in sorted(findings, key=lambda f: f.label):
        k = int(finding.peak_ijk[2])
        if len(chosen) < max_tiles and k not in (c[0] for c in chosen):
            chosen.append((k, "finding"))
    for k in np.argsort(-slice_max, kind="stable"):
        if len(chosen) >= max_tiles:
            break
        if int(k) not in (c[0] for c in chosen):
            chosen.append((int(k), "hottest"))
    return [KeySlice(index=k, reason=reason, findings=tuple(int(v) for v in np.unique(labels[k]) if v),
                     heatmap_max=float(slice_max[k])) for k, reason in chosen]


def montage_pixel_size(n_tiles: int) -> tuple[int, int]:
    """(width, height) in pixels of the montage PNG for ``n_tiles`` tiles."""
    columns = min(MAX_COLUMNS, max(1, n_tiles))
    rows = max(1, math.ceil(n_tiles / columns))
    return columns * TILE_PX, HEADER_PX + rows * TILE_PX


def render_montage(image: sitk.Image, heatmap: sitk.Image, label_map: sitk.Image,
                   key_slices: Sequence[KeySlice], title_lines: Sequence[str]) -> bytes:
    """Render the montage; returns PNG bytes of size :func:`montage_pixel_size`.

    Args:
        image: the CT in HU; ``heatmap`` and ``label_map`` have its grid.
        key_slices: the tiles, in display order (at least one).
        title_lines: one or two lines of text for the title band.
    """
    if not key_slices:
        raise ValueError("render_montage needs at least one key slice")
    if image.GetSize() != heatmap.GetSize() or image.GetSize() != label_map.GetSize():
        raise ValueError(f"image {image.GetSize()}, heatmap {heatmap.GetSize()} and label map "
                         f"{label_map.GetSize()} must share one grid")
    width, height = montage_pixel_size(len(key_slices))
    figure = Figure(figsize=(width / _DPI, height / _DPI), dpi=_DPI, facecolor="black")
    FigureCanvasAgg(figure)
    figure.text(0.01, 1 - 8 / height, "\n".join(title_lines[:2]), color="white", fontsize=10, va="top",
                ha="left", family="monospace")
    ct = sitk.GetArrayViewFromImage(image)
    heat = sitk.GetArrayViewFromImage(heatmap)
    labels = sitk.GetArrayViewFromImage(label_map)
    transform, aspect = _display_transform(image)
    centre, window = CT_WINDOW_HU
    columns = min(MAX_COLUMNS, len(key_slices))
    for n, key in enumerate(key_slices):
        row, column = divmod(n, columns)
        left = column * TILE_PX / width
        bottom = 1 - (HEADER_PX + (row + 1) * TILE_PX) / height
        axes = figure.add_axes((left + 2 / width, bottom + 2 / height, (TILE_PX - 4) / width,
                                (TILE_PX - 24) / height))
        axes.set_facecolor("black")
        axes.set_axis_off()
        axes.imshow(transform(ct[key.index]), cmap="gray", vmin=centre - window / 2, vmax=centre + window / 2,
                    aspect=aspect, interpolation="bilinear")
        overlay = np.ma.masked_less(transform(heat[key.index]).astype(np.float32), OVERLAY_MIN)
        axes.imshow(overlay, cmap="inferno", vmin=0.0, vmax=1.0, alpha=0.55, aspect=aspect,
                    interpolation="nearest")
        tile_labels = transform(labels[key.index])
        for label in key.findings:
            region = tile_labels == label
            axes.contour(region.astype(np.float32), levels=[0.5], colors="cyan", linewidths=1.2)
            rows_at, cols_at = np.nonzero(region)
            axes.text(float(cols_at.max()) + 4, float(rows_at.min()), str(label), color="cyan", fontsize=11,
                      fontweight="bold", va="bottom", ha="left")
        caption = f"slice {key.index}  max {key.heatmap_max:.2f}"
        caption += f"  findings {', '.join(map(str, key.findings))}" if key.findings else f"  ({key.reason})"
        figure.text(left + 6 / width, bottom + (TILE_PX - 6) / height, caption, color="white", fontsize=9,
                    va="top", ha="left")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=_DPI, facecolor="black")
    return buffer.getvalue()


def _display_transform(image: sitk.Image):
    """A function [y, x] slice -> display array, and the pixel aspect (height/width) for ``imshow``.

    For axial-like slices (row direction mostly along L-R or A-P, column direction along the
    other) the slice is transposed and flipped so that display columns run toward the patient's
    left (+x in LPS) and display rows toward posterior (+y).
    """
    direction = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)
    row_dir, col_dir = direction[:, 0], direction[:, 1]  # LPS directions of index i (x) and j (y)
    spacing_x, spacing_y = image.GetSpacing()[:2]
    row_axis, col_axis = int(np.argmax(np.abs(row_dir))), int(np.argmax(np.abs(col_dir)))
    if {row_axis, col_axis} != {0, 1}:
        return (lambda a: np.asarray(a)), spacing_y / spacing_x
    swap = row_axis == 1  # index i runs along A-P: swap display axes
    flip_i = np.sign(row_dir[row_axis]) < 0
    flip_j = np.sign(col_dir[col_axis]) < 0

    def transform(array: np.ndarray) -> np.ndarray:
        out = np.asarray(array)
        if flip_i:
            out = out[:, ::-1]
        if flip_j:
            out = out[::-1, :]
        return out.T if swap else out

    aspect = (spacing_x / spacing_y) if swap else (spacing_y / spacing_x)
    return transform, aspect
