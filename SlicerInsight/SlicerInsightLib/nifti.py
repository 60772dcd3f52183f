"""NIfTI-1 reading and writing from bytes, with numpy and the standard library only.

Slicer's Python has no nibabel and no SimpleITK import is wanted here, and the heatmap arrives as
bytes in an HTTP answer. This module parses the 348-byte NIfTI-1 header with :mod:`struct`
(either byte order; ``.nii.gz`` is gunzipped with :mod:`gzip`), turns the sform/qform into the
voxel-to-world matrix, reads the voxel array, and writes small NIfTI files (label maps for tests
and exports).

Conventions:

- NIfTI world coordinates are **RAS** in mm: +x towards the patient's right, +y anterior,
  +z superior. ITK/SimpleITK and DICOM use **LPS** (+x left, +y posterior, +z superior):
  LPS = diag(-1, -1, 1) * RAS.
- Voxel arrays are numpy arrays of shape **[K, J, I]** (slice, row, column: NIfTI stores i fastest),
  the same order as ``slicer.util.arrayFromVolume`` and ``SimpleITK.GetArrayFromImage``.
- Which matrix (ITK's choice, and thus Slicer's): the sform when ``sform_code`` is 1 ("scanner
  anatomical") and its axes are orthogonal; else the qform when ``qform_code > 0``; else the sform
  when set at all; else the voxel spacing alone (ANALYZE "method 1"). pytest checks this against
  SimpleITK on files whose sform and qform disagree.
"""

from __future__ import annotations

import gzip
import io
import logging
import math
import struct
import zlib
from dataclasses import dataclass
from typing import Dict, Tuple

import numpy as np

from .errors import InvalidInputError, MalformedAnswerError

__all__ = ["NiftiError", "NiftiHeader", "parse_nifti_header", "read_nifti", "write_nifti", "maybe_gunzip",
           "quaternion_to_matrix", "matrix_to_quaternion", "NIFTI_DTYPES"]

logger = logging.getLogger(__name__)

HEADER_SIZE = 348
#: Bytes before the voxel data in a single-file .nii this module writes (header + 4-byte extension flag).
VOX_OFFSET = 352
GZIP_MAGIC = b"\x1f\x8b"
#: NIfTI datatype code -> numpy dtype (byte order added when reading).
NIFTI_DTYPES: Dict[int, str] = {2: "u1", 4: "i2", 8: "i4", 16: "f4", 64: "f8", 256: "i1", 512: "u2",
                                768: "u4", 1024: "i8", 1280: "u8"}
_CODE_OF_DTYPE = {np.dtype(v).str[1:]: k for k, v in NIFTI_DTYPES.items()}
#: Columns of a 3x3 whose pairwise |cos| is below this are orthogonal (ITK needs orthogonal axes).
_ORTHOGONALITY_TOLERANCE = 1e-4
#: NIfTI xform code "scanner anatomical": the only sform code ITK prefers over a qform.
_XFORM_SCANNER_ANAT = 1
#: xyzt_units: mm (2) and seconds (8).
_UNITS_MM_SEC = 2 | 8


class NiftiError(MalformedAnswerError):
    """Bytes that are not a readable 3D NIfTI-1 volume."""


