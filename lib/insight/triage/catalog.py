"""A studies folder's analysed cases, kept up to date: one prediction JSON and one index entry per study.

For a set of studies (id -> image path) the catalog keeps, in its folder (on the server
``<studies>/.insight``)::

    predictions/<id>.json   the study's prediction (PredictionResult.to_json) plus a "catalog" record:
                            the image id, the image file's (size, mtime_ns) and when it was analysed;
                            or an "error" record when it could not be analysed
    retrieval/              the case index (insight.retrieval.CaseIndex) of the studies' embeddings

:meth:`StudyCatalog.sync` analyses only what changed: studies new since the last sync, studies whose
image file changed, and all of them when the model version changed (the index is then rebuilt);
studies gone from the set are removed. One prediction pass gives the probability, QA verdict and
embedding, so the worklist (:mod:`insight.triage.worklist`) and similar-case search share it. Every
file is written atomically and the index is saved after each analysed study, so a stopped sync keeps
what it did.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

from insight.errors import InputError, InsightError
from insight.io.atomic import write_json_atomic
from insight.retrieval.index import CaseIndex, SimilarCase
from insight.retrieval.labels import Label
from insight.triage.worklist import (DEFAULT_FLAG_THRESHOLD, Worklist, WorklistEntry, build_worklist,
                                     read_prediction_file)

if TYPE_CHECKING:
    from insight.inference.predictor import PredictionResult

__all__ = ["PREDICTIONS_DIR", "RETRIEVAL_DIR", "SyncReport", "StudyCatalog"]

logger = logging.getLogger(__name__)

PREDICTIONS_DIR = "predictions"
RETRIEVAL_DIR = "retrieval"
#: ``predict(image_path) -> PredictionResult`` (with ``embedding`` set): one study's analysis.
PredictFunction = Callable[[Path], "PredictionResult"]


def _file_state(path: Path) -> list[int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return [int(stat.st_size), int(stat.st_mtime_ns)]


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()


def _safe_id(study_id: str) -> str:
    if not study_id or Path(study_id).name != study_id or study_id.startswith("."):
        raise InputError(f"study id {study_id!r} cannot name a file")
    return study_id


@dataclass
class SyncReport:
    """What one :meth:`StudyCatalog.sync` did."""

    model_version: str | None
    analysed: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    removed: list[str] = field(default_factory=list)
    up_to_date: int = 0
    rebuilt_index: bool = False
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"model_version": self.model_version, "analysed": self.analysed, "failed": self.failed,
                "removed": self.removed, "up_to_date": self.up_to_date, "rebuilt_index": self.rebuilt_index,
                "seconds": round(self.seconds, 2)}


class StudyCatalog:
    """Prediction JSONs and a case index for a set of studies, in ``folder``. Thread-safe.

    Args:
        folder: where ``predictions/`` and ``retrieval/`` live.
    """

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        self.predictions_dir = self.folder / PREDICTIONS_DIR
        self.index_dir = self.folder / RETRIEVAL_DIR
        self.lock = threading.RLock()
        self._index: CaseIndex | None = None

    def prediction_path(self, study_id: str) -> Path:
        return self.predictions_dir / f"{_safe_id(study_id)}.json"

    def prediction(self, study_id: str) -> dict[str, Any] | None:
        """The stored prediction JSON of ``study_id`` (an ``error`` record when its analysis failed), or None."""
        try:
            payload = json.loads(self.prediction_path(study_id).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return None
        return payload if isinstance(payload, dict) else None

    def index(self, model_version: str | None = None, dims: int | None = None) -> CaseIndex | None:
        """The case index (loaded once); emptied when ``model_version`` differs from its own.

        Returns None when there is no index yet and no model version to create one for.
        """
        with self.lock:
            if self._index is None and CaseIndex.exists(self.index_dir):
                try:
                    self._index = CaseIndex.open(self.index_dir)
                except InputError as err:
                    logger.error("case index unusable, it will be rebuilt: %s", err)
            if model_version is not None and dims is not None:
                if self._index is None:
                    self._index = CaseIndex(self.index_dir, dims, model_version)
                elif self._index.model_version != model_version or self._index.dims != dims:
                    logger.warning("case index holds model %s embeddings: rebuilding it for model %s",
                                   self._index.model_version, model_version)
                    self._index.clear(model_version, dims)
            return self._index

    def _up_to_date(self, study_id: str, path: Path, model_version: str | None, index: CaseIndex | None) -> bool:
        if model_version is None:
            return False
        record = self.prediction(study_id)
        if record is None or record.get("model_version") != model_version:
            return False
        if (record.get("catalog") or {}).get("source_state") != _file_state(path):
            return False
        return "error" in record or (index is not None and study_id in index
                                     and index.model_version == model_version)

    def sync(self, studies: Mapping[str, str | os.PathLike], predict: PredictFunction,
             model_version: str | None, labels: Mapping[str, Label] | None = None,
             should_stop: Callable[[], bool] | None = None) -> SyncReport:
        """Analyse the studies that changed (module docstring); remove the ones gone.

        Args:
            studies: study id -> image path (file or DICOM folder).
            predict: runs the model on one image (``PredictionResult`` with ``embedding``).
            model_version: the version ``predict`` serves now (None when unknown: everything is analysed).
            labels: scan-level labels by study id, stored in the index.
            should_stop: asked before each study; True ends the sync early.
        """
        start = time.perf_counter()
        labels = labels or {}
        with self.lock:
            report = SyncReport(model_version)
            index = self.index()
            if index is not None and model_version is not None and index.model_version != model_version:
                report.rebuilt_index = len(index) > 0
            for study_id in sorted(studies):
                if should_stop is not None and should_stop():
                    break
                path = Path(studies[study_id])
                if self._up_to_date(study_id, path, model_version, self.index()):
                    report.up_to_date += 1
                    continue
                self._analyse(study_id, path, predict, labels.get(study_id), report)
            self._remove_gone(set(studies), report)
            index = self.index()
            if index is not None:
                changed = False
                for study_id in index.case_ids:
                    if study_id in labels and index.case(study_id).label != labels[study_id]:
                        index.set_label(study_id, labels[study_id])
                        changed = True
                if changed or report.removed:
                    index.save()
            report.seconds = time.perf_counter() - start
        if report.analysed or report.failed or report.removed:
            logger.info("study catalog %s: %d analysed, %d failed, %d removed, %d up to date in %.1f s", self.folder,
                        len(report.analysed), len(report.failed), len(report.removed), report.up_to_date,
                        report.seconds)
        return report

    def _analyse(self, study_id: str, path: Path, predict: PredictFunction, label: Label, report: SyncReport) -> None:
        state = _file_state(path)
        try:
            result = predict(path)
            if result.embedding is None:
                raise InsightError("the prediction gave no embedding")
        except InsightError as err:
            report.failed[study_id] = str(err)
            logger.warning("study catalog: %s could not be analysed: %s", study_id, err)
            write_json_atomic(self.prediction_path(study_id), {
                "name": study_id, "image": study_id, "source": str(path), "error": str(err),
                "model_version": report.model_version,
                "catalog": {"image": study_id, "source_state": state, "analysed": _now()}})
            index = self.index()
            if index is not None and index.remove(study_id):
                index.save()
            return
        payload = {**result.to_json(), "image": study_id, "source": str(path),
                   "catalog": {"image": study_id, "source_state": state, "analysed": _now()}}
        payload["heatmap"] = {k: v for k, v in payload.get("heatmap", {}).items() if k != "file"}  # not written here
        index = self.index(result.model_version, int(result.embedding.size))
        assert index is not None
        index.add(study_id, result.embedding, label, str(path))
        index.save()
        write_json_atomic(self.prediction_path(study_id), payload)
        report.analysed.append(study_id)

    def _remove_gone(self, present: set[str], report: SyncReport) -> None:
        index = self.index()
        gone = set(index.case_ids if index is not None else []) - present
        if self.predictions_dir.is_dir():
            gone |= {p.stem for p in self.predictions_dir.glob("*.json") if not p.name.startswith(".")} - present
        for study_id in sorted(gone):
            if index is not None:
                index.remove(study_id)
            (self.predictions_dir / f"{study_id}.json").unlink(missing_ok=True)
            report.removed.append(study_id)

    # -- answers ---------------------------------------------------------------------------------------
    def worklist(self, studies: Mapping[str, str | os.PathLike] | None = None,
                 flag_threshold: float = DEFAULT_FLAG_THRESHOLD) -> Worklist:
        """The worklist of the catalogued studies (of ``studies`` only, when given: one not analysed yet
        appears as ``not_analysed``)."""
        entries = []
        with self.lock:
            ids = sorted(studies) if studies is not None else sorted(
                p.stem for p in self.predictions_dir.glob("*.json") if not p.name.startswith("."))
            for study_id in ids:
                path = self.prediction_path(study_id)
                entry = read_prediction_file(path, flag_threshold) if path.is_file() else None
                if entry is None:
                    entry = WorklistEntry(study_id, "not_analysed", "not analysed yet",
                                          source=str(studies[study_id]) if studies else None,
                                          error="no prediction yet")
                entry.name = study_id
                entries.append(entry)
        return build_worklist(entries, flag_threshold)

    def similar(self, study_id: str, k: int = 5) -> list[SimilarCase]:
        """The ``k`` catalogued studies most similar to ``study_id`` (itself left out).

        Raises:
            InputError: ``study_id`` is not in the index (not analysed, or its analysis failed).
        """
        with self.lock:
            index = self.index()
            if index is None or study_id not in index:
                record = self.prediction(study_id) or {}
                why = f": {record['error']}" if record.get("error") else ""
                raise InputError(f"study {study_id!r} has no embedding in the case index{why}")
            return index.search(index.vector(study_id), k, exclude={study_id})
