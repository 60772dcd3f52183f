"""Scan-level labels for retrieval answers, from a ``labels.csv`` table (columns ``image``, ``pe``)."""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Union

from insight.errors import InputError

__all__ = ["LABELS_FILE", "Label", "read_label_table", "normalise_label"]

#: The label table a studies folder may hold (``insight phantom`` writes one).
LABELS_FILE = "labels.csv"
#: A scan-level label: 1 (PE), 0 (no PE), another string (e.g. ``"uncertain"``) or None (unknown).
Label = Union[int, str, None]


def normalise_label(value: object) -> Label:
    """``"1"``/1 -> 1, ``"0"``/0 -> 0, empty/None -> None, any other value -> its stripped text."""
    if value is None or isinstance(value, bool):
        return None if value is None else int(value)
    if isinstance(value, int) and value in (0, 1):
        return value
    text = str(value).strip()
    if text in ("0", "1"):
        return int(text)
    return text or None


def read_label_table(path: str | os.PathLike) -> dict[str, Label]:
    """``{image: label}`` from a CSV with columns ``image`` and ``pe``.

    Raises:
        InputError: the file cannot be read or lacks those columns.
    """
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            if not reader.fieldnames or not {"image", "pe"} <= set(reader.fieldnames):
                raise InputError(f"{path}: a label table needs the columns 'image' and 'pe'")
            return {row["image"].strip(): normalise_label(row["pe"]) for row in reader if row.get("image")}
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise InputError(f"cannot read label table {path}: {err}") from err
