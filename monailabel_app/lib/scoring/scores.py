"""Where scoring methods keep their per-image scores and how strategies read them.

Each image's datastore info holds ``insight_scores``, one record per scoring method::

    "insight_scores": {
        "uncertainty":  {"value": 0.97, "pe_probability": 0.41, "model_version": "...", "scored_at": "..."},
        "diversity":    {"embedding": [0.12, ...], "dims": 64, "model_version": "...", "scored_at": "..."},
        "disagreement": {"value": 0.8, "dice": 0.2, "heatmap_voxels": 310, "mask_voxels": 45,
                         "model_version": "<insight version>|<segmentation version>", "scored_at": "..."}
    }

``value`` is the number a strategy ranks by (higher = more worth a clinician's time);
``model_version`` says which model(s) produced it (a method re-scores an image when it changes).
"""

from __future__ import annotations

from typing import Any, Mapping

__all__ = ["SCORES_KEY", "score_record", "without_embeddings"]

#: Image-info key holding every scoring method's record.
SCORES_KEY = "insight_scores"


def score_record(info: Mapping[str, Any], name: str) -> dict[str, Any] | None:
    """The ``name`` record of an image info, or None when that image has not been scored by it."""
    scores = info.get(SCORES_KEY)
    if not isinstance(scores, Mapping):
        return None
    record = scores.get(name)
    return dict(record) if isinstance(record, Mapping) else None


def without_embeddings(info: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of an image info with embedding vectors left out (for REST answers)."""
    copy = dict(info)
    scores = copy.get(SCORES_KEY)
    if isinstance(scores, Mapping):
        copy[SCORES_KEY] = {name: ({k: v for k, v in record.items() if k != "embedding"}
                                   if isinstance(record, Mapping) else record)
                            for name, record in scores.items()}
    return copy
