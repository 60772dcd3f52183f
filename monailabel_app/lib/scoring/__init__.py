"""Scoring for active learning: methods that write per-image scores into the datastore, and their runner."""

from lib.scoring.methods import (DisagreementScoring, DiversityScoring, ScoringUnavailable, UncertaintyScoring,
                                 segmentation_via_app)
from lib.scoring.runner import ScoringRunner
from lib.scoring.scores import SCORES_KEY, score_record, without_embeddings

__all__ = ["DisagreementScoring", "DiversityScoring", "ScoringUnavailable", "UncertaintyScoring",
           "segmentation_via_app", "ScoringRunner", "SCORES_KEY", "score_record", "without_embeddings"]