@dataclass
class NiftiHeader:
    """The fields of a NIfTI-1 header this package uses.

    Attributes:
        byteorder: '<' or '>'.
        dim: the 8 ``dim`` entries (dim[0] = number of dimensions).
        datatype: the NIfTI datatype code.
        pixdim: the 8 ``pixdim`` entries (pixdim[0] = qfac, pixdim[1:4] = spacing, mm).
        vox_offset: byte offset of the voxel data in a single-file .nii.
        scl_slope, scl_inter: value scaling (slope 0 or NaN: none).
        qform_code, sform_code: NIfTI xform codes (0 = unknown).
        quatern: (b, c, d) of the qform rotation.
        qoffset: (x, y, z) qform offset, mm (RAS).
        srow: the sform's 3 rows, shape [3, 4], mm (RAS).
    """

    byteorder: str
    dim: Tuple[int, ...]
    datatype: int
    pixdim: Tuple[float, ...]
    vox_offset: int
    scl_slope: float
    scl_inter: float
    qform_code: int
    sform_code: int
    quatern: Tuple[float, float, float]
    qoffset: Tuple[float, float, float]
    srow: np.ndarray

    @property
    def size_ijk(self) -> Tuple[int, int, int]:
        """Voxel counts along (i, j, k)."""
        return int(self.dim[1]), int(self.dim[2]), int(self.dim[3])

    @property
    def spacing(self) -> Tuple[float, float, float]:
        """pixdim[1:4], mm (1 where the header has 0 or less)."""
        return tuple(float(p) if p > 0 else 1.0 for p in self.pixdim[1:4])  # type: ignore[return-value]

    def qform_matrix(self) -> np.ndarray:
        """The qform as a 4x4 IJK-to-RAS matrix (mm)."""
        qfac = -1.0 if self.pixdim[0] < 0 else 1.0
        return quaternion_to_matrix(self.quatern, self.qoffset, self.spacing, qfac)

    def sform_matrix(self) -> np.ndarray:
        """The sform as a 4x4 IJK-to-RAS matrix (mm)."""
        matrix = np.eye(4)
        matrix[:3, :] = self.srow
        return matrix

    def ijk_to_ras(self) -> np.ndarray:
        """The 4x4 IJK-to-RAS matrix (mm) ITK and Slicer would use for this file (see module doc)."""
        if self.sform_code == _XFORM_SCANNER_ANAT and _orthogonal(self.srow[:, :3]):
            return self.sform_matrix()
        if self.qform_code > 0:
            return self.qform_matrix()
        if self.sform_code > 0:
            if not _orthogonal(self.srow[:, :3]):
                logger.warning("NIfTI sform has non-orthogonal axes and there is no qform: using it anyway")
            return self.sform_matrix()
        logger.warning("NIfTI header has neither qform nor sform: using the voxel spacing only")
        return np.diag(list(self.spacing) + [1.0])


def maybe_gunzip(data: bytes) -> bytes:
    """``data`` decompressed when it is gzip, else unchanged.

    Raises:
        NiftiError: gzip data that cannot be decompressed (truncated, corrupt).
    """
    if data[:2] != GZIP_MAGIC:
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as err:
        raise NiftiError(f"the NIfTI file is a broken gzip stream ({err})") from err


def parse_nifti_header(data: bytes) -> NiftiHeader:
    """Parse the NIfTI-1 header at the start of ``data`` (.nii or .nii.gz bytes).

    Raises:
        NiftiError: too short, NIfTI-2, bad magic or an unsupported layout.
    """
    raw = maybe_gunzip(data)
    if len(raw) < HEADER_SIZE:
        raise NiftiError(f"not a NIfTI file: {len(raw)} bytes, a NIfTI-1 header alone has {HEADER_SIZE}")
    byteorder = None
    for order in ("<", ">"):
        size = struct.unpack(order + "i", raw[:4])[0]
        if size == HEADER_SIZE:
            byteorder = order
        elif size == 540:
            raise NiftiError("NIfTI-2 files are not supported (expected NIfTI-1)")
    if byteorder is None:
        raise NiftiError("not a NIfTI-1 file (sizeof_hdr is not 348)")
    magic = raw[344:348]
    if magic not in (b"n+1\x00", b"ni1\x00"):
        raise NiftiError(f"not a NIfTI-1 file (magic {magic!r})")
    unpack = lambda fmt, offset: struct.unpack_from(byteorder + fmt, raw, offset)  # noqa: E731
    dim = unpack("8h", 40)
    datatype = unpack("h", 70)[0]
    pixdim = unpack("8f", 76)
    vox_offset = unpack("f", 108)[0]
    scl_slope, scl_inter = unpack("2f", 112)
    qform_code, sform_code = unpack("2h", 252)
    quatern = unpack("3f", 256)
    qoffset = unpack("3f", 268)
    srow = np.array(unpack("12f", 280), dtype=np.float64).reshape(3, 4)
    if not 1 <= dim[0] <= 7:
        raise NiftiError(f"NIfTI header has an invalid number of dimensions: {dim[0]}")
    return NiftiHeader(byteorder, tuple(int(d) for d in dim), int(datatype), tuple(float(p) for p in pixdim),
                       int(vox_offset) if vox_offset >= HEADER_SIZE else VOX_OFFSET, float(scl_slope),
                       float(scl_inter), int(qform_code), int(sform_code), tuple(quatern), tuple(qoffset), srow)


