"""Findings: the server's candidate PE regions as rows of the module's findings table.

The server reports each finding (a connected heatmap region above its finding threshold) with its
centroid in **LPS** mm (``centroid_lps_mm``) and as a continuous voxel index (``centroid_ijk``).
Slicer's slice views are driven in **RAS** mm, so every row carries its location in RAS, ready
for ``slicer.modules.markups.logic().JumpSlicesToLocation(r, a, s, True)``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, List, Mapping, Optional, Sequence, Tuple

from .errors import MalformedAnswerError
from .geometry import lps_to_ras

__all__ = ["FindingRow", "parse_findings", "visible_findings", "TABLE_COLUMNS", "table_cells"]

logger = logging.getLogger(__name__)

#: Column headers of the findings table, in order (see :func:`table_cells`).
TABLE_COLUMNS = ("#", "Score", "Volume (mm³)", "Location RAS (mm)")


@dataclass(frozen=True)
class FindingRow:
    """One finding.

    Attributes:
        rank: 1-based rank by peak score (the server's ``label``).
        peak_score: highest heatmap value in the region, [0, 1].
        mean_score: mean heatmap value over the region, [0, 1].
        volume_mm3: region volume, mm3.
        voxel_count: region size in voxels.
        centroid_lps: region centroid, LPS mm.
        centroid_ras: region centroid, RAS mm (Slicer world coordinates).
        centroid_ijk: region centroid as a continuous voxel index (i, j, k), or None.
        peak_ijk: voxel index of the peak, or None.
    """

    rank: int
    peak_score: float
    mean_score: float
    volume_mm3: float
    voxel_count: int
    centroid_lps: Tuple[float, float, float]
    centroid_ras: Tuple[float, float, float]
    centroid_ijk: Optional[Tuple[float, float, float]] = None
    peak_ijk: Optional[Tuple[int, int, int]] = None

    @classmethod
    def from_json(cls, item: Mapping[str, Any], index: int = 0) -> "FindingRow":
        """Build a row from one entry of the server's ``findings`` list.

        Raises:
            MalformedAnswerError: a required field is missing or not numeric.
        """
        if not isinstance(item, Mapping):
            raise MalformedAnswerError(f"finding {index + 1} in the server's answer is not an object")
        try:
            lps = _vector(item["centroid_lps_mm"], float)
            row = cls(
                rank=int(item.get("label", index + 1)),
                peak_score=_number(item["peak_score"]),
                mean_score=_number(item.get("mean_score", item["peak_score"])),
                volume_mm3=_number(item["volume_mm3"]),
                voxel_count=int(item.get("voxel_count", 0)),
                centroid_lps=lps,
                centroid_ras=lps_to_ras(lps),
                centroid_ijk=_vector(item["centroid_ijk"], float) if item.get("centroid_ijk") is not None else None,
                peak_ijk=_vector(item["peak_ijk"], int) if item.get("peak_ijk") is not None else None,
            )
        except (KeyError, TypeError, ValueError) as err:
            raise MalformedAnswerError(f"finding {index + 1} in the server's answer is incomplete or not "
                                       f"numeric ({type(err).__name__}: {err})") from err
        return row


def parse_findings(items: Any) -> List[FindingRow]:
    """The server's ``findings`` list as rows, highest peak score first.

    Raises:
        MalformedAnswerError: ``items`` is not a list of finding objects.
    """
    if items is None:
        return []
    if not isinstance(items, Sequence) or isinstance(items, (str, bytes)):
        raise MalformedAnswerError("the server's 'findings' is not a list")
    rows = [FindingRow.from_json(item, index) for index, item in enumerate(items)]
    return sorted(rows, key=lambda row: (-row.peak_score, row.rank))


def visible_findings(rows: Sequence[FindingRow], threshold: float) -> List[FindingRow]:
    """The rows whose peak score reaches the display threshold (what the overlay still shows)."""
    return [row for row in rows if row.peak_score >= threshold]


def table_cells(row: FindingRow) -> Tuple[str, str, str, str]:
    """The texts of one table row, matching :data:`TABLE_COLUMNS`."""
    r, a, s = row.centroid_ras
    return (str(row.rank), f"{row.peak_score:.3f}", f"{row.volume_mm3:.0f}", f"{r:.1f}, {a:.1f}, {s:.1f}")


def _number(value: Any) -> float:
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{value!r} is not finite")
    return number


def _vector(value: Any, kind) -> tuple:
    values = tuple(kind(v) for v in value)
    if len(values) != 3:
        raise ValueError(f"expected 3 components, got {len(values)}")
    if kind is float and not all(math.isfinite(v) for v in values):
        raise ValueError(f"{value!r} is not finite")
    return values
