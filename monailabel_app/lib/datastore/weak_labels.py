"""Weak (scan-level) labels: does this scan show a pulmonary embolism? 1, 0 or "uncertain".

Kept in each image's datastore info under ``weak_label``::

    {"pe": 1, "source": "rest" | "labels.csv", "set_by": "<user>", "set_at": "<ISO 8601 UTC>", "note": str | None}

Set over REST (``PUT /insight/weak-labels/{image}``) or imported at server start from
``<studies>/labels.csv`` (columns ``image`` and ``pe``, as ``insight phantom`` writes it). A label
set over REST is a clinician's later word: the file never overrides it. Rows of the file for images
not in the datastore, and rows with bad values, are skipped and reported (logged), never fatal.

Only ``0`` and ``1`` train ``pe_insight``; ``uncertain`` scans are kept out of training.
"""

from __future__ import annotations

import csv
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from insight.errors import InputError
from lib.datastore.provenance import utc_now_iso

__all__ = ["WEAK_LABEL_KEY", "UNCERTAIN", "LABELS_FILE", "SOURCE_REST", "SOURCE_FILE", "parse_weak_label",
           "weak_label_record", "weak_label_of", "ImportReport", "import_label_table"]

logger = logging.getLogger(__name__)

#: Image-info key holding the weak label record.
WEAK_LABEL_KEY = "weak_label"
#: The third weak-label value: a clinician could not decide.
UNCERTAIN = "uncertain"
#: The label table read at start, in the studies folder.
LABELS_FILE = "labels.csv"
SOURCE_REST = "rest"
SOURCE_FILE = LABELS_FILE
_MAX_NOTE = 2000


def parse_weak_label(value: Any) -> int | str:
    """``0``/``1`` (int or string) or ``"uncertain"`` -> 0, 1 or ``"uncertain"``.

    Raises:
        InputError: anything else (booleans, other numbers or words, missing value).
    """
    if isinstance(value, bool):
        raise InputError(f"pe must be 0, 1 or {UNCERTAIN!r}, got {value!r} (a boolean)")
    if isinstance(value, int) and value in (0, 1):
        return value
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("0", "1"):
            return int(text)
        if text == UNCERTAIN:
            return UNCERTAIN
    raise InputError(f"pe must be 0, 1 or {UNCERTAIN!r}, got {value!r}")


def weak_label_record(value: Any, source: str, set_by: str | None, note: Any = None) -> dict[str, Any]:
    """A validated ``weak_label`` record (see the module docstring).

    Raises:
        InputError: a bad value or a note that is not a string of at most 2000 characters.
    """
    if note is not None and not isinstance(note, str):
        raise InputError(f"note must be a string, got {type(note).__name__}")
    if note is not None and len(note) > _MAX_NOTE:
        raise InputError(f"note is {len(note)} characters long (at most {_MAX_NOTE})")
    return {"pe": parse_weak_label(value), "source": source, "set_by": set_by or "anonymous",
            "set_at": utc_now_iso(), "note": note or None}


def weak_label_of(info: Mapping[str, Any]) -> int | str | None:
    """The weak label (0, 1, "uncertain") in an image info, or None when it has none."""
    record = info.get(WEAK_LABEL_KEY)
    if not isinstance(record, Mapping):
        return None
    try:
        return parse_weak_label(record.get("pe"))
    except InputError:
        return None


@dataclass
class ImportReport:
    """What :func:`import_label_table` did."""

    table: str
    imported: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    kept_rest: list[str] = field(default_factory=list)
    unknown_images: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"table": self.table, "imported": len(self.imported), "unchanged": len(self.unchanged),
                "kept_rest": len(self.kept_rest), "unknown_images": self.unknown_images[:20],
                "problems": self.problems[:20]}


def _read_rows(table: Path) -> list[dict[str, str]]:
    """The CSV's rows. Raises InputError for an unreadable file or missing columns."""
    try:
        with table.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            columns = set(reader.fieldnames or [])
            if not {"image", "pe"} <= columns:
                raise InputError(f"{table}: needs columns 'image' and 'pe', found {sorted(columns)}")
            return list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise InputError(f"cannot read {table}: {err}") from err


def import_label_table(datastore: Any, studies_dir: str | os.PathLike) -> ImportReport | None:
    """Import ``<studies_dir>/labels.csv`` into the image infos of ``datastore`` (a CampaignDatastore).

    Idempotent: writes the datastore file only when a value changes. Returns None when there is no
    table; problems (bad rows, unknown images, an unreadable file) are reported, not raised.
    """
    table = Path(studies_dir) / LABELS_FILE
    if not table.is_file():
        return None
    report = ImportReport(str(table))
    try:
        rows = _read_rows(table)
    except InputError as err:
        report.problems.append(str(err))
        logger.error("weak labels NOT imported: %s", err)
        return report

    wanted: dict[str, int | str] = {}
    for line, row in enumerate(rows, start=2):
        name = (row.get("image") or "").strip()
        try:
            value = parse_weak_label((row.get("pe") or "").strip())
        except InputError as err:
            report.problems.append(f"line {line} ({name or 'no image'}): {err}")
            continue
        if not name:
            report.problems.append(f"line {line}: no image name")
            continue
        wanted[name] = value

    def apply(infos: dict[str, dict[str, Any]]) -> bool:
        changed = False
        for name, value in wanted.items():
            info = infos.get(name)
            if info is None:
                report.unknown_images.append(name)
                continue
            current = info.get(WEAK_LABEL_KEY) if isinstance(info.get(WEAK_LABEL_KEY), dict) else None
            if current and current.get("source") == SOURCE_REST:
                report.kept_rest.append(name)
            elif current and current.get("pe") == value:
                report.unchanged.append(name)
            else:
                info[WEAK_LABEL_KEY] = weak_label_record(value, SOURCE_FILE, "labels.csv")
                report.imported.append(name)
                changed = True
        return changed

    datastore.update_image_infos(apply)
    logger.info("weak labels from %s: %d imported, %d unchanged, %d kept (set over REST), %d unknown images, "
                "%d bad rows", table, len(report.imported), len(report.unchanged), len(report.kept_rest),
                len(report.unknown_images), len(report.problems))
    for problem in report.problems[:20]:
        logger.warning("labels.csv: %s", problem)
    if report.unknown_images:
        logger.warning("labels.csv names images not in the datastore: %s", ", ".join(report.unknown_images[:20]))
    return report
