"""Heatmap QA: did the model look where emboli can be (lungs and pulmonary vessels)?

Emboli lie inside pulmonary arteries: within the lungs, in the hila, and centrally in the pulmonary
trunk and main arteries (clot can also sit in the right heart). Heat on the chest wall, bone, the
abdomen or outside the body means the model reacted to something other than a filling defect.

The *plausible region*, on the analysis grid of :mod:`insight.qa.chest`:

- the lungs with everything they enclose in each slice (intrapulmonary vessels, and the clots in them,
  are holes in the air mask);
- the central mediastinum: tissue denser than fat (>= :data:`CENTRAL_MIN_HU`) between the lungs and in
  front of the spine (:meth:`~insight.qa.chest.ChestAnatomy.in_front_of_spine` at
  :data:`CENTRAL_DEPTH_FRACTION`): pulmonary trunk and
  main arteries with any clot in them (an occlusive clot is not enhanced, so contrast alone would
  miss it), heart and great vessels;
- both grown by :data:`MARGIN_MM` along each axis (a box; heatmaps are computed at a stride and upsampled, so their blobs are
  wider than the clot).

Measured: the fraction of the heatmap's mass (sum of heat over voxels at or above
:data:`HEAT_FLOOR_FRACTION` of its maximum) outside that region, and which findings peak outside it.
Code raised (``check = "heatmap"``): ``heatmap_outside_anatomy`` (warn).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Sequence

import numpy as np
import SimpleITK as sitk
from insight.qa.chest import ChestAnatomy, analysis_grid, box_dilate_mm, fill_holes_per_slice
from insight.qa.flags import QAFlag, QAReport

if TYPE_CHECKING:  # imported for type hints only: insight.inference imports this package
    from insight.inference.findings import Finding

__all__ = ["CENTRAL_MIN_HU", "MARGIN_MM", "MAX_OUTSIDE_FRACTION", "plausible_region", "check_heatmap"]

logger = logging.getLogger(__name__)

#: Tissue between the lungs at or above this (HU) counts (heart, vessels, clot; not mediastinal fat).
CENTRAL_MIN_HU = -20.0
#: The central region ends at this fraction of the body's depth: the right and left pulmonary arteries
#: reach about 50 %, the vertebral bodies start at about 60 %.
CENTRAL_DEPTH_FRACTION = 0.58
#: Margin (mm) grown around lungs and vessels.
MARGIN_MM = 6.0
#: Heat below this fraction of the heatmap's maximum is ignored (faint spill-over, not a look).
HEAT_FLOOR_FRACTION = 0.1
#: ``heatmap_outside_anatomy`` when more than this fraction of the heat mass lies outside. Calibrated on
#: phantoms: truth clot masks blurred like heatmaps (sigma 2-6 mm) put at most 19 % outside, heat on bone
#: or on the body wall at least 41 % (36 studies; phantoms, not patients).
MAX_OUTSIDE_FRACTION = 0.3
#: Heatmaps whose maximum is below this are empty: nothing to check.
MIN_HEAT = 1e-3


def plausible_region(anatomy: ChestAnatomy) -> np.ndarray:
    """Bool [z, y, x] on the analysis grid: lungs (holes filled) and central mediastinum, plus a margin."""
    lungs = fill_holes_per_slice(anatomy.lungs)
    central = anatomy.mediastinum() & anatomy.in_front_of_spine(CENTRAL_DEPTH_FRACTION) & (anatomy.hu >= CENTRAL_MIN_HU)
    region = lungs | central
    return box_dilate_mm(region, MARGIN_MM, anatomy.spacing_xyz)


def check_heatmap(heatmap: sitk.Image, anatomy: ChestAnatomy, findings: Sequence["Finding"] = ()) -> QAReport:
    """How much of ``heatmap`` (float in [0, 1] on the input grid) lies outside lungs and vessels.

    Args:
        heatmap: the prediction's heatmap, on the grid ``anatomy`` was computed from.
        anatomy: the study's chest anatomy.
        findings: the prediction's findings; those whose peak lies outside are named in the flag.
    """
    report = QAReport()
    heat_grid = analysis_grid(heatmap)
    heat = sitk.GetArrayViewFromImage(heat_grid)
    if heat.shape != anatomy.hu.shape:
        raise ValueError(f"heatmap analysis grid {heat.shape} differs from the image's {anatomy.hu.shape}")
    peak = float(heat.max()) if heat.size else 0.0
    if peak < MIN_HEAT:
        report.measurements["heatmap_outside_fraction"] = None
        return report
    region = plausible_region(anatomy)
    counted = np.where(heat >= HEAT_FLOOR_FRACTION * peak, heat, 0.0)
    total = float(counted.sum())
    outside = float(counted[~region].sum()) / total if total > 0 else 0.0
    report.measurements["heatmap_outside_fraction"] = outside

    outside_findings = []
    for finding in findings:
        peak_point = heatmap.TransformIndexToPhysicalPoint(tuple(int(v) for v in finding.peak_ijk))
        i, j, k = heat_grid.TransformPhysicalPointToIndex(peak_point)
        inside_grid = 0 <= k < region.shape[0] and 0 <= j < region.shape[1] and 0 <= i < region.shape[2]
        if not inside_grid or not region[k, j, i]:
            outside_findings.append(int(finding.label))
    report.measurements["findings_outside_anatomy"] = outside_findings

    if outside > MAX_OUTSIDE_FRACTION or outside_findings:
        parts = []
        if outside > MAX_OUTSIDE_FRACTION:
            parts.append(f"{outside:.0%} of the heatmap lies outside the lungs and pulmonary vessels "
                         f"(more than {MAX_OUTSIDE_FRACTION:.0%})")
        if outside_findings:
            parts.append(f"finding(s) {', '.join(map(str, outside_findings))} peak outside them")
        report.flags.append(QAFlag(
            "heatmap_outside_anatomy", "; ".join(parts) + ": the model looked where emboli cannot be; check "
            "those regions before trusting the score", "warn", "heatmap",
            details={"outside_fraction": outside, "limit_fraction": MAX_OUTSIDE_FRACTION,
                     "findings_outside": outside_findings}))
    return report
