"""Out-of-distribution screening: how far a study's embedding lies from the training studies' embeddings.

Method (deep k-nearest-neighbour distance, as in Sun et al., "Out-of-distribution detection with deep
nearest neighbors", ICML 2022): every study is embedded with the model's own encoder
(:mod:`insight.embeddings`, unit-length vectors); its *OOD distance* is the Euclidean distance to its
k-th nearest neighbour among the reference (training) embeddings. A study farther than the calibrated
threshold gets the QA flag ``out_of_distribution`` (warn, ``check = "ood"``): the model has not seen
studies like it, so its findings may not be trustworthy. They are still returned.

Calibration (:func:`calibrate_ood`, CLI ``insight calibrate-ood``): the OOD distances of held-out
in-distribution studies (not in the reference set) are measured, and the threshold is set so that at
most ``target_false_alarm_rate`` of them would be flagged:

- ``empirical``: the m-th smallest of the n held-out distances, m = ceil((1 - a)(n + 1)) for target a
  (split-conformal rank). On new in-distribution studies exchangeable with the held-out ones the
  false-alarm rate is then (n - m + 1) / (n + 1) <= a (reported as ``expected_false_alarm_rate``);
  with fewer than (1 - a) / a studies (19 for a = 0.05) m is capped at n and the bound exceeds a.
- ``lognormal``: the upper (1 - a) prediction bound for one new log-distance from the n held-out
  log-distances under a normal model: exp(mean + t(n-1, 1-a) * sqrt(1 + 1/n) * sd), with Student's t
  so that fewer studies give a wider bound. It extrapolates past the largest distance when there are
  too few studies to resolve the target. Measured on 36 small phantoms (2000 random calibration
  draws, demo model): mean false-alarm rate 6.8 % from 3 held-out studies, 7.7 % from 6, 7.6 % from
  12, 6.1 % from 24 at a 5 % target (the plain normal quantile gave 17 %, 12 %, 9.3 %, 6.7 %), but
  one draw can be far off (90th percentile 17-27 %): calibrate on as many studies as there are.
- ``auto`` (default): ``empirical`` from 2/a held-out studies on (40 for a = 0.05), else ``lognormal``.

The false-alarm rate measured on the held-out set is stored with the threshold; :func:`evaluate_ood`
adds the rates measured on further in-distribution studies (false alarms) and out-of-distribution
studies (detections). Results on phantoms are results on phantoms.

Storage: a JSON sidecar beside the checkpoint, ``<checkpoint stem>.ood.json`` (``model.pt`` ->
``model.ood.json``, like ``model.training.json``), holding the reference embeddings, k, the threshold
and the measured rates (:meth:`OODCalibration.to_json`). :class:`insight.inference.InsightPredictor`
loads it when it exists and the model version matches; without it no OOD check runs.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np
from scipy import stats

from insight.embeddings.pooling import EMBEDDING_KIND
from insight.retrieval.vector_search import faiss
from insight.errors import InputError, ModelError
from insight.io.atomic import write_json_atomic
from insight.qa.flags import QAFlag, QAReport

__all__ = ["OOD_FLAG_CODE", "OOD_SIDECAR_SUFFIX", "OOD_FORMAT", "CalibrationMethod", "OODCalibration",
           "ood_sidecar_path", "calibrate_ood", "evaluate_ood", "knn_distances", "load_ood_for_checkpoint",
           "screen_out_of_distribution"]

logger = logging.getLogger(__name__)

OOD_FLAG_CODE = "out_of_distribution"
OOD_SIDECAR_SUFFIX = ".ood.json"
OOD_FORMAT = "insight-ood/1"
CalibrationMethod = Literal["auto", "empirical", "lognormal"]
_DECIMALS = 6


def ood_sidecar_path(checkpoint: str | os.PathLike) -> Path:
    """``<folder>/<checkpoint stem>.ood.json`` for ``<folder>/<stem>.pt``."""
    path = Path(checkpoint)
    return path.with_name(path.stem + OOD_SIDECAR_SUFFIX)


def knn_distances(reference: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Euclidean distance of each query to its k-th nearest reference vector, and that neighbour's row.

    Args:
        reference: float [R, D].
        queries: float [Q, D].
        k: neighbour rank, 1 = nearest; clipped to R.

    Returns:
        (distances float64 [Q], neighbour row indices int64 [Q]).
    """
    reference = np.ascontiguousarray(reference, dtype=np.float32)
    queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
    if reference.ndim != 2 or reference.shape[0] == 0:
        raise ValueError(f"reference embeddings must be [R >= 1, D], got shape {reference.shape}")
    if queries.shape[1] != reference.shape[1]:
        raise ValueError(f"embeddings have {queries.shape[1]} dims, the reference set {reference.shape[1]}")
    rank = min(max(int(k), 1), reference.shape[0])
    index = faiss.IndexFlatL2(reference.shape[1])
    index.add(reference)
    squared, rows = index.search(queries, rank)
    return np.sqrt(np.maximum(squared[:, rank - 1].astype(np.float64), 0.0)), rows[:, rank - 1].astype(np.int64)


