"""Choosing ``k`` cases from candidates: by a score, by covering the embedding space, or at random.

Every function is deterministic: ties go to the lowest case name (scores) or the earliest candidate
(distances), and the random draw is a function of its seed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["STRATEGY_NAMES", "FarthestPointPick", "top_k_by_score", "farthest_point_selection", "random_selection"]

#: The strategies the server offers and the campaign simulation compares.
STRATEGY_NAMES = ("uncertainty", "disagreement", "diversity", "random")

#: ``basis`` of a pick measured against the centroid (nothing covered yet).
CENTROID_BASIS = "centroid of all embeddings"


def _check_k(k: int) -> None:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")


def top_k_by_score(scores: Mapping[str, float], k: int) -> list[str]:
    """The ``k`` names with the highest scores (fewer when fewer are given), highest first.

    Ties go to the lowest name, so ``top_k_by_score(s, 1)[0] == max(sorted(s), key=s.get)``.

    Raises:
        ValueError: ``k < 1`` or a score that is not a finite number.
    """
    _check_k(k)
    for name, value in scores.items():
        if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)) \
                or not math.isfinite(float(value)):
            raise ValueError(f"score of {name!r} must be a finite number, got {value!r}")
    return sorted(scores, key=lambda name: (-float(scores[name]), name))[:k]


@dataclass(frozen=True)
class FarthestPointPick:
    """One case picked by :func:`farthest_point_selection`.

    Attributes:
        name: the case.
        distance: Euclidean distance (embedding units) to the nearest covered case, or to the centroid.
        basis: what the distance was measured to (``nearest of N covered case(s)`` or the centroid).
    """

    name: str
    distance: float
    basis: str


def farthest_point_selection(candidates: Sequence[str], embeddings: Mapping[str, np.ndarray], k: int,
                             references: Sequence[str] = ()) -> list[FarthestPointPick]:
    """Greedy farthest-point sampling: repeatedly the candidate farthest from every covered case.

    Covered cases are ``references`` (e.g. already labeled, or handed to an annotator) plus the picks
    made so far. With none covered, the first pick is the candidate farthest from the centroid of all
    ``embeddings`` (candidates and others alike).

    Args:
        candidates: names to choose from, in tie-breaking order (the earliest of equally far ones wins);
            each must have an embedding.
        embeddings: name -> vector [D] (every vector of one length D).
        k: how many to pick (fewer when fewer candidates are given).
        references: names already covered; each must have an embedding.

    Returns:
        The picks in the order chosen, each with its distance at the time it was picked.

    Raises:
        ValueError: ``k < 1``, a candidate or reference without an embedding, or vectors of different lengths.
    """
    _check_k(k)
    missing = [n for n in list(candidates) + list(references) if n not in embeddings]
    if missing:
        raise ValueError(f"no embedding for {missing[:5]}")
    if not candidates:
        return []
    shapes = {np.asarray(v).shape for v in embeddings.values()}
    if len(shapes) != 1 or len(next(iter(shapes))) != 1:
        raise ValueError(f"embeddings must be vectors of one length, got shapes {sorted(shapes)}")
    remaining = list(candidates)
    covered = [np.asarray(embeddings[n], dtype=np.float64) for n in references]
    picks: list[FarthestPointPick] = []
    while remaining and len(picks) < k:
        matrix = np.stack([np.asarray(embeddings[n], dtype=np.float64) for n in remaining])  # [C, D]
        if covered:
            reference_matrix = np.stack(covered)  # [R, D]
            distances = np.linalg.norm(matrix[:, None, :] - reference_matrix[None, :, :], axis=-1).min(1)
            basis = f"nearest of {len(covered)} covered case(s)"
        else:
            centroid = np.stack([np.asarray(v, dtype=np.float64) for v in embeddings.values()]).mean(0)
            distances = np.linalg.norm(matrix - centroid[None, :], axis=-1)
            basis = CENTROID_BASIS
        best = int(np.argmax(distances))
        name = remaining.pop(best)
        picks.append(FarthestPointPick(name, float(distances[best]), basis))
        covered.append(np.asarray(embeddings[name], dtype=np.float64))
    return picks


def random_selection(candidates: Sequence[str], k: int, seed: int | Sequence[int]) -> list[str]:
    """``k`` distinct candidates drawn uniformly (fewer when fewer are given), a function of ``seed``.

    The candidates are sorted first, so the draw depends on the set, not on the order it came in.
    ``seed`` is anything :func:`numpy.random.default_rng` takes, e.g. ``(seed, round)``.
    """
    _check_k(k)
    ordered = sorted(set(candidates))
    if not ordered:
        return []
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(ordered), size=min(k, len(ordered)), replace=False)
    return [ordered[int(i)] for i in chosen]
