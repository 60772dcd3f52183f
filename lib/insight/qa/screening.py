"""Run every QA check on one study: before inference (:func:`screen_study`), after it (:func:`screen_heatmap`).

A check that breaks on an odd input never stops a prediction: it becomes a ``qa_check_failed`` flag
(warn) saying which check could not run and why, and the other checks still run.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Sequence

import SimpleITK as sitk

from insight.qa.acquisition import check_field_of_view, check_slice_positions, check_slice_thickness, check_voxel_values
from insight.qa.chest import ChestAnatomy, analyse_chest
from insight.qa.ctpa import screen_ctpa
from insight.qa.dicom_meta import SeriesMetadata
from insight.qa.flags import QAFlag, QAReport
from insight.qa.heatmap_qa import check_heatmap

if TYPE_CHECKING:
    from insight.inference.findings import Finding

__all__ = ["StudyScreening", "screen_study", "screen_heatmap"]

logger = logging.getLogger(__name__)


@dataclass
class StudyScreening:
    """The pre-inference QA of one study.

    Attributes:
        report: flags and measurements of the acquisition and not-a-CTPA checks.
        anatomy: the chest anatomy on the analysis grid (reused by :func:`screen_heatmap`); None when
            it could not be computed.
    """

    report: QAReport
    anatomy: ChestAnatomy | None


def screen_study(image: sitk.Image, metadata: SeriesMetadata | None = None) -> StudyScreening:
    """Acquisition and not-a-CTPA checks of a volume (HU) and, for DICOM, its header facts."""
    report = QAReport()
    _run(report, "slice geometry", lambda: check_slice_positions(metadata.slice_positions_mm)
         if metadata is not None else QAReport())
    _run(report, "slice thickness",
         lambda: check_slice_thickness(image, metadata.slice_thickness_mm if metadata is not None else None))
    _run(report, "voxel values",
         lambda: check_voxel_values(image, metadata.padding_hu if metadata is not None else None))
    anatomy: ChestAnatomy | None = None

    def chest() -> QAReport:
        nonlocal anatomy
        anatomy = analyse_chest(image)
        return QAReport()

    _run(report, "chest anatomy", chest)
    if anatomy is not None:
        _run(report, "field of view", lambda: check_field_of_view(anatomy))
    _run(report, "CTPA screening", lambda: screen_ctpa(anatomy, metadata))
    return StudyScreening(report=report, anatomy=anatomy)


def screen_heatmap(screening: StudyScreening, heatmap: sitk.Image, findings: Sequence["Finding"] = ()) -> QAReport:
    """Heatmap QA against the study's anatomy; an empty report when the anatomy is unknown."""
    report = QAReport()
    if screening.anatomy is not None:
        anatomy = screening.anatomy
        _run(report, "heatmap", lambda: check_heatmap(heatmap, anatomy, findings))
    return report


def _run(report: QAReport, name: str, check: Callable[[], QAReport]) -> None:
    """Run one check into ``report``; an exception becomes a ``qa_check_failed`` flag."""
    start = time.perf_counter()
    try:
        result = check()
    except Exception as err:  # noqa: BLE001 - QA must never stop a prediction; the flag says what broke
        logger.warning("QA check %r failed (%s: %s); the prediction goes on", name, type(err).__name__, err)
        logger.debug("QA check %r traceback", name, exc_info=True)
        result = QAReport(flags=[QAFlag("qa_check_failed", f"the {name} check could not run ({type(err).__name__}: "
                                        f"{err}); its problems, if any, are not reported", "warn", "qa",
                                        details={"check_name": name})])
    report.flags.extend(result.flags)
    report.measurements.update(result.measurements)
    report.timings_s[name] = time.perf_counter() - start