def read_nifti(data: bytes, apply_scaling: bool = True) -> Tuple[np.ndarray, NiftiHeader]:
    """Read a 3D scalar NIfTI-1 volume from bytes.

    Args:
        data: .nii or .nii.gz file content.
        apply_scaling: apply ``scl_slope``/``scl_inter`` (the result becomes float64 when they are
            not the identity).

    Returns:
        (array of shape [K, J, I], header).

    Raises:
        NiftiError: not NIfTI-1, not a 3D scalar volume, an unsupported datatype, or truncated data.
    """
    raw = maybe_gunzip(data)
    header = parse_nifti_header(raw)
    ndim = header.dim[0]
    extra = [d for d in header.dim[4:ndim + 1] if d > 1]
    if ndim < 3 or extra:
        raise NiftiError(f"not a 3D scalar volume: NIfTI dim = {list(header.dim[:ndim + 1])}")
    code = header.datatype
    if code not in NIFTI_DTYPES:
        raise NiftiError(f"unsupported NIfTI datatype code {code}")
    dtype = np.dtype(header.byteorder + NIFTI_DTYPES[code])
    ni, nj, nk = header.size_ijk
    count = ni * nj * nk
    needed = header.vox_offset + count * dtype.itemsize
    if len(raw) < needed:
        raise NiftiError(f"NIfTI voxel data truncated: {len(raw)} bytes, expected {needed}")
    array = np.frombuffer(raw, dtype=dtype, count=count, offset=header.vox_offset).reshape(nk, nj, ni)
    array = array.astype(dtype.newbyteorder("="), copy=True)
    slope, inter = header.scl_slope, header.scl_inter
    if apply_scaling and math.isfinite(slope) and slope != 0.0 and (slope != 1.0 or inter != 0.0):
        array = array * slope + inter
    return array, header


def write_nifti(array: np.ndarray, ijk_to_ras: np.ndarray, compress: bool = True, compresslevel: int = 6) -> bytes:
    """Encode a 3D volume as NIfTI-1 bytes (sform and qform both set, code 1 "scanner", mm).

    Args:
        array: voxels, shape [K, J, I]; uint8/int8/int16/uint16/int32/uint32/int64/uint64/float32/float64.
        ijk_to_ras: 4x4 voxel-index-to-RAS matrix, mm; its axes must be orthogonal.
        compress: gzip the result (.nii.gz) when True.
        compresslevel: gzip level, 1 (fast, for uploads) to 9 (small).

    Raises:
        InvalidInputError: not 3D, an unsupported dtype, or a matrix that is not 4x4 affine.
    """
    array = np.asarray(array)
    if array.ndim != 3:
        raise InvalidInputError(f"write_nifti needs a [K, J, I] array, got shape {array.shape}")
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    key = array.dtype.str[1:]
    if key not in _CODE_OF_DTYPE:
        raise InvalidInputError(f"write_nifti cannot store dtype {array.dtype}")
    matrix = np.asarray(ijk_to_ras, dtype=np.float64)
    if matrix.shape != (4, 4) or not np.allclose(matrix[3], [0, 0, 0, 1]):
        raise InvalidInputError("ijk_to_ras must be a 4x4 affine matrix")
    spacing = np.linalg.norm(matrix[:3, :3], axis=0)
    if np.any(spacing <= 0):
        raise InvalidInputError("ijk_to_ras has a zero-length axis")
    (b, c, d), qfac = matrix_to_quaternion(matrix[:3, :3])
    nk, nj, ni = array.shape
    datatype = _CODE_OF_DTYPE[key]
    header = bytearray(HEADER_SIZE)
    struct.pack_into("<i", header, 0, HEADER_SIZE)
    struct.pack_into("<c", header, 38, b"r")
    struct.pack_into("<8h", header, 40, 3, ni, nj, nk, 1, 1, 1, 1)
    struct.pack_into("<hh", header, 70, datatype, array.dtype.itemsize * 8)
    struct.pack_into("<8f", header, 76, qfac, *spacing, 0.0, 0.0, 0.0, 0.0)
    struct.pack_into("<f", header, 108, float(VOX_OFFSET))
    struct.pack_into("<2f", header, 112, 1.0, 0.0)
    struct.pack_into("<B", header, 123, _UNITS_MM_SEC)
    struct.pack_into("<80s", header, 148, b"SlicerInsight")
    struct.pack_into("<2h", header, 252, 1, 1)
    struct.pack_into("<3f", header, 256, b, c, d)
    struct.pack_into("<3f", header, 268, *matrix[:3, 3])
    struct.pack_into("<12f", header, 280, *matrix[:3, :].ravel())
    struct.pack_into("<4s", header, 344, b"n+1\x00")
    body = io.BytesIO()
    body.write(bytes(header))
    body.write(b"\x00\x00\x00\x00")  # no extensions
    body.write(np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes())
    raw = body.getvalue()
    return gzip.compress(raw, compresslevel=int(compresslevel), mtime=0) if compress else raw


