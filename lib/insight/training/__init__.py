"""Training INSIGHT from scan-level (weak) labels."""

from insight.training.dataset import LabeledCase, PreparedCase, prepare_cases, read_label_table
from insight.training.trainer import InsightTrainer, TrainSummary

__all__ = ["LabeledCase", "PreparedCase", "prepare_cases", "read_label_table", "InsightTrainer", "TrainSummary"]