def _threshold(scores: np.ndarray, target: float, method: CalibrationMethod) -> tuple[float, str, float | None]:
    """(threshold, method used, expected false-alarm rate on new studies for ``empirical`` else None)."""
    n = scores.size
    if method == "auto":
        method = "empirical" if n >= math.ceil(2.0 / target) else "lognormal"
    if method == "empirical":
        rank = min(max(math.ceil((1.0 - target) * (n + 1)), 1), n)  # 1-based split-conformal rank
        return float(np.sort(scores)[rank - 1]), "empirical", (n - rank + 1) / (n + 1)
    if method == "lognormal":
        if n < 2:
            raise InputError("the lognormal calibration needs at least 2 held-out studies")
        logs = np.log(np.maximum(scores, 1e-9))
        spread = float(np.std(logs, ddof=1))
        bound = float(np.mean(logs) + stats.t.ppf(1.0 - target, n - 1) * math.sqrt(1.0 + 1.0 / n) * spread)
        return float(math.exp(bound)), "lognormal", None
    raise InputError(f"unknown calibration method {method!r} (auto, empirical or lognormal)")


@dataclass
class OODCalibration:
    """A calibrated out-of-distribution check for one model version.

    Attributes:
        model_version: the checkpoint version whose encoder made every embedding here.
        reference: float32 [R, D] unit-length embeddings of the reference (training) studies.
        reference_names: their case names (R).
        k: neighbour rank of the OOD distance (1 = nearest reference study).
        threshold: OOD distances above this are flagged (Euclidean, unit-length embeddings: 0 to 2).
        target_false_alarm_rate: the fraction of in-distribution studies the threshold was set to flag.
        calibration: what calibration measured: ``method``, ``n_held_out``, ``false_alarm_rate`` on the
            held-out set, ``expected_false_alarm_rate`` (empirical method), the held-out ``names`` and
            ``distances``.
        evaluation: rates measured after calibration (:func:`evaluate_ood`), empty until then.
        embedding_kind: the embedding definition (:data:`insight.embeddings.EMBEDDING_KIND`).
        created: UTC time of calibration (ISO 8601).
    """

    model_version: str
    reference: np.ndarray
    reference_names: list[str]
    k: int
    threshold: float
    target_false_alarm_rate: float
    calibration: dict[str, Any] = field(default_factory=dict)
    evaluation: dict[str, Any] = field(default_factory=dict)
    embedding_kind: str = EMBEDDING_KIND
    created: str = ""

    def __post_init__(self) -> None:
        self.reference = np.ascontiguousarray(self.reference, dtype=np.float32)
        if self.reference.ndim != 2 or self.reference.shape[0] < 1:
            raise ValueError(f"reference embeddings must be [R >= 1, D], got shape {self.reference.shape}")
        if len(self.reference_names) != self.reference.shape[0]:
            raise ValueError(f"{len(self.reference_names)} reference names for {self.reference.shape[0]} embeddings")
        if self.k < 1:
            raise ValueError(f"k must be >= 1, got {self.k}")
        if not (math.isfinite(self.threshold) and self.threshold >= 0):
            raise ValueError(f"threshold must be a finite distance >= 0, got {self.threshold}")
        if not 0.0 < self.target_false_alarm_rate < 1.0:
            raise ValueError(f"target false-alarm rate must be in (0, 1), got {self.target_false_alarm_rate}")

    @property
    def dims(self) -> int:
        return int(self.reference.shape[1])

    def distance(self, embedding: np.ndarray) -> tuple[float, str]:
        """OOD distance of one embedding [D] and the name of the reference study it was measured to."""
        distances, rows = knn_distances(self.reference, np.asarray(embedding, dtype=np.float32)[None], self.k)
        return float(distances[0]), self.reference_names[int(rows[0])]

    def check(self, embedding: np.ndarray) -> QAReport:
        """The QA result of one study's embedding [D]: measurements always, the flag when it is too far."""
        distance, nearest = self.distance(embedding)
        report = QAReport(measurements={"ood_distance": round(distance, _DECIMALS),
                                        "ood_threshold": round(self.threshold, _DECIMALS)})
        if distance > self.threshold:
            report.flags.append(QAFlag(
                OOD_FLAG_CODE,
                f"the study is unlike the model's training studies: embedding distance {distance:.3f} to "
                f"{_neighbour(self.k)} of {self.reference.shape[0]} reference studies is above the "
                f"threshold {self.threshold:.3f} (calibrated for {self.target_false_alarm_rate:.0%} false alarms); "
                "the model's output may not be trustworthy",
                "warn", "ood",
                details={"distance": round(distance, _DECIMALS), "threshold": round(self.threshold, _DECIMALS),
                         "k": self.k, "nearest_reference": nearest,
                         "target_false_alarm_rate": self.target_false_alarm_rate,
                         "calibrated_false_alarm_rate": self.calibration.get("false_alarm_rate")}))
        return report

    # -- persistence ---------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {
            "format": OOD_FORMAT,
            "model_version": self.model_version,
            "embedding": {"kind": self.embedding_kind, "dims": self.dims},
            "method": "knn_distance", "metric": "euclidean", "k": self.k,
            "threshold": round(self.threshold, _DECIMALS),
            "target_false_alarm_rate": self.target_false_alarm_rate,
            "calibration": self.calibration,
            "evaluation": self.evaluation,
            "created": self.created,
            "reference": {"names": list(self.reference_names),
                          "embeddings": [[round(float(v), _DECIMALS) for v in row] for row in self.reference]},
        }

    @classmethod
    def from_json(cls, payload: dict[str, Any], source: str = "OOD calibration") -> "OODCalibration":
        """Parse :meth:`to_json`'s form (ModelError with ``source`` named when it is not one)."""
        if not isinstance(payload, dict) or payload.get("format") != OOD_FORMAT:
            raise ModelError(f"{source} is not an insight OOD calibration (format {OOD_FORMAT} expected)")
        try:
            reference = payload["reference"]
            return cls(model_version=str(payload["model_version"]),
                       reference=np.asarray(reference["embeddings"], dtype=np.float32),
                       reference_names=[str(n) for n in reference["names"]], k=int(payload["k"]),
                       threshold=float(payload["threshold"]),
                       target_false_alarm_rate=float(payload["target_false_alarm_rate"]),
                       calibration=dict(payload.get("calibration") or {}),
                       evaluation=dict(payload.get("evaluation") or {}),
                       embedding_kind=str(payload.get("embedding", {}).get("kind", "")),
                       created=str(payload.get("created", "")))
        except (KeyError, TypeError, ValueError) as err:
            raise ModelError(f"{source} is damaged: {err}") from err

    def save(self, path: str | os.PathLike) -> Path:
        """Write the JSON sidecar atomically; returns its path."""
        write_json_atomic(path, self.to_json())
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "OODCalibration":
        """Read a sidecar (ModelError when missing, unreadable or not one)."""
        path = Path(path)
        try:
            payload = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as err:
            raise ModelError(f"OOD calibration not found: {path}") from err
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ModelError(f"cannot read OOD calibration {path}: {err}") from err
        return cls.from_json(payload, str(path))


