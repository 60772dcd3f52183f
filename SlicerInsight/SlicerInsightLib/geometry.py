"""Geometry between the server's files and Slicer's world: IJK-to-LPS / IJK-to-RAS matrices.

The server (ITK, DICOM) speaks **LPS** patient coordinates (+x left, +y posterior, +z superior,
mm); Slicer's world and NIfTI files speak **RAS** (+x right, +y anterior, +z superior, mm).
Between them: ``RAS = diag(-1, -1, 1) @ LPS``, for points and for matrices.

A volume's geometry is one 4x4 matrix mapping a voxel index (i, j, k, 1) (voxel centres at integer
indices) to world coordinates. :class:`VolumeGeometry` holds it in RAS and gives the LPS form,
spacing, origin and direction; it is built from a NIfTI header (:func:`nifti_geometry`), an NRRD
header (:func:`nrrd_geometry`) or ITK-style spacing/origin/direction (:func:`geometry_from_itk`).
Slicer's ``vtkMRMLVolumeNode.GetIJKToRASMatrix`` is exactly :attr:`VolumeGeometry.ijk_to_ras`.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Iterable, Optional, Sequence, Tuple, Union

import numpy as np

from .errors import InvalidInputError, MalformedAnswerError
from .nifti import NiftiHeader, parse_nifti_header, read_nifti

__all__ = [
    "LPS_TO_RAS",
    "VolumeGeometry",
    "lps_to_ras",
    "ras_to_lps",
    "flip_lps_ras_matrix",
    "geometry_from_itk",
    "nifti_geometry",
    "nrrd_geometry",
    "read_heatmap",
    "apply_matrix",
    "matrices_close",
    "voxel_corners",
    "describe",
]

logger = logging.getLogger(__name__)

#: 4x4 matrix turning LPS coordinates into RAS (and back: it is its own inverse).
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])

#: NRRD ``space`` values and the matrix from that space to RAS.
_NRRD_SPACES = {
    "right-anterior-superior": np.diag([1.0, 1.0, 1.0, 1.0]),
    "ras": np.diag([1.0, 1.0, 1.0, 1.0]),
    "left-posterior-superior": LPS_TO_RAS,
    "lps": LPS_TO_RAS,
    "left-anterior-superior": np.diag([-1.0, 1.0, 1.0, 1.0]),
    "las": np.diag([-1.0, 1.0, 1.0, 1.0]),
}
_VECTOR = re.compile(r"\(([^)]*)\)|none", re.IGNORECASE)


@dataclass
class VolumeGeometry:
    """A 3D voxel grid placed in patient space.

    Attributes:
        size_ijk: voxel counts (I, J, K); the voxel array has shape [K, J, I].
        ijk_to_ras: 4x4 matrix from voxel index (i, j, k, 1) to RAS, mm.
    """

    size_ijk: Tuple[int, int, int]
    ijk_to_ras: np.ndarray

    @property
    def ijk_to_lps(self) -> np.ndarray:
        """4x4 matrix from voxel index to LPS, mm (what ITK / SimpleITK use)."""
        return LPS_TO_RAS @ self.ijk_to_ras

    @property
    def spacing(self) -> Tuple[float, float, float]:
        """Voxel size along i, j, k, mm."""
        return tuple(float(v) for v in np.linalg.norm(self.ijk_to_ras[:3, :3], axis=0))  # type: ignore

    @property
    def origin_ras(self) -> Tuple[float, float, float]:
        """Centre of voxel (0, 0, 0) in RAS, mm."""
        return tuple(float(v) for v in self.ijk_to_ras[:3, 3])  # type: ignore[return-value]

    @property
    def origin_lps(self) -> Tuple[float, float, float]:
        """Centre of voxel (0, 0, 0) in LPS, mm (ITK's ``GetOrigin``)."""
        return tuple(float(v) for v in self.ijk_to_lps[:3, 3])  # type: ignore[return-value]

    @property
    def direction_lps(self) -> np.ndarray:
        """3x3 unit axis directions in LPS, one column per voxel axis (ITK's ``GetDirection``)."""
        linear = self.ijk_to_lps[:3, :3]
        return linear / np.linalg.norm(linear, axis=0)

    def ijk_to_ras_points(self, ijk) -> np.ndarray:
        """Voxel indices (continuous allowed), shape [N, 3] or [3] -> RAS points, mm, same shape."""
        return apply_matrix(self.ijk_to_ras, ijk)

    def ras_to_ijk_points(self, ras) -> np.ndarray:
        """RAS points, mm, shape [N, 3] or [3] -> continuous voxel indices, same shape."""
        return apply_matrix(np.linalg.inv(self.ijk_to_ras), ras)

    def same_grid(self, other: "VolumeGeometry", atol_mm: float = 1e-3) -> bool:
        """True when both have the same size and their matrices agree within ``atol_mm``."""
        return tuple(self.size_ijk) == tuple(other.size_ijk) and matrices_close(self.ijk_to_ras, other.ijk_to_ras,
                                                                                atol_mm)


def lps_to_ras(point: Sequence[float]) -> Tuple[float, float, float]:
    """One LPS point (mm) in RAS (mm)."""
    x, y, z = (float(v) for v in point)
    return -x, -y, z


def ras_to_lps(point: Sequence[float]) -> Tuple[float, float, float]:
    """One RAS point (mm) in LPS (mm)."""
    return lps_to_ras(point)


def flip_lps_ras_matrix(matrix: np.ndarray) -> np.ndarray:
    """A 4x4 IJK-to-LPS matrix as IJK-to-RAS, or the reverse (the same flip both ways)."""
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.shape != (4, 4):
        raise InvalidInputError(f"expected a 4x4 matrix, got shape {matrix.shape}")
    return LPS_TO_RAS @ matrix


def apply_matrix(matrix: np.ndarray, points) -> np.ndarray:
    """Apply a 4x4 affine matrix to points of shape [N, 3] or [3]."""
    points = np.asarray(points, dtype=np.float64)
    single = points.ndim == 1
    points2 = np.atleast_2d(points)
    if points2.shape[-1] != 3:
        raise InvalidInputError(f"points must have 3 coordinates, got shape {points.shape}")
    out = points2 @ np.asarray(matrix, dtype=np.float64)[:3, :3].T + np.asarray(matrix)[:3, 3]
    return out[0] if single else out


def matrices_close(a: np.ndarray, b: np.ndarray, atol: float = 1e-4) -> bool:
    """True when two 4x4 matrices agree entry by entry within ``atol`` (mm for the translation)."""
    return bool(np.allclose(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64), rtol=0.0, atol=atol))


