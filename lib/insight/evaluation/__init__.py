"""Evaluating a model on labelled scans (and ground-truth clot masks where they exist)."""

from insight.evaluation.evaluate import CaseEvaluation, EvaluationReport, evaluate_predictor

__all__ = ["CaseEvaluation", "EvaluationReport", "evaluate_predictor"]
