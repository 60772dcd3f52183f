"""Analyze a study held by a PACS: fetch its CT series, predict, report, store the SEG back.

``analyze_study`` (used by ``insight dicomweb analyze``):

1. QIDO-RS: the study's series; candidates are CT series (or the one named), largest first.
2. WADO-RS: a candidate's instances go to a private temporary folder; the ingest rules
   (:func:`insight.dicom.selection.check_series`: CT Image Storage, no localizer, at least
   ``min_slices`` images, one orientation, no duplicate positions) pick the first usable one.
3. The series is predicted exactly as a local DICOM folder would be (same reader, same QA).
4. The report (summary, montage, DICOM SEG of the findings referencing the series) is built; with
   ``store`` the SEG goes back to the PACS by STOW-RS, in the same study.

The temporary folder is removed when the call returns, whatever happens.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

from insight.dicom.discovery import discover, group_series
from insight.dicom.selection import check_series
from insight.dicomweb.client import PacsClient, SeriesInfo
from insight.errors import InputError, InsightError
from insight.inference.predictor import InsightPredictor, PredictionResult
from insight.reports.report import Report, build_report, predict_for_report, with_threshold

__all__ = ["StudyAnalysis", "analyze_study", "MIN_SLICES"]

logger = logging.getLogger(__name__)

#: Series with fewer images are not analyzed (scouts, key images); as ``insight ingest``'s default.
MIN_SLICES = 5


@dataclass
class StudyAnalysis:
    """What ``analyze_study`` did.

    Attributes:
        study_instance_uid, series_instance_uid: the study and the series analyzed.
        result: the prediction (heatmap on the series' grid).
        report: the report in memory (``report.seg`` is the SEG, None without findings).
        stored_seg_uid: SOPInstanceUID of the SEG stored on the PACS, None when nothing was stored.
        skipped_series: series passed over, with the reason.
    """

    study_instance_uid: str
    series_instance_uid: str
    result: PredictionResult
    report: Report
    stored_seg_uid: str | None
    skipped_series: dict[str, str]


def analyze_study(client: PacsClient, study_instance_uid: str, predictor: InsightPredictor, *,
                  series_instance_uid: str | None = None, store: bool = False, threshold: float | None = None,
                  seg_mode: str = "findings", max_tiles: int = 6) -> StudyAnalysis:
    """Fetch, predict and report one study's CT series; optionally store the SEG on the PACS.

    Raises:
        InputError: unknown study or series, or no usable CT series in the study.
        InsightError: the PACS cannot be reached or refuses the SEG.
    """
    series = client.find_series(study_instance_uid)
    candidates = _candidates(series, series_instance_uid)
    skipped: dict[str, str] = {} if series_instance_uid else {
        s.series_instance_uid: (f"modality {s.modality or '?'}, not CT" if s.modality != "CT"
                                else f"{s.n_instances} image(s), fewer than {MIN_SLICES}")
        for s in series if s not in candidates}
    with tempfile.TemporaryDirectory(prefix="insight-dicomweb-") as workdir:
        for info in candidates:
            datasets = client.retrieve_series(study_instance_uid, info.series_instance_uid)
            folder = _save_series(datasets, Path(workdir) / info.series_instance_uid)
            reason = _unusable_reason(folder)
            if reason:
                logger.info("series %s passed over: %s", info.series_instance_uid, reason)
                skipped[info.series_instance_uid] = reason
                continue
            result, image = predict_for_report(predictor, folder)
            if threshold is not None:
                result = with_threshold(result, threshold, predictor.config.inference)
            source = f"{client.url}/studies/{study_instance_uid}/series/{info.series_instance_uid}"
            result = dataclasses.replace(result, source=source)
            report = build_report(result, image, source_series=datasets, source=source, seg=True,
                                  seg_mode=seg_mode, max_tiles=max_tiles)
            stored_uid = _store_seg(client, report) if store else None
            return StudyAnalysis(study_instance_uid, info.series_instance_uid, result, report, stored_uid, skipped)
    details = "; ".join(f"{uid}: {why}" for uid, why in skipped.items()) or "no series"
    raise InputError(f"study {study_instance_uid}: no usable CT series ({details})")


def _candidates(series: list[SeriesInfo], wanted: str | None) -> list[SeriesInfo]:
    if wanted:
        chosen = [s for s in series if s.series_instance_uid == wanted]
        if not chosen:
            raise InputError(f"series {wanted} is not part of the study")
        return chosen
    ct = [s for s in series if s.modality == "CT" and (s.n_instances is None or s.n_instances >= MIN_SLICES)]
    return sorted(ct, key=lambda s: -(s.n_instances or 0))


def _save_series(datasets: list[Dataset], folder: Path) -> Path:
    folder.mkdir(parents=True)
    for n, dataset in enumerate(datasets):
        if "TransferSyntaxUID" not in (getattr(dataset, "file_meta", None) or {}):
            _add_file_meta(dataset)
        dataset.save_as(folder / f"IM{n + 1:05d}.dcm", write_like_original=False)
    return folder


def _add_file_meta(dataset: Dataset) -> None:
    """Give a dataset received without file meta information one (Explicit VR Little Endian)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = dataset.SOPClassUID
    meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset.file_meta = meta
    dataset.is_little_endian, dataset.is_implicit_VR = True, False


def _unusable_reason(folder: Path) -> str | None:
    """Why the series in ``folder`` cannot be analyzed (ingest's rules), or None."""
    groups = group_series(discover(folder).headers)
    if len(groups) != 1:
        return f"{len(groups)} series groups in one series (localizer images mixed in?)"
    choice = check_series(groups[0], MIN_SLICES, deidentify=False)
    return None if choice.taken else choice.reason.message


def _store_seg(client: PacsClient, report: Report) -> str | None:
    if report.seg is None:
        logger.warning("%s: no findings, so no DICOM SEG to store", report.name)
        return None
    stored = client.store([report.seg])
    uid = str(report.seg.SOPInstanceUID)
    if uid not in stored:
        raise InsightError(f"{client.url} did not confirm storing SEG {uid}")
    report.summary["seg"]["stored"] = f"{client.url}/studies/{report.seg.StudyInstanceUID}/series/" \
                                      f"{report.seg.SeriesInstanceUID}/instances/{uid}"
    logger.info("%s: DICOM SEG %s stored on %s", report.name, uid, client.url)
    return uid