def _neighbour(k: int) -> str:
    return "the nearest" if k == 1 else f"the k={k}-th nearest"


def _matrix(vectors: Sequence[np.ndarray] | np.ndarray, what: str) -> np.ndarray:
    matrix = np.asarray(vectors, dtype=np.float32)
    if matrix.ndim != 2 or matrix.shape[0] == 0:
        raise InputError(f"{what}: no embeddings given")
    if not np.all(np.isfinite(matrix)):
        raise InputError(f"{what}: embeddings hold NaN or infinite values")
    return matrix


def calibrate_ood(reference: Sequence[np.ndarray] | np.ndarray, reference_names: Sequence[str],
                  held_out: Sequence[np.ndarray] | np.ndarray, held_out_names: Sequence[str], model_version: str,
                  target_false_alarm_rate: float = 0.05, k: int = 1,
                  method: CalibrationMethod = "auto") -> OODCalibration:
    """Calibrate the OOD threshold on held-out in-distribution embeddings.

    Args:
        reference: [R, D] embeddings of the training studies (what "in distribution" means).
        reference_names: their case names.
        held_out: [H, D] embeddings of other in-distribution studies, none of them in ``reference``.
        held_out_names: their case names.
        model_version: the checkpoint version of every embedding.
        target_false_alarm_rate: wanted fraction of in-distribution studies flagged, in (0, 0.5].
        k: neighbour rank of the OOD distance.
        method: how the threshold is set from the held-out distances (module docstring).

    Raises:
        InputError: empty or mismatched inputs, or a target outside (0, 0.5].
    """
    if not 0.0 < target_false_alarm_rate <= 0.5:
        raise InputError(f"target false-alarm rate must be in (0, 0.5], got {target_false_alarm_rate}")
    if k < 1:
        raise InputError(f"k must be >= 1, got {k}")
    ref = _matrix(reference, "reference studies")
    held = _matrix(held_out, "held-out studies")
    if len(reference_names) != ref.shape[0] or len(held_out_names) != held.shape[0]:
        raise InputError("each embedding needs exactly one name")
    if held.shape[1] != ref.shape[1]:
        raise InputError(f"held-out embeddings have {held.shape[1]} dims, the reference ones {ref.shape[1]}")
    if k > ref.shape[0]:
        raise InputError(f"k = {k} needs at least {k} reference studies, got {ref.shape[0]}")
    distances, _ = knn_distances(ref, held, k)
    duplicates = [name for name, d in zip(held_out_names, distances) if d < 1e-4]
    if duplicates:
        logger.warning("held-out studies %s duplicate reference studies: the calibration is optimistic",
                       ", ".join(duplicates))
    threshold, used, expected = _threshold(distances, target_false_alarm_rate, method)
    flagged = int(np.sum(distances > threshold))
    enough = math.ceil((1.0 - target_false_alarm_rate) / target_false_alarm_rate)
    note = None
    if held.shape[0] < enough:
        note = (f"only {held.shape[0]} held-out studies: a {target_false_alarm_rate:.0%} false-alarm rate cannot be "
                f"verified on fewer than {enough}; the rate on new studies may be far off")
        logger.warning("OOD calibration: %s", note)
    calibration = {
        "method": used, "n_reference": int(ref.shape[0]), "n_held_out": int(held.shape[0]),
        "false_alarm_rate": round(flagged / held.shape[0], 4), "false_alarms": flagged,
        "expected_false_alarm_rate": round(expected, 4) if expected is not None else None,
        "names": list(held_out_names), "distances": [round(float(d), _DECIMALS) for d in distances],
        "note": note,
    }
    logger.info("OOD threshold %.4f (%s, k=%d) from %d held-out studies against %d reference studies: "
                "%d of %d held-out flagged (%.1f%%; target %.1f%%)", threshold, used, k, held.shape[0],
                ref.shape[0], flagged, held.shape[0], 100.0 * flagged / held.shape[0], 100.0 * target_false_alarm_rate)
    return OODCalibration(model_version=model_version, reference=ref, reference_names=list(reference_names), k=k,
                          threshold=threshold, target_false_alarm_rate=target_false_alarm_rate,
                          calibration=calibration,
                          created=dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat())