def quaternion_to_matrix(quatern, qoffset, spacing, qfac: float = 1.0) -> np.ndarray:
    """NIfTI qform (b, c, d), offset (mm), spacing (mm) and qfac -> 4x4 IJK-to-RAS matrix.

    As ``nifti_quatern_to_mat44`` in nifti1_io.c.
    """
    b, c, d = (float(v) for v in quatern)
    a = 1.0 - (b * b + c * c + d * d)
    if a < 1e-7:  # 180 degree rotation: renormalize (b, c, d), a = 0
        norm = 1.0 / math.sqrt(b * b + c * c + d * d)
        b, c, d, a = b * norm, c * norm, d * norm, 0.0
    else:
        a = math.sqrt(a)
    rotation = np.array([
        [a * a + b * b - c * c - d * d, 2 * (b * c - a * d), 2 * (b * d + a * c)],
        [2 * (b * c + a * d), a * a + c * c - b * b - d * d, 2 * (c * d - a * b)],
        [2 * (b * d - a * c), 2 * (c * d + a * b), a * a + d * d - c * c - b * b],
    ])
    sx, sy, sz = (float(s) if s > 0 else 1.0 for s in spacing)
    matrix = np.eye(4)
    matrix[:3, :3] = rotation @ np.diag([sx, sy, sz * (-1.0 if qfac < 0 else 1.0)])
    matrix[:3, 3] = [float(v) for v in qoffset]
    return matrix


def matrix_to_quaternion(linear: np.ndarray) -> Tuple[Tuple[float, float, float], float]:
    """The qform (b, c, d) and qfac of a 3x3 voxel-to-RAS linear part (spacing included).

    The axes are normalized and orthogonalized (nearest rotation, by SVD) first; a left-handed
    frame gets qfac = -1 with the third axis negated, as in ``nifti_mat44_to_quatern``.
    """
    columns = np.asarray(linear, dtype=np.float64) / np.linalg.norm(linear, axis=0)
    qfac = 1.0
    if np.linalg.det(columns) < 0:
        qfac = -1.0
        columns = columns.copy()
        columns[:, 2] = -columns[:, 2]
    u, _, vt = np.linalg.svd(columns)
    r = u @ vt
    trace = r[0, 0] + r[1, 1] + r[2, 2] + 1.0
    if trace > 0.5:
        a = 0.5 * math.sqrt(trace)
        b = 0.25 * (r[2, 1] - r[1, 2]) / a
        c = 0.25 * (r[0, 2] - r[2, 0]) / a
        d = 0.25 * (r[1, 0] - r[0, 1]) / a
    else:
        xd = 1.0 + r[0, 0] - (r[1, 1] + r[2, 2])
        yd = 1.0 + r[1, 1] - (r[0, 0] + r[2, 2])
        zd = 1.0 + r[2, 2] - (r[0, 0] + r[1, 1])
        if xd > 1.0:
            b = 0.5 * math.sqrt(xd)
            c = 0.25 * (r[0, 1] + r[1, 0]) / b
            d = 0.25 * (r[0, 2] + r[2, 0]) / b
            a = 0.25 * (r[2, 1] - r[1, 2]) / b
        elif yd > 1.0:
            c = 0.5 * math.sqrt(yd)
            b = 0.25 * (r[0, 1] + r[1, 0]) / c
            d = 0.25 * (r[1, 2] + r[2, 1]) / c
            a = 0.25 * (r[0, 2] - r[2, 0]) / c
        else:
            d = 0.5 * math.sqrt(zd)
            b = 0.25 * (r[0, 2] + r[2, 0]) / d
            c = 0.25 * (r[1, 2] + r[2, 1]) / d
            a = 0.25 * (r[1, 0] - r[0, 1]) / d
        if a < 0.0:
            b, c, d = -b, -c, -d
    return (float(b), float(c), float(d)), qfac


def _orthogonal(linear: np.ndarray) -> bool:
    norms = np.linalg.norm(linear, axis=0)
    if np.any(norms <= 0):
        return False
    unit = linear / norms
    gram = unit.T @ unit
    return bool(np.all(np.abs(gram - np.eye(3)) < _ORTHOGONALITY_TOLERANCE))


def header_summary(header: NiftiHeader) -> str:
    """One line describing a header (for logs)."""
    return (f"NIfTI {header.size_ijk} dtype code {header.datatype} spacing {header.spacing} "
            f"qform_code {header.qform_code} sform_code {header.sform_code}")
