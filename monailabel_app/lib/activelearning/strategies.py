"""Active-learning strategies that rank images by the scores scoring methods wrote.

All pick among the images the datastore view offers (no ``final`` label, not leased to another
client: :mod:`lib.activelearning.leases`) and only read scores; the scoring methods
(:mod:`lib.scoring.methods`) compute them, in the background after each training and at start, or
on ``POST /scoring/{method}``.

- ``uncertainty``: the highest scan-level predictive uncertainty (binary entropy of pe_insight's
  PE probability: 1 at p = 0.5, 0 at p = 0 or 1).
- ``disagreement``: where the INSIGHT heatmap and the ``pe_segmentation`` mask disagree most
  (1 - Dice of the thresholded heatmap and the mask). Without a ``pe_segmentation`` model it
  answers an error (never a random pick).
- ``diversity``: farthest-point sampling in the embedding space (pooled INSIGHT encoder features):
  the candidate farthest from every image already labeled or with an annotator; with none yet, the
  one farthest from the centroid of all embeddings.

When no candidate has the score yet, a strategy raises :class:`StrategyUnavailable` saying which
scoring to run. The ranking and farthest-point math is the library's (:mod:`insight.active_learning`),
shared with ``insight simulate-campaign``.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

import numpy as np
from monailabel.interfaces.tasks.strategy import Strategy

from insight.active_learning import farthest_point_selection, top_k_by_score
from lib.scoring.scores import score_record

__all__ = ["StrategyUnavailable", "ScoreRankingStrategy", "UncertaintyStrategy", "DisagreementStrategy",
           "DiversityStrategy"]

logger = logging.getLogger(__name__)


class StrategyUnavailable(RuntimeError):
    """The strategy cannot choose on this server now (missing model or scores); the message says why."""


def _candidates(datastore: Any, request: dict[str, Any]) -> list[str]:
    return sorted(datastore.get_unlabeled_images(request.get("label_tag"), request.get("labels")))


class ScoreRankingStrategy(Strategy):
    """Picks the candidate with the highest ``value`` in its ``score_name`` record (ties: image id)."""

    score_name = ""

    def __init__(self, description: str) -> None:
        super().__init__(description)

    def check_available(self) -> None:
        """Raise :class:`StrategyUnavailable` when the strategy cannot work on this server."""

    def __call__(self, request: dict[str, Any], datastore: Any) -> dict[str, Any] | None:
        self.check_available()
        candidates = _candidates(datastore, request)
        if not candidates:
            return None
        scored = {}
        for image_id in candidates:
            record = score_record(datastore.get_image_info(image_id), self.score_name)
            if record is not None and isinstance(record.get("value"), (int, float)):
                scored[image_id] = record
        if not scored:
            raise StrategyUnavailable(
                f"no {self.score_name} scores yet for the {len(candidates)} candidate image(s): run "
                f"POST /scoring/{self.score_name} (scoring also runs at start and after each training)")
        best = top_k_by_score({image_id: float(record["value"]) for image_id, record in scored.items()}, 1)[0]
        record = scored[best]
        logger.info("%s: picked %s (score %.4f) among %d scored of %d candidates", self.score_name, best,
                    record["value"], len(scored), len(candidates))
        return {"id": best, "score": float(record["value"]), "score_model_version": record.get("model_version"),
                "candidates": len(candidates), "unscored_candidates": len(candidates) - len(scored)}


class UncertaintyStrategy(ScoreRankingStrategy):
    score_name = "uncertainty"

    def __init__(self) -> None:
        super().__init__("Scan-level predictive uncertainty of pe_insight (binary entropy of p(PE)): the scan "
                         "the model is least sure about")


class DisagreementStrategy(ScoreRankingStrategy):
    """Highest disagreement between the INSIGHT heatmap and the segmentation mask.

    Args:
        segmentation_problem: returns why the segmentation model cannot be used now (not served,
            not trained, not loadable), or None when it can.
        segmentation_model: its name (for messages).
    """

    score_name = "disagreement"

    def __init__(self, segmentation_problem: Callable[[], str | None],
                 segmentation_model: str = "pe_segmentation") -> None:
        super().__init__(f"Where the INSIGHT heatmap and {segmentation_model} disagree most (1 - Dice); needs "
                         f"{segmentation_model}")
        self._problem = segmentation_problem
        self.segmentation_model = segmentation_model

    def check_available(self) -> None:
        problem = self._problem()
        if problem:
            raise StrategyUnavailable(f"strategy 'disagreement' compares the INSIGHT heatmap with the "
                                      f"{self.segmentation_model} model: {problem}")


class DiversityStrategy(Strategy):
    """Farthest-point sampling over the per-image embeddings of the ``diversity`` scoring method."""

    score_name = "diversity"

    def __init__(self) -> None:
        super().__init__("Covers the embedding space (pooled INSIGHT encoder features): the scan least like "
                         "any scan already labeled or with an annotator")

    def __call__(self, request: dict[str, Any], datastore: Any) -> dict[str, Any] | None:
        candidates = _candidates(datastore, request)
        if not candidates:
            return None
        embeddings: dict[str, np.ndarray] = {}
        for image_id in datastore.list_images():
            record = score_record(datastore.get_image_info(image_id), self.score_name)
            vector = record.get("embedding") if record else None
            if isinstance(vector, list) and vector:
                embeddings[image_id] = np.asarray(vector, dtype=np.float64)
        scored = [i for i in candidates if i in embeddings]
        if not scored:
            raise StrategyUnavailable(
                f"no diversity embeddings yet for the {len(candidates)} candidate image(s): run "
                "POST /scoring/diversity (scoring also runs at start and after each training)")
        dims = {embeddings[i].shape for i in embeddings}
        if len(dims) > 1:  # embeddings of two model architectures: compare like with like only
            shape = embeddings[scored[0]].shape
            embeddings = {i: v for i, v in embeddings.items() if v.shape == shape}
        taken = set(datastore.get_labeled_images()) | set(getattr(datastore, "leased_images", ()))
        references = [i for i in sorted(taken) if i in embeddings and i not in scored]
        pick = farthest_point_selection([i for i in scored if i in embeddings], embeddings, 1, references)[0]
        basis = f"nearest of {len(references)} labeled/leased image(s)" if references else "centroid of all embeddings"
        image_id = pick.name
        record = score_record(datastore.get_image_info(image_id), self.score_name) or {}
        logger.info("diversity: picked %s (distance %.4f to the %s)", image_id, pick.distance, basis)
        return {"id": image_id, "score": pick.distance, "score_basis": basis,
                "score_model_version": record.get("model_version"), "candidates": len(candidates),
                "unscored_candidates": len(candidates) - len(scored)}