def evaluate_ood(calibration: OODCalibration, in_distribution: Sequence[np.ndarray] | np.ndarray = (),
                 in_names: Sequence[str] = (), out_of_distribution: Sequence[np.ndarray] | np.ndarray = (),
                 out_names: Sequence[str] = ()) -> dict[str, Any]:
    """Measure the calibrated check on studies it was not calibrated on; stored in ``calibration.evaluation``.

    Returns:
        ``{"in_distribution": {"n", "false_alarm_rate", "flagged", "names", "distances"},
        "out_of_distribution": {"n", "detection_rate", "missed", "names", "distances"}}`` (a set left
        out when no embedding was given for it).
    """
    evaluation: dict[str, Any] = {}
    for key, vectors, names, rate_key, other_key in (
            ("in_distribution", in_distribution, in_names, "false_alarm_rate", "flagged"),
            ("out_of_distribution", out_of_distribution, out_names, "detection_rate", "missed")):
        if len(names) == 0:
            continue
        matrix = _matrix(vectors, key.replace("_", "-") + " studies")
        distances, _ = knn_distances(calibration.reference, matrix, calibration.k)
        flagged = distances > calibration.threshold
        listed = [n for n, f in zip(names, flagged) if (f if key == "in_distribution" else not f)]
        evaluation[key] = {"n": len(names), rate_key: round(float(flagged.mean()), 4), other_key: listed,
                           "names": list(names), "distances": [round(float(d), _DECIMALS) for d in distances]}
        logger.info("OOD evaluation, %s: %d of %d flagged (%.1f%%)", key.replace("_", " "), int(flagged.sum()),
                    len(names), 100.0 * flagged.mean())
    calibration.evaluation = evaluation
    return evaluation


