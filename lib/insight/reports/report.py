"""One study's report: predict (or take a prediction), then build and write summary, montage, SEG.

:func:`build_report` makes everything in memory (so a failure writes nothing);
:meth:`Report.write` writes ``<name>_seg.dcm`` (when made), ``<name>_montage.png`` and, last,
``<name>_report.json`` atomically into the output folder.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import SimpleITK as sitk
from pydicom.dataset import Dataset

from insight.config import InferenceConfig
from insight.errors import InputError, InsightError
from insight.inference.findings import extract_findings
from insight.inference.predictor import InsightPredictor, PredictionResult
from insight.io.atomic import atomic_output, write_json_atomic
from insight.io.image_io import case_name, read_image
from insight.qa import read_series_metadata
from insight.reports.montage import render_montage, select_key_slices
from insight.reports.regions import findings_label_map
from insight.reports.seg import SEG_MODES, build_findings_seg, load_source_series
from insight.reports.summary import build_summary, dicom_identity, file_identity

__all__ = ["Report", "ReportFiles", "predict_for_report", "with_threshold", "build_report"]

logger = logging.getLogger(__name__)


@dataclass
class ReportFiles:
    """Paths of a written report; ``seg`` is None when no SEG was made."""

    summary: Path
    montage: Path
    seg: Path | None


@dataclass
class Report:
    """A study's report in memory.

    Attributes:
        name: case name (file name stem of the outputs).
        summary: the JSON summary (see :mod:`insight.reports.summary`).
        montage_png: PNG bytes of the key-slice montage.
        seg: the DICOM SEG dataset, or None (not asked for, or no findings).
        label_map: uint16 finding label per voxel on the input grid.
    """

    name: str
    summary: dict
    montage_png: bytes
    seg: Dataset | None
    label_map: sitk.Image

    def write(self, out_dir: str | os.PathLike) -> ReportFiles:
        """Write the files into ``out_dir`` (created if needed); the summary goes last."""
        out = Path(out_dir)
        if out.exists() and not out.is_dir():
            raise InputError(f"--out {out} exists and is not a folder")
        names = self.summary["files"]
        try:
            seg_path = None
            if self.seg is not None:
                seg_path = out / names["seg"]
                with atomic_output(seg_path) as tmp:
                    self.seg.save_as(tmp, write_like_original=False)
            montage_path = out / names["montage"]
            with atomic_output(montage_path) as tmp:
                tmp.write_bytes(self.montage_png)
            summary_path = out / names["summary"]
            write_json_atomic(summary_path, self.summary)
        except OSError as err:
            raise InsightError(f"cannot write the report to {out}: {err.strerror or err}") from err
        logger.info("%s: report written to %s", self.name, out)
        return ReportFiles(summary=summary_path, montage=montage_path, seg=seg_path)


def predict_for_report(predictor: InsightPredictor, path: str | os.PathLike) -> tuple[PredictionResult, sitk.Image]:
    """Read ``path`` (volume file or DICOM series folder) and predict it; returns the result and the CT."""
    image = read_image(path)
    metadata = read_series_metadata(path) if Path(path).is_dir() else None
    result = predictor.predict_image(image, name=case_name(path), metadata=metadata)
    result.source = str(path)
    return result, image


def with_threshold(result: PredictionResult, threshold: float, inference: InferenceConfig) -> PredictionResult:
    """A copy of ``result`` with findings re-extracted from its heatmap at ``threshold``.

    The QA verdict is kept as computed at the model's threshold.
    """
    if not 0.0 < threshold <= 1.0:
        raise InputError(f"--threshold must be in (0, 1], got {threshold}")
    findings = extract_findings(result.heatmap, threshold, inference.min_finding_volume_mm3, inference.max_findings)
    return dataclasses.replace(result, findings=findings, finding_threshold=float(threshold))


def build_report(result: PredictionResult, image: sitk.Image, *, source_series: Sequence[Dataset] | None = None,
                 source: str | None = None, seg: bool = False, seg_mode: str = "findings",
                 max_tiles: int = 6) -> Report:
    """Build a study's report in memory.

    Args:
        result: the prediction (heatmap on ``image``'s grid).
        image: the CT in HU that was predicted.
        source_series: the source DICOM headers; loaded from ``result.source`` when that is a
            folder and this is None. Needed for a SEG.
        source: text naming the input in the summary (default ``result.source``).
        seg: also make a DICOM SEG of the findings (needs a DICOM source). With no findings, no SEG
            is made and the summary says why.
        seg_mode: ``"findings"`` or ``"suspicion"`` (see :mod:`insight.reports.seg`).
        max_tiles: at most this many montage tiles.

    Raises:
        InputError: a SEG asked for a non-DICOM input, or the source slices do not match the grid.
    """
    if seg_mode not in SEG_MODES:
        raise InputError(f"--seg-mode must be one of {', '.join(SEG_MODES)}, got {seg_mode!r}")
    if image.GetSize() != result.heatmap.GetSize():
        raise InputError(f"the heatmap grid {result.heatmap.GetSize()} is not the image grid {image.GetSize()}")
    source = source or result.source or result.name
    if source_series is None and result.source and Path(result.source).is_dir():
        source_series = load_source_series(result.source)
    if seg and not source_series:
        raise InputError(f"{result.name}: a DICOM SEG needs a DICOM series input (got a volume file); "
                         "run without --seg or give the DICOM folder")
    if source_series:
        identity = dicom_identity(source_series, source)
    elif result.source and Path(result.source).is_file():
        identity = file_identity(result.source)
    else:
        identity = {"kind": "image", "source": source}

    label_map = findings_label_map(result.heatmap, result.findings, result.finding_threshold)
    seg_dataset = None
    seg_info = None
    files = {"summary": f"{result.name}_report.json", "montage": f"{result.name}_montage.png", "seg": None}
    if seg:
        if result.findings:
            seg_dataset = build_findings_seg(label_map, result.findings, source_series, result.model_version,
                                             result.finding_threshold, seg_mode)
            files["seg"] = f"{result.name}_seg.dcm"
            seg_info = {"file": files["seg"], "mode": seg_mode,
                        "sop_instance_uid": str(seg_dataset.SOPInstanceUID),
                        "series_instance_uid": str(seg_dataset.SeriesInstanceUID),
                        "segments": len(seg_dataset.SegmentSequence), "frames": int(seg_dataset.NumberOfFrames),
                        "referenced_series_instance_uid": str(source_series[0].SeriesInstanceUID),
                        "stored": None}
        else:
            logger.warning("%s: no findings at threshold %g: no DICOM SEG made", result.name,
                           result.finding_threshold)
            seg_info = {"file": None, "mode": seg_mode, "reason": f"no findings at threshold "
                                                                  f"{result.finding_threshold:g}"}

    key_slices = select_key_slices(result.heatmap, result.findings, label_map, max_tiles)
    qa = result.qa or {}
    codes = [f.get("code") for f in qa.get("flags", []) if f.get("severity") != "info"]
    title = [f"{result.name}  p(PE) = {result.pe_probability:.3f}  {len(result.findings)} finding(s) "
             f">= {result.finding_threshold:g}",
             f"QA {qa.get('verdict', '?')}" + (f" ({', '.join(codes)})" if codes else "")
             + f"  model {result.model_version}"]
    montage = render_montage(image, result.heatmap, label_map, key_slices, title)
    summary = build_summary(name=result.name, identity=identity, image=image, pe_probability=result.pe_probability,
                            model_version=result.model_version, finding_threshold=result.finding_threshold,
                            findings=[f.to_dict() for f in result.findings], qa=qa,
                            key_slices=[k.to_dict() for k in key_slices], seg=seg_info, files=files)
    return Report(name=result.name, summary=summary, montage_png=montage, seg=seg_dataset, label_map=label_map)
