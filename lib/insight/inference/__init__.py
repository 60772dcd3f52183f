"""Inference: a checkpoint loaded once, probability, heatmap on the input grid, and findings."""

from insight.inference.findings import Finding, extract_findings
from insight.inference.predictor import InsightPredictor, PredictionResult

__all__ = ["Finding", "extract_findings", "InsightPredictor", "PredictionResult"]
