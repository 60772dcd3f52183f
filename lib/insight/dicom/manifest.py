"""The ingest manifest: one JSON file saying what was taken, what was skipped and why.

Layout of ``DST/manifest.json`` (schema ``insight.ingest/1``)::

    {"schema": "insight.ingest/1", "tool": "insight 0.1.0", "created": "<UTC ISO time of the run>",
     "deidentified": true,
     "deidentification": {"profile": ..., "table": ..., "dates": ..., "uids": ..., "private_tags": ...,
                          "secret": ...} | null,
     "source": "<SRC path, only with --keep-identities>",
     "counts": {"files_seen", "dicom_files", "series_found", "series_taken", "series_skipped", "files_skipped"},
     "series": [{"case", "status": "taken"|"skipped", "patient", "study", "series", "reason"?, "warnings",
                 "flags", "n_files", "volume"?, "dicom"?, "size_xyz"?, "spacing_xyz"?, "origin_lps"?,
                 "direction"?, ...}],
     "skipped_files": [{"source" | "source_id", "reason": {"code", "message"}, "case"?}]}

Paths inside are relative to DST. When de-identified, the manifest holds no names, IDs, dates,
descriptions, source paths (``source_id`` is a keyed hash) or original UIDs; UIDs in it are the
remapped ones. The file is written atomically, last, after all outputs it lists.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from insight.errors import InputError
from insight.io import write_json_atomic

__all__ = ["MANIFEST_NAME", "SCHEMA", "read_previous_outputs", "remove_stale_outputs", "write_manifest"]

logger = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
SCHEMA = "insight.ingest/1"
#: Top-level folders of DST that hold outputs listed in a manifest.
OUTPUT_FOLDERS = ("volumes", "dicom")


def read_previous_outputs(dst: Path) -> set[str]:
    """The output paths (relative to ``dst``) listed by an earlier run's manifest; empty if none.

    Raises:
        InputError: ``dst`` holds a manifest.json that ``insight ingest`` did not write.
    """
    path = dst / MANIFEST_NAME
    if not path.exists():
        return set()
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(f"{path} exists and is not an ingest manifest ({type(err).__name__}); "
                         "choose another --out folder or remove it") from err
    if not isinstance(payload, dict) or payload.get("schema") != SCHEMA:
        raise InputError(f"{path} exists and was not written by insight ingest; choose another --out folder")
    outputs = set()
    for entry in payload.get("series", []):
        for key in ("volume", "dicom"):
            if isinstance(entry, dict) and isinstance(entry.get(key), str):
                outputs.add(entry[key])
    return outputs


def remove_stale_outputs(dst: Path, previous: set[str], current: set[str]) -> list[str]:
    """Delete outputs of the previous run that this run did not produce; returns what was removed.

    Only paths under ``dst/volumes`` or ``dst/dicom`` are ever removed, whatever the old manifest says.
    """
    removed = []
    root = dst.resolve()
    for relative in sorted(previous - current):
        target = (dst / relative).resolve()
        try:
            inside = target.relative_to(root)
        except ValueError:
            continue
        if len(inside.parts) < 2 or inside.parts[0] not in OUTPUT_FOLDERS:
            continue
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
        else:
            continue
        removed.append(relative)
        logger.info("removed stale output of the previous run: %s", relative)
    return removed


def write_manifest(dst: Path, payload: dict) -> Path:
    """Write ``payload`` as ``dst/manifest.json`` atomically; returns the path."""
    path = dst / MANIFEST_NAME
    write_json_atomic(path, payload)
    return path
