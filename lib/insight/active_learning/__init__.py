"""Active-learning selection as plain functions: which cases a clinician should correct next.

Shared by the MONAI Label app's scoring methods and strategies (``monailabel_app/lib/scoring``,
``monailabel_app/lib/activelearning``) and by the campaign simulation (:mod:`insight.campaign`), so
the server and the measurement rank cases by one definition:

- ``uncertainty``: binary entropy of the scan-level PE probability (:func:`binary_entropy`), highest first;
- ``disagreement``: ``1 - Dice`` between a heatmap-derived mask and a segmentation (:func:`mask_disagreement`),
  highest first;
- ``diversity``: greedy farthest-point sampling over case embeddings (:func:`farthest_point_selection`);
- ``random``: a seeded uniform draw (:func:`random_selection`).

Public API::

    from insight.active_learning import binary_entropy, top_k_by_score
    picks = top_k_by_score({name: binary_entropy(p) for name, p in probabilities.items()}, k=2)
"""

from insight.active_learning.scores import binary_entropy, mask_disagreement
from insight.active_learning.selection import (STRATEGY_NAMES, FarthestPointPick, farthest_point_selection,
                                               random_selection, top_k_by_score)

__all__ = ["STRATEGY_NAMES", "FarthestPointPick", "binary_entropy", "mask_disagreement", "farthest_point_selection",
           "random_selection", "top_k_by_score"]
