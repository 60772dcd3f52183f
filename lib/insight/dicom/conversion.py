"""Turn the sorted slices of a series into one int16 HU volume with exact geometry.

Pixels are decoded per file by SimpleITK (GDCM: every transfer syntax it knows, rescale slope
and intercept applied), so one unreadable file drops one slice instead of the series. Geometry
comes from :class:`~insight.dicom.geometry.SeriesGeometry` (the DICOM headers), never from the
reader's guess: origin ``p_0``, direction ``(r, c, n)``, spacing (PixelSpacing, ``dz``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from insight.dicom.geometry import SeriesGeometry
from insight.dicom.records import DicomHeader, Note

__all__ = ["SliceReadError", "Volume", "read_slice_hu", "build_volume"]

logger = logging.getLogger(__name__)

#: HU written where a sheared (tilted) slice has no data after resampling: air.
FILL_HU = -1024
_INT16 = np.iinfo(np.int16)


class SliceReadError(Exception):
    """One file's pixel data cannot be decoded; ``note`` is the skip reason for that file."""

    def __init__(self, note: Note):
        super().__init__(note.message)
        self.note = note


@dataclass
class Volume:
    """The converted volume and what conversion did to get it.

    Attributes:
        image: int16 HU, axes (x along r, y along c, z along n), LPS geometry.
        interpolated_slices: indices z of slices computed by interpolation (none acquired there).
    """

    image: sitk.Image
    interpolated_slices: list[int] = field(default_factory=list)


def read_slice_hu(header: DicomHeader) -> np.ndarray:
    """Decode one slice to HU (rescale applied), rounded to int16; shape (rows, columns).

    Raises:
        SliceReadError: the pixel data is missing, truncated or in a format GDCM cannot decode,
            or its size disagrees with the header's Rows/Columns.
    """
    reader = sitk.ImageFileReader()
    reader.SetImageIO("GDCMImageIO")
    reader.SetFileName(str(header.path))
    previous = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        image = reader.Execute()
    except RuntimeError as err:
        raise SliceReadError(Note("unreadable_pixels", "pixel data cannot be decoded (missing, truncated or "
                                                       "unsupported compression)")) from err
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(previous)
    values = sitk.GetArrayFromImage(image)
    if values.ndim == 3:
        if values.shape[0] != 1:
            raise SliceReadError(Note("multiframe", f"file holds {values.shape[0]} frames, expected 1"))
        values = values[0]
    if values.shape != (header.rows, header.columns):
        raise SliceReadError(Note("inconsistent_size", f"pixel data is {values.shape[1]}x{values.shape[0]}, "
                                                       f"header says {header.columns}x{header.rows}"))
    return np.clip(np.rint(values), _INT16.min, _INT16.max).astype(np.int16)


def build_volume(geometry: SeriesGeometry, slices: list[np.ndarray]) -> Volume:
    """Stack (or resample) the slices, in ``geometry.files`` order, onto the target grid.

    Args:
        geometry: the series geometry (see :mod:`insight.dicom.geometry`).
        slices: int16 HU arrays (rows, columns), one per file of ``geometry.files``.

    Returns:
        A :class:`Volume`; without gaps, irregular spacing or tilt the voxels are the slices
        themselves (no interpolation). Otherwise each target slice is interpolated linearly between
        the two acquired slices around it along the normal, after shifting those slices in-plane by
        their offset (tilt); the indices of interpolated slices are reported.
    """
    if len(slices) != len(geometry.files):
        raise ValueError(f"{len(slices)} slices for {len(geometry.files)} files")
    interpolated: list[int] = []
    if not geometry.needs_resampling:
        stack = np.stack(slices)
    else:
        stack, interpolated = _resample(geometry, slices)
    image = sitk.GetImageFromArray(stack)
    image.SetSpacing(geometry.spacing)
    image.SetOrigin(tuple(float(v) for v in geometry.origin))
    image.SetDirection(geometry.direction)
    return Volume(image=image, interpolated_slices=interpolated)


def _resample(geometry: SeriesGeometry, slices: list[np.ndarray]) -> tuple[np.ndarray, list[int]]:
    spacing_x, spacing_y = geometry.pixel_spacing_xy
    shifted_cache: dict[int, np.ndarray] = {}

    def aligned(k: int) -> np.ndarray:
        """Slice k moved onto the target in-plane grid (float32)."""
        if k not in shifted_cache:
            u, v = geometry.inplane_offsets[k]
            data = slices[k].astype(np.float32)
            if abs(u) > 1e-6 or abs(v) > 1e-6:
                data = ndimage.shift(data, (v / spacing_y, u / spacing_x), order=1, mode="constant", cval=FILL_HU)
            if len(shifted_cache) >= 2:  # walking forward: only the two slices around z are needed
                del shifted_cache[min(shifted_cache)]
            shifted_cache[k] = data
        return shifted_cache[k]

    acquired = geometry.positions
    tolerance = 1e-3 * geometry.slice_spacing
    out = np.empty((geometry.n_target_slices, slices[0].shape[0], slices[0].shape[1]), dtype=np.int16)
    interpolated = []
    for t, z in enumerate(geometry.target_positions):
        k = int(np.clip(np.searchsorted(acquired, z, side="right") - 1, 0, len(acquired) - 2))
        weight = float(np.clip((z - acquired[k]) / (acquired[k + 1] - acquired[k]), 0.0, 1.0))
        if weight <= tolerance / (acquired[k + 1] - acquired[k]):
            values = aligned(k)
        elif weight >= 1.0 - tolerance / (acquired[k + 1] - acquired[k]):
            values = aligned(k + 1)
        else:
            values = (1.0 - weight) * aligned(k) + weight * aligned(k + 1)
            interpolated.append(t)
        out[t] = np.clip(np.rint(values), _INT16.min, _INT16.max).astype(np.int16)
    return out, interpolated
