"""A folder holding a faiss index of case embeddings and its JSON sidecar.

Layout of an index folder::

    index.json              sidecar: format, model version and path, embedding kind and dims, the
                            vectors file's name, and one entry per case (id, faiss id, label, source)
    vectors-<gen>.faiss     faiss IndexIDMap2(IndexFlatIP): exact inner product over unit vectors

Saving writes a new ``vectors-<gen>.faiss`` (atomic rename), then replaces ``index.json`` (atomic
rename) naming it, then removes older vectors files: a reader sees either the old index or the new
one, whole, never a mix, and a crash mid-save leaves the previous index intact.

Scores are inner products of unit-length embeddings, i.e. cosine similarities in [-1, 1]: 1 for the
same study, near 1 for a near-duplicate.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from insight.embeddings.pooling import EMBEDDING_KIND
from insight.errors import InputError
from insight.io.atomic import atomic_output, write_json_atomic
from insight.retrieval.labels import Label, normalise_label
from insight.retrieval.vector_search import faiss

__all__ = ["INDEX_FORMAT", "INDEX_JSON", "IndexedCase", "SimilarCase", "CaseIndex"]

logger = logging.getLogger(__name__)

INDEX_FORMAT = "insight-case-index/1"
INDEX_JSON = "index.json"
_VECTORS_PREFIX = "vectors-"
_VECTORS_SUFFIX = ".faiss"
_SCORE_DECIMALS = 6


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()


@dataclass
class IndexedCase:
    """One case in the index.

    Attributes:
        case_id: the case's name (image id on the server; file name without extension on the CLI).
        faiss_id: its id inside the faiss index.
        label: its scan-level label (1, 0, another string, or None when unknown).
        source: where it was read from, so the index can be rebuilt for a new model version.
        added: UTC time it was (last) embedded, ISO 8601.
    """

    case_id: str
    faiss_id: int
    label: Label = None
    source: str | None = None
    added: str = ""


@dataclass
class SimilarCase:
    """One answer of :meth:`CaseIndex.search`: rank 1 is the most similar."""

    rank: int
    case_id: str
    score: float
    label: Label
    source: str | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class CaseIndex:
    """Case embeddings with ids and labels, searchable by cosine similarity, persisted in ``folder``.

    Not thread-safe: callers sharing one index across threads hold :attr:`lock` around use.

    Args:
        folder: the index folder (created on :meth:`save`).
        dims: embedding length.
        model_version: the checkpoint version of every embedding in it.
        model_path: the checkpoint's path, when known (the CLI re-opens it for queries and updates).
    """

    def __init__(self, folder: str | os.PathLike, dims: int, model_version: str, model_path: str | None = None,
                 embedding_kind: str = EMBEDDING_KIND) -> None:
        if dims < 1:
            raise ValueError(f"dims must be >= 1, got {dims}")
        self.folder = Path(folder)
        self.dims = int(dims)
        self.model_version = model_version
        self.model_path = model_path
        self.embedding_kind = embedding_kind
        self.lock = threading.RLock()
        self._faiss = faiss.IndexIDMap2(faiss.IndexFlatIP(self.dims))
        self._cases: dict[str, IndexedCase] = {}
        self._next_id = 0
        self._generation = 0
        self.updated = ""

    # -- opening ---------------------------------------------------------------------------------------
    @staticmethod
    def exists(folder: str | os.PathLike) -> bool:
        return (Path(folder) / INDEX_JSON).is_file()

    @classmethod
    def open(cls, folder: str | os.PathLike) -> "CaseIndex":
        """Load the index in ``folder``.

        Raises:
            InputError: there is none, or its files are unreadable or disagree.
        """
        folder = Path(folder)
        for attempt in range(3):  # a save in another process may remove the vectors file just read of
            sidecar = cls._read_sidecar(folder)
            try:
                return cls._from_sidecar(folder, sidecar)
            except FileNotFoundError:
                if attempt == 2:
                    raise InputError(f"case index {folder} names a vectors file that is missing: rebuild it "
                                     "with insight index build") from None
        raise AssertionError("unreachable")

    @staticmethod
    def _read_sidecar(folder: Path) -> dict[str, Any]:
        path = folder / INDEX_JSON
        try:
            payload = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as err:
            raise InputError(f"no case index in {folder} (no {INDEX_JSON}): build one with insight index build") from err
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise InputError(f"cannot read case index {path}: {err}") from err
        if not isinstance(payload, dict) or payload.get("format") != INDEX_FORMAT:
            raise InputError(f"{path} is not an insight case index (format {INDEX_FORMAT} expected)")
        return payload

    @classmethod
    def _from_sidecar(cls, folder: Path, sidecar: dict[str, Any]) -> "CaseIndex":
        try:
            embedding = sidecar["embedding"]
            index = cls(folder, int(embedding["dims"]), str(sidecar["model_version"]), sidecar.get("model_path"),
                        str(embedding.get("kind", "")))
            cases = [IndexedCase(str(c["id"]), int(c["faiss_id"]), normalise_label(c.get("label")), c.get("source"),
                                 str(c.get("added", ""))) for c in sidecar["cases"]]
            vectors_file = str(sidecar["vectors_file"])
            generation = int(sidecar.get("generation", 0))
        except (KeyError, TypeError, ValueError) as err:
            raise InputError(f"case index {folder / INDEX_JSON} is damaged: {err}") from err
        if Path(vectors_file).name != vectors_file:
            raise InputError(f"case index {folder / INDEX_JSON} names an odd vectors file {vectors_file!r}")
        vectors_path = folder / vectors_file
        if not vectors_path.is_file():
            raise FileNotFoundError(vectors_path)
        try:
            loaded = faiss.read_index(str(vectors_path))
        except RuntimeError as err:
            raise InputError(f"cannot read {vectors_path}: {str(err).splitlines()[0]}") from err
        if loaded.d != index.dims or loaded.ntotal != len(cases):
            raise InputError(f"case index {folder} is inconsistent: {loaded.ntotal} vectors of {loaded.d} dims for "
                             f"{len(cases)} cases of {index.dims} dims; rebuild it with insight index build")
        index._faiss = faiss.IndexIDMap2(loaded) if not isinstance(loaded, faiss.IndexIDMap2) else loaded
        index._cases = {case.case_id: case for case in cases}
        index._next_id = max((case.faiss_id for case in cases), default=-1) + 1
        index._generation = generation
        index.updated = str(sidecar.get("updated", ""))
        return index

    # -- content ---------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._cases)

    def __contains__(self, case_id: object) -> bool:
        return case_id in self._cases

    @property
    def case_ids(self) -> list[str]:
        """Ids of the indexed cases, sorted."""
        return sorted(self._cases)

    def case(self, case_id: str) -> IndexedCase:
        """The entry of ``case_id`` (KeyError when it is not indexed)."""
        return self._cases[case_id]

    def cases(self) -> list[IndexedCase]:
        return [self._cases[i] for i in self.case_ids]

    def vector(self, case_id: str) -> np.ndarray:
        """The stored embedding [dims] of ``case_id`` (KeyError when it is not indexed)."""
        return self._faiss.reconstruct(int(self._cases[case_id].faiss_id))

    def add(self, case_id: str, vector: np.ndarray, label: Label = None, source: str | None = None) -> bool:
        """Add a case, or replace its embedding, label and source; True when it replaced one.

        Raises:
            InputError: ``vector`` has the wrong length, is not finite or is not unit length.
        """
        if not case_id:
            raise InputError("a case needs a non-empty id")
        row = np.asarray(vector, dtype=np.float32).reshape(1, -1)
        if row.shape[1] != self.dims:
            raise InputError(f"embedding of {case_id!r} has {row.shape[1]} dims, the index holds {self.dims}")
        if not np.all(np.isfinite(row)) or abs(float(np.linalg.norm(row)) - 1.0) > 1e-3:
            raise InputError(f"embedding of {case_id!r} is not a finite unit-length vector")
        replaced = self.remove(case_id)
        faiss_id = self._next_id
        self._next_id += 1
        self._faiss.add_with_ids(np.ascontiguousarray(row), np.array([faiss_id], dtype=np.int64))
        self._cases[case_id] = IndexedCase(case_id, faiss_id, normalise_label(label), source, _now())
        return replaced

    def remove(self, case_id: str) -> bool:
        """Remove a case; True when it was there."""
        case = self._cases.pop(case_id, None)
        if case is None:
            return False
        self._faiss.remove_ids(np.array([case.faiss_id], dtype=np.int64))
        return True

    def set_label(self, case_id: str, label: Label) -> None:
        self._cases[case_id].label = normalise_label(label)

    def clear(self, model_version: str, dims: int | None = None, model_path: str | None = None) -> None:
        """Empty the index for another model version (its embeddings are not comparable)."""
        self.dims = int(dims or self.dims)
        self.model_version = model_version
        self.model_path = model_path if model_path is not None else self.model_path
        self.embedding_kind = EMBEDDING_KIND
        self._faiss = faiss.IndexIDMap2(faiss.IndexFlatIP(self.dims))
        self._cases.clear()
        self._next_id = 0

    # -- search ----------------------------------------------------------------------------------------
    def search(self, vector: np.ndarray, k: int = 5, exclude: Iterable[str] = ()) -> list[SimilarCase]:
        """The ``k`` most similar cases to ``vector`` [dims], most similar first, leaving out ``exclude``.

        Raises:
            InputError: ``k`` < 1 or ``vector`` has the wrong length.
        """
        if k < 1:
            raise InputError(f"k must be at least 1, got {k}")
        query = np.asarray(vector, dtype=np.float32).reshape(1, -1)
        if query.shape[1] != self.dims:
            raise InputError(f"query embedding has {query.shape[1]} dims, the index holds {self.dims}")
        excluded = {self._cases[c].faiss_id for c in set(exclude) if c in self._cases}
        wanted = min(k + len(excluded), len(self._cases))
        if wanted == 0:
            return []
        scores, ids = self._faiss.search(np.ascontiguousarray(query), wanted)
        by_faiss_id = {case.faiss_id: case for case in self._cases.values()}
        answers: list[SimilarCase] = []
        for score, faiss_id in zip(scores[0], ids[0]):
            if faiss_id < 0 or int(faiss_id) in excluded:
                continue
            case = by_faiss_id[int(faiss_id)]
            answers.append(SimilarCase(len(answers) + 1, case.case_id, round(float(score), _SCORE_DECIMALS),
                                       case.label, case.source))
            if len(answers) == k:
                break
        return answers

    # -- persistence -----------------------------------------------------------------------------------
    def _saved_generation(self) -> int:
        """The generation of the index saved in :attr:`folder` now (0 when none or unreadable)."""
        try:
            return int(json.loads((self.folder / INDEX_JSON).read_text(encoding="utf-8")).get("generation", 0))
        except (OSError, ValueError, AttributeError, TypeError):
            return 0

    def save(self) -> Path:
        """Write the index atomically into :attr:`folder` (see the module docstring); returns the sidecar."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self._generation = max(self._generation, self._saved_generation()) + 1
        vectors_file = f"{_VECTORS_PREFIX}{self._generation:06d}-{os.getpid()}{_VECTORS_SUFFIX}"
        with atomic_output(self.folder / vectors_file) as tmp:
            faiss.write_index(self._faiss, str(tmp))
        self.updated = _now()
        sidecar = self.folder / INDEX_JSON
        write_json_atomic(sidecar, {
            "format": INDEX_FORMAT, "model_version": self.model_version, "model_path": self.model_path,
            "embedding": {"kind": self.embedding_kind, "dims": self.dims},
            "metric": "inner product of unit-length embeddings (cosine similarity)",
            "vectors_file": vectors_file, "generation": self._generation, "updated": self.updated,
            "cases": [{"id": c.case_id, "faiss_id": c.faiss_id, "label": c.label, "source": c.source,
                       "added": c.added} for c in self.cases()],
        })
        for old in self.folder.glob(f"{_VECTORS_PREFIX}*{_VECTORS_SUFFIX}"):
            if old.name != vectors_file:
                old.unlink(missing_ok=True)
        logger.debug("case index %s saved: %d cases, model %s", self.folder, len(self), self.model_version)
        return sidecar
