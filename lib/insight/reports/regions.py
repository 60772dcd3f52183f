"""The voxels of each finding: a label map on the heatmap's grid, one label per finding.

:func:`insight.inference.findings.extract_findings` reports statistics of the 26-connected regions
of ``heatmap >= threshold`` but not the regions themselves. This module rebuilds them with the
same rule (SimpleITK ``ConnectedComponent``, fully connected) and gives each region the label of
the finding whose peak voxel lies in it, so label ``n`` holds exactly the voxels of finding ``n``.
Regions that were dropped (below the minimum volume, beyond the maximum count) stay 0.
"""

from __future__ import annotations

import logging

import numpy as np
import SimpleITK as sitk

from insight.inference.findings import Finding

__all__ = ["findings_label_map"]

logger = logging.getLogger(__name__)


def findings_label_map(heatmap: sitk.Image, findings: list[Finding], threshold: float) -> sitk.Image:
    """Label map of the findings' regions on ``heatmap``'s grid.

    Args:
        heatmap: 3D scalar image of scores in [0, 1] (the prediction's heatmap, input grid).
        findings: findings extracted from this heatmap at ``threshold`` (labels 1..n, any order).
        threshold: the threshold the findings were extracted at (foreground: ``heatmap >= threshold``).

    Returns:
        uint16 image with ``heatmap``'s geometry: voxel value = finding label, 0 elsewhere.

    Raises:
        ValueError: a finding's peak voxel is not above the threshold in this heatmap (the findings
            come from another heatmap or threshold), or two findings share one region.
    """
    values = sitk.GetArrayViewFromImage(heatmap)  # [z, y, x]
    thr = values.dtype.type(threshold) if np.issubdtype(values.dtype, np.floating) else threshold
    foreground = values >= thr
    out = np.zeros(values.shape, dtype=np.uint16)
    if findings:
        mask = sitk.GetImageFromArray(foreground.view(np.uint8))
        mask.CopyInformation(heatmap)
        components_image = sitk.ConnectedComponent(mask, True)  # 26-connectivity, as extract_findings
        components = sitk.GetArrayViewFromImage(components_image)  # [z, y, x], valid while the image lives
        lookup = np.zeros(int(components.max()) + 1, dtype=np.uint16)
        for finding in findings:
            i, j, k = finding.peak_ijk
            component = int(components[k, j, i])
            if component == 0:
                raise ValueError(f"finding {finding.label}: its peak voxel {finding.peak_ijk} is below the "
                                 f"threshold {threshold} in this heatmap")
            if lookup[component]:
                raise ValueError(f"findings {lookup[component]} and {finding.label} lie in one region")
            lookup[component] = finding.label
        # Relabel the foreground voxels only (a full-volume lookup costs seconds on a 512x512x300 grid).
        inside = np.flatnonzero(foreground)
        out.ravel()[inside] = lookup[components.ravel()[inside]]
    image = sitk.GetImageFromArray(out)
    image.CopyInformation(heatmap)
    logger.debug("findings_label_map: %d findings, %d labelled voxels", len(findings), int((out > 0).sum()))
    return image