def geometry_from_itk(size_ijk: Sequence[int], spacing: Sequence[float], origin_lps: Sequence[float],
                      direction_lps: Sequence[float]) -> VolumeGeometry:
    """ITK-style geometry (SimpleITK's GetSize/GetSpacing/GetOrigin/GetDirection, all LPS) -> geometry.

    Args:
        size_ijk: voxel counts (I, J, K).
        spacing: voxel size along i, j, k, mm.
        origin_lps: centre of voxel (0, 0, 0), LPS mm.
        direction_lps: 9 values, row-major 3x3, one column per voxel axis, LPS.
    """
    direction = np.asarray(direction_lps, dtype=np.float64).reshape(3, 3)
    ijk_to_lps = np.eye(4)
    ijk_to_lps[:3, :3] = direction @ np.diag([float(s) for s in spacing])
    ijk_to_lps[:3, 3] = [float(v) for v in origin_lps]
    return VolumeGeometry(tuple(int(n) for n in size_ijk), LPS_TO_RAS @ ijk_to_lps)  # type: ignore[arg-type]


def nifti_geometry(data_or_header: Union[bytes, NiftiHeader]) -> VolumeGeometry:
    """The geometry of a NIfTI-1 file (bytes of .nii / .nii.gz, or a parsed header).

    Raises:
        MalformedAnswerError: not a NIfTI-1 file.
    """
    header = data_or_header if isinstance(data_or_header, NiftiHeader) else parse_nifti_header(data_or_header)
    return VolumeGeometry(header.size_ijk, header.ijk_to_ras())


