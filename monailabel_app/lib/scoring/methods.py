"""Scoring methods (MONAI Label ``ScoringMethod``) that write per-image scores into the datastore.

- ``uncertainty``: pe_insight's PE probability p and its binary entropy
  ``-(p log2 p + (1-p) log2 (1-p))`` in [0, 1] as ``value``.
- ``diversity``: the scan's embedding (pooled INSIGHT encoder features, :mod:`lib.scoring.embedding`).
- ``disagreement``: ``1 - Dice(heatmap >= finding threshold, segmentation mask > 0)`` on the input
  grid (two empty masks agree: 0), with the ``pe_segmentation`` model's mask.

Incremental: an image already scored by the same model version(s) is skipped unless the request
says ``{"force": true}``; a request may name ``{"images": [...]}`` to score only those. Records are
written image by image (see :mod:`lib.scoring.scores` for their shape), so a stopped run keeps what it
did. A failing image is reported and skipped; the others are still scored. One pe_insight pass gives
both the ``uncertainty`` and the ``diversity`` record, so every method writes both (the second
method then finds them up to date).

The methods run in the server process (:mod:`lib.scoring.runner`), sharing the served model with
/infer (its lock serializes the two), so a score always comes from the model /infer serves. The math
(entropy, 1 - Dice) is the library's (:mod:`insight.active_learning`), shared with ``insight simulate-campaign``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from typing import Any, Callable

import numpy as np
import SimpleITK as sitk
from monailabel.interfaces.tasks.scoring import ScoringMethod

from insight.active_learning import binary_entropy, mask_disagreement
from insight.errors import InputError, InsightError
from lib.datastore.provenance import utc_now_iso
from lib.scoring.embedding import EncoderFeatureCapture
from lib.scoring.scores import SCORES_KEY, score_record

__all__ = ["ScoringUnavailable", "InsightScoringMethod", "UncertaintyScoring", "DiversityScoring",
           "DisagreementScoring", "binary_entropy", "mask_disagreement", "segmentation_via_app"]

logger = logging.getLogger(__name__)

#: ``segment(image_id) -> (mask [Z, Y, X] bool on the image grid, model version or None)``.
SegmentFunction = Callable[[str], "tuple[np.ndarray, str | None]"]


class ScoringUnavailable(InsightError):
    """The scoring method cannot run on this server (a model is missing); the message says why."""


class InsightScoringMethod(ScoringMethod):
    """Shared loop: for each image, score it unless already scored by the current model version.

    Args:
        name: the method's name, also the key of its records.
        description: shown in /info.
        insight_infer: the ``pe_insight`` infer task (``exclusive_predictor()``, ``model_version``).
    """

    def __init__(self, name: str, description: str, insight_infer: Any) -> None:
        super().__init__(description)
        self.name = name
        self.insight_infer = insight_infer

    def unavailable_reason(self) -> str | None:
        """Why this method cannot run now, or None."""
        if not getattr(self.insight_infer, "ready", False):
            return f"scoring '{self.name}' needs the pe_insight model, which is not loaded"
        return None

    def current_version(self) -> str | None:
        """The model version(s) a fresh score would come from (None: unknown, always re-score)."""
        return getattr(self.insight_infer, "model_version", None)

    def score_image(self, image_id: str, image_path: str) -> dict[str, dict[str, Any]]:
        """Records of one image, by method name (this method's among them, each with its
        ``model_version``). Raises InsightError for a bad image."""
        raise NotImplementedError

    def insight_pass(self, image_path: str) -> tuple[Any, dict[str, dict[str, Any]]]:
        """One pe_insight prediction: (PredictionResult, {"uncertainty": record, "diversity": record})."""
        with self.insight_infer.exclusive_predictor() as predictor:
            with EncoderFeatureCapture(predictor.model) as capture:
                result = predictor.predict_file(image_path)
            vector = capture.embedding()
        probability = round(float(result.pe_probability), 6)
        return result, {
            "uncertainty": {"value": round(binary_entropy(result.pe_probability), 6), "pe_probability": probability,
                            "model_version": result.model_version},
            "diversity": {"embedding": [round(float(v), 6) for v in vector], "dims": int(vector.size),
                          "pe_probability": probability, "model_version": result.model_version},
        }

    def __call__(self, request: dict[str, Any], datastore: Any,
                 should_stop: Callable[[], bool] | None = None) -> dict[str, Any]:
        reason = self.unavailable_reason()
        if reason:
            raise ScoringUnavailable(reason)
        started = time.perf_counter()
        force = bool(request.get("force", False))
        wanted = request.get("images")
        images = [i for i in datastore.list_images() if not wanted or i in set(wanted)]
        scored, skipped, failed, stopped = [], [], {}, False
        for image_id in images:
            if should_stop is not None and should_stop():
                stopped = True
                break
            info = datastore.get_image_info(image_id)
            version = self.current_version()
            previous = score_record(info, self.name)
            if not force and previous and version is not None and previous.get("model_version") == version:
                skipped.append(image_id)
                continue
            try:
                records = self.score_image(image_id, info["path"])
            except InsightError as err:
                failed[image_id] = str(err)
                logger.warning("scoring %s: %s failed: %s", self.name, image_id, err)
                continue
            self._write(datastore, image_id, records)
            scored.append(image_id)
        seconds = time.perf_counter() - started
        logger.info("scoring %s: %d scored, %d up to date, %d failed in %.1f s%s", self.name, len(scored),
                    len(skipped), len(failed), seconds, " (stopped)" if stopped else "")
        return {"method": self.name, "model_version": self.current_version(), "scored": scored,
                "up_to_date": len(skipped), "failed": failed, "stopped": stopped, "seconds": round(seconds, 2)}

    @staticmethod
    def _write(datastore: Any, image_id: str, records: dict[str, dict[str, Any]]) -> None:
        scored_at = utc_now_iso()

        def put(infos: dict[str, dict[str, Any]]) -> bool:
            info = infos.get(image_id)
            if info is None:  # removed meanwhile
                return False
            scores = dict(info.get(SCORES_KEY) or {})
            scores.update({name: {**record, "scored_at": scored_at} for name, record in records.items()})
            info[SCORES_KEY] = scores
            return True

        datastore.update_image_infos(put)


class UncertaintyScoring(InsightScoringMethod):
    def __init__(self, insight_infer: Any) -> None:
        super().__init__("uncertainty", "pe_insight's PE probability and its binary entropy (the 'uncertainty' "
                                        "strategy's score)", insight_infer)

    def score_image(self, image_id: str, image_path: str) -> dict[str, dict[str, Any]]:
        return self.insight_pass(image_path)[1]


class DiversityScoring(InsightScoringMethod):
    def __init__(self, insight_infer: Any) -> None:
        super().__init__("diversity", "Per-scan embedding: pooled INSIGHT encoder features (the 'diversity' "
                                      "strategy's space)", insight_infer)

    def score_image(self, image_id: str, image_path: str) -> dict[str, dict[str, Any]]:
        return self.insight_pass(image_path)[1]


class DisagreementScoring(InsightScoringMethod):
    """1 - Dice between the INSIGHT heatmap (at its finding threshold) and the segmentation mask.

    Args:
        insight_infer: the ``pe_insight`` infer task.
        segment: ``segment(image_id) -> (mask, version)`` running the segmentation model.
        segmentation_problem: why the segmentation model cannot be used now, or None.
        segmentation_version: the served segmentation model's version, or None when unknown.
        segmentation_model: its name (messages).
    """

    def __init__(self, insight_infer: Any, segment: SegmentFunction, segmentation_problem: Callable[[], str | None],
                 segmentation_version: Callable[[], str | None], segmentation_model: str = "pe_segmentation") -> None:
        super().__init__("disagreement", f"1 - Dice between the INSIGHT heatmap and {segmentation_model}'s mask "
                                         "(the 'disagreement' strategy's score)", insight_infer)
        self._segment = segment
        self._problem = segmentation_problem
        self._segmentation_version = segmentation_version
        self.segmentation_model = segmentation_model

    def unavailable_reason(self) -> str | None:
        problem = self._problem()
        if problem:
            return (f"scoring 'disagreement' compares the INSIGHT heatmap with the {self.segmentation_model} "
                    f"model: {problem}")
        return super().unavailable_reason()

    def current_version(self) -> str | None:
        insight_version, segmentation_version = super().current_version(), self._segmentation_version()
        if insight_version is None or segmentation_version is None:
            return None
        return f"{insight_version}|{segmentation_version}"

    def score_image(self, image_id: str, image_path: str) -> dict[str, dict[str, Any]]:
        result, records = self.insight_pass(image_path)
        heatmap = sitk.GetArrayViewFromImage(result.heatmap) >= result.finding_threshold
        mask, segmentation_version = self._segment(image_id)
        record: dict[str, Any] = dict(mask_disagreement(heatmap, mask))
        record["value"] = round(float(record["value"]), 6)
        record["dice"] = round(float(record["dice"]), 6)
        record["model_version"] = f"{result.model_version}|{segmentation_version or 'unknown'}"
        return {**records, "disagreement": record}


def segmentation_via_app(app: Any, model: str) -> SegmentFunction:
    """A ``segment`` function running ``model`` through ``app.infer`` (no label saved).

    The result file MONAI Label returns is read as a mask (label > 0) and deleted.

    Raises (from the returned function):
        InputError: the model gave no label file or one not readable as an image.
    """

    def segment(image_id: str) -> tuple[np.ndarray, str | None]:
        answer = app.infer({"model": model, "image": image_id, "save_label": False})
        path = answer.get("file") or answer.get("label")
        params = answer.get("params") if isinstance(answer.get("params"), dict) else {}
        if not isinstance(path, str) or not os.path.isfile(path):
            raise InputError(f"{model} returned no label file for {image_id}")
        try:
            mask = sitk.GetArrayFromImage(sitk.ReadImage(path)) > 0
        except RuntimeError as err:
            raise InputError(f"{model}'s label for {image_id} is not readable: {err}") from err
        finally:
            with contextlib.suppress(OSError):
                if not _inside(path, app.datastore()):
                    os.unlink(path)
        version = params.get("model_version") if isinstance(params.get("model_version"), str) else None
        return mask, version

    return segment


def _inside(path: str, datastore: Any) -> bool:
    """True when ``path`` is a datastore file (never delete those)."""
    root = getattr(datastore, "_datastore_path", None)
    if not root:
        return False
    return os.path.realpath(path).startswith(os.path.realpath(root) + os.sep)