def load_ood_for_checkpoint(checkpoint: str | os.PathLike, model_version: str) -> OODCalibration | None:
    """The OOD sidecar of ``checkpoint`` when it exists, else None.

    Raises:
        ModelError: the sidecar exists but is unreadable, was calibrated for another model version, or
            for another embedding definition (the caller reports it; predictions go on without OOD).
    """
    path = ood_sidecar_path(checkpoint)
    if not path.is_file():
        return None
    calibration = OODCalibration.load(path)
    if calibration.model_version != model_version:
        raise ModelError(f"OOD calibration {path} is for model {calibration.model_version}, not {model_version}: "
                         "run insight calibrate-ood again")
    if calibration.embedding_kind != EMBEDDING_KIND:
        raise ModelError(f"OOD calibration {path} uses embedding {calibration.embedding_kind!r}, not "
                         f"{EMBEDDING_KIND!r}: run insight calibrate-ood again")
    return calibration


def screen_out_of_distribution(calibration: OODCalibration | None, embedding: np.ndarray | None,
                               unavailable: str | None = None) -> QAReport:
    """The OOD part of a study's QA; never raises (a broken check becomes a ``qa_check_failed`` flag).

    Args:
        calibration: the model's OOD calibration; None when it has none (then nothing is checked, unless
            ``unavailable`` says why a sidecar that exists could not be used).
        embedding: the study's embedding [D] from the prediction's forward pass.
        unavailable: why the model's OOD sidecar could not be loaded, when it could not.
    """
    from insight.qa.screening import _run  # the same never-raising wrapper as every other check

    report = QAReport()
    if unavailable:
        report.flags.append(QAFlag("ood_check_unavailable", f"the out-of-distribution check did not run: {unavailable}",
                                   "info", "ood"))
    elif calibration is not None:
        def check() -> QAReport:
            if embedding is None:
                raise ValueError("no embedding was computed for this study")
            return calibration.check(embedding)

        _run(report, "out of distribution", check)
    return report
