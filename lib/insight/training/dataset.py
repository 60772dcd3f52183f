"""Weak-label data: a folder of volumes plus ``labels.csv`` (columns ``image``, ``pe``).

Only images and scan-level labels are read here: never masks. Each volume is preprocessed once
onto the model grid and kept in memory as float16 [Z, Y, X].
"""

from __future__ import annotations

import csv
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from insight.config import PreprocessConfig
from insight.errors import InputError
from insight.io.image_io import IMAGE_SUFFIXES, read_image
from insight.preprocessing import prepare_volume

__all__ = ["LabeledCase", "PreparedCase", "read_label_table", "prepare_cases", "LABELS_FILE"]

logger = logging.getLogger(__name__)

LABELS_FILE = "labels.csv"


@dataclass(frozen=True)
class LabeledCase:
    """One scan and its weak label (1 = PE, 0 = no PE)."""

    name: str
    image_path: Path
    label: int


@dataclass
class PreparedCase:
    """A scan on the model grid: ``volume`` [Z, Y, X] float16 in [0, 1], ``region`` [Z, Y, X] bool
    (where heatmap mass may lie; None = everywhere)."""

    name: str
    volume: torch.Tensor
    label: int
    region: torch.Tensor | None = None


def read_label_table(folder: str | os.PathLike, labels_file: str | os.PathLike | None = None) -> list[LabeledCase]:
    """Read ``labels.csv`` in ``folder`` and resolve each ``image`` to a file or DICOM folder.

    Raises:
        InputError: missing table or columns, a label other than 0/1, or images not found
            (all problems listed in one message).
    """
    root = Path(folder)
    table = Path(labels_file) if labels_file else root / LABELS_FILE
    if not table.is_file():
        raise InputError(f"no label table: {table} (a CSV with columns 'image' and 'pe')")
    with table.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        columns = set(reader.fieldnames or [])
        if not {"image", "pe"} <= columns:
            raise InputError(f"{table}: needs columns 'image' and 'pe', found {sorted(columns)}")
        rows = list(reader)
    cases, problems = [], []
    for line, row in enumerate(rows, start=2):
        name, raw = (row.get("image") or "").strip(), (row.get("pe") or "").strip()
        if raw not in ("0", "1"):
            problems.append(f"line {line}: pe must be 0 or 1, got {raw!r}")
            continue
        path = _resolve_image(root, name)
        if path is None:
            problems.append(f"line {line}: no image named {name!r} in {root}")
            continue
        cases.append(LabeledCase(name, path, int(raw)))
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise InputError(f"{table}: {shown}")
    if not cases:
        raise InputError(f"{table}: lists no images")
    return cases


def _resolve_image(root: Path, name: str) -> Path | None:
    if not name:
        return None
    for suffix in IMAGE_SUFFIXES:
        candidate = root / f"{name}{suffix}"
        if candidate.is_file():
            return candidate
    candidate = root / name
    return candidate if candidate.exists() else None


def prepare_cases(cases: list[LabeledCase], config: PreprocessConfig, progress: bool = True,
                  description: str = "preparing") -> list[PreparedCase]:
    """Read and preprocess every case once (orientation, spacing, HU window)."""
    prepared = []
    for case in tqdm(cases, desc=description, disable=not progress, unit="scan"):
        model_input = prepare_volume(read_image(case.image_path), config)
        volume = torch.from_numpy(np.ascontiguousarray(model_input.windowed)).to(torch.float16)
        region = torch.from_numpy(np.ascontiguousarray(model_input.region))
        prepared.append(PreparedCase(case.name, volume, case.label, region))
    return prepared