def read_heatmap(data: bytes) -> Tuple[np.ndarray, VolumeGeometry]:
    """A heatmap NIfTI from bytes: (float32 values of shape [K, J, I], its geometry).

    Raises:
        MalformedAnswerError: not a readable 3D NIfTI-1 volume.
    """
    array, header = read_nifti(data)
    return array.astype(np.float32, copy=False), VolumeGeometry(header.size_ijk, header.ijk_to_ras())


def nrrd_geometry(header: Union[str, bytes]) -> VolumeGeometry:
    """The geometry in an NRRD header (the text of a .nhdr, or the bytes of a .nrrd file).

    Reads ``dimension``, ``sizes``, ``space`` (LPS, RAS or LAS, long or short names),
    ``space directions`` and ``space origin``; only 3D scalar volumes.

    Raises:
        MalformedAnswerError: not an NRRD header, not 3D, or without a supported ``space``.
    """
    text = header.decode("latin-1") if isinstance(header, (bytes, bytearray)) else header
    lines = text.replace("\r\n", "\n").split("\n")
    if not lines or not lines[0].startswith("NRRD"):
        raise MalformedAnswerError("not an NRRD header (no NRRD magic line)")
    fields = {}
    for line in lines[1:]:
        if not line:
            break  # the header ends at the first empty line
        if line.startswith("#") or ":" not in line:
            continue
        key, _, value = line.partition(":")
        fields[key.strip().lower()] = value.lstrip("=").strip()
    try:
        sizes = [int(v) for v in fields["sizes"].split()]
    except (KeyError, ValueError) as err:
        raise MalformedAnswerError("NRRD header without valid 'sizes'") from err
    if len(sizes) != 3:
        raise MalformedAnswerError(f"only 3D scalar NRRD volumes are supported, got sizes {sizes}")
    space = fields.get("space", "").lower()
    if space not in _NRRD_SPACES:
        raise MalformedAnswerError(f"NRRD space {space!r} is not supported (LPS, RAS or LAS)")
    directions = _nrrd_vectors(fields.get("space directions", ""))
    vectors = [v for v in directions if v is not None]
    if len(vectors) != 3:
        raise MalformedAnswerError("NRRD header without three 'space directions'")
    origin = _nrrd_vectors(fields.get("space origin", "(0,0,0)"))
    origin_vector = origin[0] if origin and origin[0] is not None else np.zeros(3)
    ijk_to_space = np.eye(4)
    ijk_to_space[:3, :3] = np.column_stack(vectors)
    ijk_to_space[:3, 3] = origin_vector
    return VolumeGeometry(tuple(sizes), _NRRD_SPACES[space] @ ijk_to_space)  # type: ignore[arg-type]


def _nrrd_vectors(value: str) -> list:
    vectors: list = []
    for match in _VECTOR.finditer(value):
        if match.group(1) is None:
            vectors.append(None)
            continue
        try:
            numbers = [float(v) for v in match.group(1).split(",")]
        except ValueError as err:
            raise MalformedAnswerError(f"bad NRRD vector {match.group(0)!r}") from err
        if len(numbers) != 3:
            raise MalformedAnswerError(f"NRRD vector {match.group(0)!r} does not have 3 components")
        vectors.append(np.asarray(numbers))
    return vectors


def voxel_corners(size_ijk: Iterable[int]) -> np.ndarray:
    """The 8 corner voxel indices of a grid, shape [8, 3] (for geometry checks)."""
    ni, nj, nk = (int(n) - 1 for n in size_ijk)
    return np.array([[i, j, k] for i in (0, ni) for j in (0, nj) for k in (0, nk)], dtype=np.float64)


def describe(geometry: VolumeGeometry, name: Optional[str] = None) -> str:
    """One line for logs: size, spacing (mm) and RAS origin (mm)."""
    spacing = ", ".join(f"{s:.4g}" for s in geometry.spacing)
    origin = ", ".join(f"{o:.2f}" for o in geometry.origin_ras)
    return f"{name or 'volume'}: {geometry.size_ijk} voxels, spacing ({spacing}) mm, origin RAS ({origin}) mm"
