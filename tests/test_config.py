"""Typed configuration: validation and the round trip through a checkpoint dict."""

from __future__ import annotations

import pytest

from insight.config import InferenceConfig, InsightConfig, ModelConfig, PreprocessConfig, TrainConfig


@pytest.mark.parametrize(
    "kind, kwargs, message",
    [
        (ModelConfig, {"encoder": "vgg"}, "encoder"),
        (ModelConfig, {"encoder_stride": 2}, "encoder_stride"),
        (ModelConfig, {"context_depth": 2}, "context_depth"),
        (ModelConfig, {"pooling": "mean"}, "pooling"),
        (ModelConfig, {"smoothmax_alpha": 0}, "smoothmax_alpha"),
        (PreprocessConfig, {"target_spacing_xyz": (1.0, 0.0, 1.0)}, "target_spacing"),
        (PreprocessConfig, {"hu_window": (100.0, -100.0)}, "hu_window"),
        (PreprocessConfig, {"slice_context": -1}, "slice_context"),
        (TrainConfig, {"epochs": 0}, "epochs"),
        (InferenceConfig, {"finding_threshold": 1.5}, "finding_threshold"),
    ],
)
def test_bad_settings_raise_clear_value_errors(kind, kwargs, message):
    with pytest.raises(ValueError, match=message):
        kind(**kwargs)


def test_config_round_trip_through_dict():
    config = InsightConfig(model=ModelConfig(encoder="resnet18", head_widths=(32, 16, 16), context_depth=1),
                           preprocess=PreprocessConfig(slice_context=2))
    again = InsightConfig.from_dict(config.to_dict())
    assert again == config
    assert again.preprocess.in_channels == 5


def test_unknown_keys_are_refused():
    payload = InsightConfig().to_dict()
    payload["model"]["future_option"] = 1
    with pytest.raises(ValueError, match="future_option"):
        InsightConfig.from_dict(payload)
