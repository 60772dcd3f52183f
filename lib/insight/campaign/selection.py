"""One round's choice of cases to correct, by strategy, with the library's selection functions.

- ``uncertainty``: binary entropy of the INSIGHT scan probability, highest first
  (:func:`insight.active_learning.binary_entropy`);
- ``disagreement``: ``1 - Dice`` between the heatmap-derived mask (heatmap >= finding threshold, or the
  pseudo-mask) and the current segmentation model's mask, highest first;
- ``diversity``: greedy farthest-point sampling over the INSIGHT embeddings, the corrected cases
  counting as covered;
- ``random``: a uniform draw seeded by (seed, round).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from insight.active_learning import (binary_entropy, farthest_point_selection, mask_disagreement, random_selection,
                                     top_k_by_score)
from insight.campaign.config import DISAGREEMENT_MASKS
from insight.campaign.data import PoolCase

__all__ = ["Selection", "select_cases"]

#: ``segment(name) -> bool [Z, Y, X]``: the current segmentation model's mask of a pool case.
SegmentFunction = Callable[[str], np.ndarray]


@dataclass
class Selection:
    """Cases picked in one round.

    Attributes:
        picked: case names, in the order chosen.
        scores: the strategy's score of every candidate it scored (distance at pick time for diversity;
            empty for random).
    """

    picked: list[str]
    scores: dict[str, float] = field(default_factory=dict)


def select_cases(strategy: str, k: int, candidates: Sequence[str], pool: Mapping[str, PoolCase],
                 corrected: Sequence[str] = (), segment: SegmentFunction | None = None,
                 disagreement_mask: str = "heatmap", random_seed: int | None = None,
                 round_index: int = 0) -> Selection:
    """Pick ``k`` of ``candidates`` (fewer when fewer are left).

    Args:
        strategy: ``uncertainty``, ``disagreement``, ``diversity`` or ``random``.
        k: cases to pick.
        candidates: uncorrected case names that may be picked.
        pool: every pool case by name (scores, masks and embeddings of the weak-label stage).
        corrected: cases corrected in earlier rounds (covered, for ``diversity``).
        segment: the current segmentation model's mask of a case (``disagreement`` only).
        disagreement_mask: ``heatmap`` or ``pseudo_mask``: what the segmentation is compared with.
        random_seed, round_index: seed the ``random`` draw as ``(random_seed, round_index)``.

    Raises:
        ValueError: unknown strategy, or a missing input the strategy needs.
    """
    names = sorted(candidates)
    if not names:
        return Selection([])
    if strategy == "uncertainty":
        scores = {n: binary_entropy(pool[n].pe_probability) for n in names}
        return Selection(top_k_by_score(scores, k), scores)
    if strategy == "disagreement":
        if segment is None:
            raise ValueError("the disagreement strategy needs the current segmentation model")
        if disagreement_mask not in DISAGREEMENT_MASKS:
            raise ValueError(f"disagreement_mask must be one of {DISAGREEMENT_MASKS}, got {disagreement_mask!r}")
        scores = {}
        for n in names:
            reference = pool[n].heatmap_mask if disagreement_mask == "heatmap" else pool[n].pseudo_mask
            scores[n] = float(mask_disagreement(np.asarray(reference), segment(n))["value"])
        return Selection(top_k_by_score(scores, k), scores)
    if strategy == "diversity":
        embeddings = {n: np.asarray(case.embedding) for n, case in pool.items() if case.embedding is not None}
        picks = farthest_point_selection(names, embeddings, k, references=[n for n in corrected if n in embeddings])
        return Selection([p.name for p in picks], {p.name: p.distance for p in picks})
    if strategy == "random":
        if random_seed is None:
            raise ValueError("the random strategy needs a seed")
        return Selection(random_selection(names, k, (int(random_seed), int(round_index))))
    raise ValueError(f"unknown strategy {strategy!r}")
