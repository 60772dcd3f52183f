"""Per-study reports: a JSON summary, a PNG montage of key slices, and the findings as DICOM SEG.

``insight report IMAGE_OR_DICOM_DIR --out DIR [--seg]`` writes, per study:

- ``<name>_report.json``: probability, findings (LPS mm and voxel indices), QA, model version,
  input identity and grid (:mod:`insight.reports.summary`);
- ``<name>_montage.png``: key slices with the heatmap overlay and the findings outlined and
  numbered (:mod:`insight.reports.montage`);
- ``<name>_seg.dcm`` (``--seg``, DICOM input with findings): the findings' regions as a DICOM SEG
  referencing the source series, frames on the source slices exactly (:mod:`insight.reports.seg`).

Finding regions are the connected components of ``heatmap >= threshold`` kept as findings
(:mod:`insight.reports.regions`); the report orchestration is :mod:`insight.reports.report`.
"""

from insight.reports.regions import findings_label_map
from insight.reports.report import Report, ReportFiles, build_report, predict_for_report, with_threshold
from insight.reports.seg import build_findings_seg, load_source_series, order_on_grid, seg_to_label_map

__all__ = ["findings_label_map", "Report", "ReportFiles", "build_report", "predict_for_report", "with_threshold",
           "build_findings_seg", "load_source_series", "order_on_grid", "seg_to_label_map"]
