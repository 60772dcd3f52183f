"""A reading worklist: studies ordered by PE probability and QA state, none left out.

Each study lands in one priority group, and the groups come in this order:

1. ``suspected_pe``: QA passed or warned, and the PE probability is at least the flag threshold;
2. ``qa_failed``: QA failed (``not_ctpa``, corrupted slices, ...): the model's output cannot be trusted
   either way, so the study needs a read without it, before the studies the model cleared;
3. ``not_analysed``: the study could not be analysed at all (unreadable image or prediction file);
4. ``routine``: QA passed or warned, and the probability is below the flag threshold.

Within a group: highest probability first, then by name. Every entry carries a ``state`` line for a
human (``"QA failed (not_ctpa): read without the model"``), the QA verdict and flag codes, so a study
that failed QA is visible as such and never silently dropped.

Input is the JSON that ``insight predict`` and the server's ``/infer`` produce
(:meth:`insight.inference.PredictionResult.to_json`): ``name``, ``pe_probability``, ``qa`` and
``model_version`` are read; an ``error`` key marks a study that could not be analysed.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Literal

__all__ = ["DEFAULT_FLAG_THRESHOLD", "PRIORITY_ORDER", "Priority", "WorklistEntry", "Worklist", "build_worklist",
           "entry_from_prediction", "read_prediction_folder", "read_prediction_file"]

logger = logging.getLogger(__name__)

#: PE probability from which a study that passed QA is ``suspected_pe``.
DEFAULT_FLAG_THRESHOLD = 0.5
Priority = Literal["suspected_pe", "qa_failed", "not_analysed", "routine"]
#: The groups, most urgent first.
PRIORITY_ORDER: tuple[str, ...] = ("suspected_pe", "qa_failed", "not_analysed", "routine")


@dataclass
class WorklistEntry:
    """One study on the worklist.

    Attributes:
        name: the study's name (image id).
        priority: its group (module docstring).
        state: one line for a human saying why it is where it is.
        pe_probability: the model's scan-level probability, None when not analysed.
        qa_verdict: ``pass``, ``warn``, ``fail``, ``not_run``, or None when not analysed.
        qa_codes: the QA flag codes (warnings and failures; info flags left out).
        qa_summary: the QA summary line ("" when QA passed).
        model_version: the model that produced the probability.
        source: the image it was computed from, when known.
        prediction: the prediction JSON file it was read from, when read from one.
        error: why the study could not be analysed (``not_analysed`` only).
        rank: 1-based position on the worklist (set by :func:`build_worklist`).
    """

    name: str
    priority: Priority
    state: str
    pe_probability: float | None = None
    qa_verdict: str | None = None
    qa_codes: list[str] = field(default_factory=list)
    qa_summary: str = ""
    model_version: str | None = None
    source: str | None = None
    prediction: str | None = None
    error: str | None = None
    rank: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Worklist:
    """Entries in reading order, with counts per group and the files that were not predictions."""

    entries: list[WorklistEntry]
    flag_threshold: float
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def counts(self) -> dict[str, int]:
        return {p: sum(e.priority == p for e in self.entries) for p in PRIORITY_ORDER}

    def to_json(self) -> dict[str, Any]:
        return {"flag_threshold": self.flag_threshold, "counts": self.counts,
                "worklist": [e.to_dict() for e in self.entries], "skipped_files": self.skipped}

    def to_table(self) -> str:
        """A plain-text table, one study per line."""
        lines = [f"{'rank':>4}  {'p(PE)':>6}  {'priority':<13} {'name':<28} state"]
        for e in self.entries:
            p = f"{e.pe_probability:.3f}" if e.pe_probability is not None else "-"
            lines.append(f"{e.rank:>4}  {p:>6}  {e.priority:<13} {e.name:<28} {e.state}")
        return "\n".join(lines)


def _serious_codes(qa: dict[str, Any]) -> list[str]:
    flags = qa.get("flags") or []
    return list(dict.fromkeys(str(f.get("code")) for f in flags
                              if isinstance(f, dict) and f.get("severity", "warn") != "info" and f.get("code")))


def entry_from_prediction(prediction: dict[str, Any], flag_threshold: float = DEFAULT_FLAG_THRESHOLD,
                          prediction_file: str | None = None) -> WorklistEntry:
    """The worklist entry of one prediction JSON object (an ``error`` key makes it ``not_analysed``)."""
    name = str(prediction.get("image") or prediction.get("name") or (Path(prediction_file).stem if prediction_file
                                                                      else "unnamed"))
    source, version = prediction.get("source"), prediction.get("model_version")
    if prediction.get("error"):
        return WorklistEntry(name, "not_analysed", f"not analysed: {prediction['error']}", source=source,
                             model_version=version, prediction=prediction_file, error=str(prediction["error"]))
    raw = prediction.get("pe_probability")
    probability = float(raw) if isinstance(raw, (int, float)) and not isinstance(raw, bool) else math.nan
    if not (math.isfinite(probability) and 0.0 <= probability <= 1.0):
        message = f"the prediction has no valid pe_probability ({raw!r})"
        return WorklistEntry(name, "not_analysed", f"not analysed: {message}", source=source, model_version=version,
                             prediction=prediction_file, error=message)
    qa = prediction.get("qa") if isinstance(prediction.get("qa"), dict) else {}
    verdict = str(qa.get("verdict") or "not_run")
    codes = _serious_codes(qa)
    listed = f" ({', '.join(codes)})" if codes else ""
    if verdict == "fail":
        priority: Priority = "qa_failed"
        state = f"QA failed{listed}: the model's output is not trustworthy; read without it (p={probability:.3f})"
    else:
        suspected = probability >= flag_threshold
        priority = "suspected_pe" if suspected else "routine"
        state = f"{'PE suspected' if suspected else 'no PE suspected'} (p={probability:.3f})"
        if verdict == "warn":
            state += f"; QA warning{listed}"
        elif verdict != "pass":
            state += "; QA not run"
    return WorklistEntry(name, priority, state, probability, verdict, codes, str(qa.get("summary") or ""), version,
                         source, prediction_file)


def read_prediction_file(path: str | os.PathLike, flag_threshold: float = DEFAULT_FLAG_THRESHOLD
                         ) -> WorklistEntry | None:
    """The entry of one prediction JSON file; None for a JSON file that is not a prediction.

    An unreadable file, or a JSON object naming a study without a valid probability, gives a
    ``not_analysed`` entry: a study is never dropped because its file is damaged.
    """
    path = Path(path)
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        return WorklistEntry(path.stem, "not_analysed", f"not analysed: cannot read {path.name} ({err})",
                             prediction=str(path), error=f"cannot read {path.name}: {err}")
    if not isinstance(payload, dict) or not ({"pe_probability", "error", "qa"} & set(payload)):
        return None
    return entry_from_prediction(payload, flag_threshold, str(path))


def read_prediction_folder(folder: str | os.PathLike, flag_threshold: float = DEFAULT_FLAG_THRESHOLD
                           ) -> tuple[list[WorklistEntry], dict[str, str]]:
    """Entries of every ``*.json`` prediction directly in ``folder``, and the JSON files that were not
    predictions (with why they were left out)."""
    entries: list[WorklistEntry] = []
    skipped: dict[str, str] = {}
    for path in sorted(Path(folder).glob("*.json")):
        if path.name.startswith("."):
            continue
        entry = read_prediction_file(path, flag_threshold)
        if entry is None:
            skipped[str(path)] = "not a prediction (no pe_probability, qa or error key)"
            logger.info("%s: not a prediction JSON, left out of the worklist", path)
        else:
            entries.append(entry)
    return entries, skipped


def build_worklist(entries: Iterable[WorklistEntry], flag_threshold: float = DEFAULT_FLAG_THRESHOLD,
                   skipped: dict[str, str] | None = None) -> Worklist:
    """Order ``entries`` (module docstring) and number them from 1."""
    def key(entry: WorklistEntry) -> tuple:
        p = entry.pe_probability
        return (PRIORITY_ORDER.index(entry.priority), -(p if p is not None else -1.0), entry.name)

    ordered = sorted(entries, key=key)
    for rank, entry in enumerate(ordered, start=1):
        entry.rank = rank
    return Worklist(ordered, flag_threshold, dict(skipped or {}))
