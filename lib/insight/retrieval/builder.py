"""Embed studies into a case index: build one from scratch, or add studies as they arrive.

An index holds embeddings of one model version only. When studies are added with another model
version, every entry already there is re-embedded from its recorded source first (a source that is
gone is dropped, and the update says so), so the index is rebuilt rather than mixed.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from insight.embeddings import CaseEmbedder
from insight.errors import InputError, InsightError
from insight.io.image_io import case_name, find_images
from insight.retrieval.index import CaseIndex
from insight.retrieval.labels import LABELS_FILE, Label, read_label_table

__all__ = ["IndexUpdate", "gather_images", "case_id_for", "build_index", "add_to_index"]

logger = logging.getLogger(__name__)


@dataclass
class IndexUpdate:
    """What an update did.

    Attributes:
        index: the saved index.
        added: ids embedded and added for the first time.
        replaced: ids re-embedded (given again, or rebuilt for a new model version).
        rebuilt: True when the index was emptied for a new model version and rebuilt.
        dropped: ids removed during a rebuild, with why (their source could not be read).
        failed: inputs that could not be embedded, with why (nothing was added for them).
        seconds: wall time of the update.
    """

    index: CaseIndex
    added: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    rebuilt: bool = False
    dropped: dict[str, str] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return {"index": str(self.index.folder), "model_version": self.index.model_version, "cases": len(self.index),
                "added": self.added, "replaced": self.replaced, "rebuilt": self.rebuilt, "dropped": self.dropped,
                "failed": self.failed, "seconds": round(self.seconds, 2)}


def gather_images(inputs: Iterable[str | os.PathLike]) -> tuple[list[Path], dict[str, Label]]:
    """Image paths and labels from inputs that are image files, DICOM series folders or folders of images.

    A folder holding image files contributes them (not recursively) and its ``labels.csv``, if any; a
    folder without image files is taken as one DICOM series.

    Raises:
        InputError: an input does not exist.
    """
    images: list[Path] = []
    labels: dict[str, Label] = {}
    for item in inputs:
        path = Path(item)
        if not path.exists():
            raise InputError(f"input not found: {path}")
        if path.is_dir():
            found = find_images(path)
            images.extend(found or [path])
            if (path / LABELS_FILE).is_file():
                labels.update(read_label_table(path / LABELS_FILE))
        else:
            images.append(path)
    return images, labels


def case_id_for(path: str | os.PathLike) -> str:
    """The case id of an input: its case name (file name without the image extension)."""
    return case_name(path)


def _embed_into(index: CaseIndex, embedder: CaseEmbedder, images: Sequence[Path], labels: Mapping[str, Label],
                update: IndexUpdate) -> None:
    seen: dict[str, Path] = {}
    for path in images:
        case_id = case_id_for(path)
        if case_id in seen and seen[case_id] != path:
            logger.warning("%s and %s share the case id %r: the later one is indexed", seen[case_id], path, case_id)
        seen[case_id] = path
        try:
            case = embedder.embed_file(path)
        except InsightError as err:
            update.failed[str(path)] = str(err)
            logger.error("%s: not indexed: %s", path, err)
            continue
        label = labels.get(case_id, index.case(case_id).label if case_id in index else None)
        replaced = index.add(case_id, case.vector, label, str(path.resolve()))
        (update.replaced if replaced else update.added).append(case_id)
        logger.info("%s: indexed (%d dims, %.1f s)", case_id, case.vector.size, case.seconds)


def build_index(folder: str | os.PathLike, embedder: CaseEmbedder, images: Sequence[Path],
                labels: Mapping[str, Label] | None = None, model_path: str | None = None) -> IndexUpdate:
    """A new index of ``images`` in ``folder`` (an index already there is replaced when this one is saved)."""
    start = time.perf_counter()
    index = CaseIndex(folder, embedder.dims, embedder.model_version, model_path)
    update = IndexUpdate(index)
    _embed_into(index, embedder, images, labels or {}, update)
    index.save()
    update.seconds = time.perf_counter() - start
    return update


def add_to_index(folder: str | os.PathLike, embedder: CaseEmbedder, images: Sequence[Path],
                 labels: Mapping[str, Label] | None = None, model_path: str | None = None) -> IndexUpdate:
    """Add (or re-embed) ``images`` into the index in ``folder``, creating it when there is none.

    When the index was built with another model version, its cases are first re-embedded from their
    sources with ``embedder`` (the rebuild).
    """
    start = time.perf_counter()
    if CaseIndex.exists(folder):
        index = CaseIndex.open(folder)
    else:
        index = CaseIndex(folder, embedder.dims, embedder.model_version, model_path)
    update = IndexUpdate(index)
    if index.model_version != embedder.model_version or index.dims != embedder.dims:
        previous = index.cases()
        logger.warning("case index %s holds model %s embeddings; rebuilding its %d cases with model %s", folder,
                       index.model_version, len(previous), embedder.model_version)
        index.clear(embedder.model_version, embedder.dims, model_path)
        update.rebuilt = True
        sources = []
        for case in previous:
            if case.source and Path(case.source).exists():
                sources.append(Path(case.source))
            else:
                update.dropped[case.case_id] = f"its source {case.source} is gone"
                logger.warning("%s: dropped from the index: its source %s is gone", case.case_id, case.source)
        old_labels = {case.case_id: case.label for case in previous}
        _embed_into(index, embedder, sources, {**old_labels, **(labels or {})}, update)
        for case in previous:
            if case.case_id not in index and case.case_id not in update.dropped:
                update.dropped[case.case_id] = f"its source {case.source} could not be embedded again"
        for case_id in update.added:  # everything embedded so far was already in the index
            update.replaced.append(case_id)
        update.added.clear()
    elif model_path is not None:
        index.model_path = model_path
    _embed_into(index, embedder, images, labels or {}, update)
    index.save()
    update.seconds = time.perf_counter() - start
    return update
