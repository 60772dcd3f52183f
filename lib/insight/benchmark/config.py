"""The benchmark's configuration file (JSON): data, shared model and training settings, methods.

Layout (every block but ``methods`` and ``splits`` is optional; unknown keys are errors)::

    {
      "name": "small",
      "description": "...",
      "device": "auto",
      "phantom":    {PhantomConfig fields, e.g. "shape_xyz": [48, 48, 24], "max_emboli": 3},
      "splits":     {"train": {"seed": 11, "n": 8}, "val": {"seed": 12, "n": 4}, "test": {"seed": 13, "n": 6}},
      "preprocess": {PreprocessConfig fields},
      "model":      {ModelConfig fields shared by every method: the encoder and the widths},
      "train":      {TrainConfig fields: one training budget for every method},
      "methods": [
        {"name": "INSIGHT", "kind": "insight"},
        {"name": "Detection only", "kind": "insight", "model": {"use_context": false}},
        {"name": "ABMIL", "kind": "abmil"},
        {"name": "CNN + Grad-CAM", "kind": "cnn_gradcam", "threshold": {"max_fraction": 0.15}},
        {"name": "Max-pool MIL", "kind": "insight", "model": {"use_context": false, "pooling": "max"}}
      ],
      "evaluation": {"operating_threshold": "val_youden", "bootstrap": 1000, "fp_rates": [0.5, 1, 2, 4],
                     "montage_cases": 3, "pointing_tolerance_voxels": 1, "peak_tolerance_voxels": 1}
    }

Fairness rules enforced here: the three splits come from distinct seeds; every method shares the
encoder, widths, data and ``train`` block; a method may only change INSIGHT head settings
(:data:`METHOD_MODEL_KEYS`) and only when it is an ``insight`` kind.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from insight.config import ModelConfig, PreprocessConfig, TrainConfig
from insight.errors import InputError
from insight.json_config import check_top_level, dataclass_from_json, read_json_config
from insight.phantom import PhantomConfig

__all__ = ["METHOD_KINDS", "METHOD_MODEL_KEYS", "SPLIT_NAMES", "SplitSpec", "ThresholdRule", "MethodSpec",
           "EvaluationSpec", "BenchmarkConfig", "load_benchmark_config", "parse_benchmark_config"]

#: ``insight``: :class:`insight.models.InsightModel` (with or without context, SmoothMax or max
#: pooling); ``abmil``: gated attention MIL; ``cnn_gradcam``: global-pooling CNN with Grad-CAM.
METHOD_KINDS = ("insight", "abmil", "cnn_gradcam")
#: ModelConfig fields an ``insight`` method may set for itself (the head, never the encoder).
METHOD_MODEL_KEYS = ("use_context", "context_depth", "pooling", "smoothmax_alpha", "otsu_in_training")
SPLIT_NAMES = ("train", "val", "test")
_TOP_KEYS = {"name", "description", "device", "phantom", "splits", "preprocess", "model", "train", "methods",
             "evaluation"}


@dataclass(frozen=True)
class SplitSpec:
    """Phantom cases ``0 .. n-1`` of ``seed``."""

    seed: int
    n: int


@dataclass(frozen=True)
class ThresholdRule:
    """How a method turns its heatmap into regions ("its own thresholding").

    ``otsu``: Otsu's threshold of the scan's heatmap values inside the search region (INSIGHT's
    authors' rule). ``max_fraction``: ``value`` times the scan's heatmap maximum (the rule of CAM
    and Grad-CAM localization, 0.15-0.2). Voxels strictly above the threshold form the regions.
    """

    kind: str = "otsu"
    value: float | None = None

    def describe(self) -> str:
        return "Otsu" if self.kind == "otsu" else f"{self.value:g} x max"

    def to_json(self) -> Any:
        return "otsu" if self.kind == "otsu" else {"max_fraction": self.value}


@dataclass(frozen=True)
class MethodSpec:
    """One compared method."""

    name: str
    kind: str
    model_overrides: dict[str, Any] = field(default_factory=dict)
    threshold: ThresholdRule = field(default_factory=ThresholdRule)

    @property
    def slug(self) -> str:
        """A file-name-safe form of the name (run folder)."""
        return re.sub(r"[^a-z0-9]+", "-", self.name.lower()).strip("-") or self.kind

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "model": dict(self.model_overrides),
                "threshold": self.threshold.to_json()}


@dataclass(frozen=True)
class EvaluationSpec:
    """How the test split is scored.

    Attributes:
        operating_threshold: ``"val_youden"`` (the p(PE) maximising sensitivity + specificity on
            the validation split, never the test split) or a fixed probability.
        bootstrap: resamples of the AUROC confidence interval.
        fp_rates: false positives per scan at which FROC sensitivity is reported.
        montage_cases: PE-positive test scans shown in the overlay montage (the first by name).
        pointing_tolerance_voxels: the pointing game's tolerance.
        peak_tolerance_voxels: the FROC "peak" rule's tolerance.
    """

    operating_threshold: str | float = "val_youden"
    bootstrap: int = 1000
    fp_rates: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0)
    montage_cases: int = 3
    pointing_tolerance_voxels: int = 1
    peak_tolerance_voxels: int = 1


@dataclass(frozen=True)
class BenchmarkConfig:
    """A parsed, validated benchmark configuration."""

    name: str
    description: str
    device: str
    phantom: PhantomConfig
    splits: dict[str, SplitSpec]
    preprocess: PreprocessConfig
    model: ModelConfig
    train: TrainConfig
    methods: tuple[MethodSpec, ...]
    evaluation: EvaluationSpec

    def method_model(self, method: MethodSpec) -> ModelConfig:
        """The shared model settings with the method's own head settings applied."""
        return dataclasses.replace(self.model, **method.model_overrides)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name, "description": self.description, "device": self.device,
            "phantom": dataclasses.asdict(self.phantom),
            "splits": {k: dataclasses.asdict(v) for k, v in self.splits.items()},
            "preprocess": dataclasses.asdict(self.preprocess), "model": dataclasses.asdict(self.model),
            "train": dataclasses.asdict(self.train), "methods": [m.to_json() for m in self.methods],
            "evaluation": dataclasses.asdict(self.evaluation),
        }


def load_benchmark_config(path: str | Path) -> BenchmarkConfig:
    """Read and validate a benchmark configuration file.

    Raises:
        InputError: the file is missing, not JSON, or any setting is invalid (the message says which).
    """
    payload = read_json_config(path, "benchmark config")
    return parse_benchmark_config(payload, source=str(path))


def parse_benchmark_config(payload: Any, source: str = "benchmark config") -> BenchmarkConfig:
    """Validate a decoded JSON object (see the module docstring) into a :class:`BenchmarkConfig`."""
    check_top_level(payload, _TOP_KEYS, source)
    try:
        phantom = dataclass_from_json(PhantomConfig, payload.get("phantom", {}), "phantom")
        preprocess = dataclass_from_json(PreprocessConfig, payload.get("preprocess", {}), "preprocess")
        model = dataclass_from_json(ModelConfig, payload.get("model", {}), "model")
        train = dataclass_from_json(TrainConfig, payload.get("train", {}), "train")
        splits = _parse_splits(payload.get("splits"))
        methods = _parse_methods(payload.get("methods"), model)
        evaluation = _parse_evaluation(payload.get("evaluation", {}))
    except (TypeError, ValueError) as err:
        raise InputError(f"{source}: {err}") from err
    name = payload.get("name", Path(source).stem)
    if not isinstance(name, str) or not name:
        raise InputError(f"{source}: 'name' must be a non-empty string")
    device = payload.get("device", "auto")
    if not isinstance(device, str):
        raise InputError(f"{source}: 'device' must be a string such as auto, cpu or cuda")
    return BenchmarkConfig(name=name, description=str(payload.get("description", "")), device=device,
                           phantom=phantom, splits=splits, preprocess=preprocess, model=model, train=train,
                           methods=methods, evaluation=evaluation)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _parse_splits(values: Any) -> dict[str, SplitSpec]:
    if not isinstance(values, dict) or set(values) != set(SPLIT_NAMES):
        raise ValueError(f"'splits' must be an object with exactly the keys {list(SPLIT_NAMES)}")
    splits = {}
    for name in SPLIT_NAMES:
        entry = values[name]
        if not isinstance(entry, dict) or set(entry) != {"seed", "n"}:
            raise ValueError(f"'splits.{name}' must be an object with keys 'seed' and 'n'")
        if not (_is_int(entry["seed"]) and entry["seed"] >= 0):
            raise ValueError(f"'splits.{name}.seed' must be a non-negative integer, got {entry['seed']!r}")
        if not (_is_int(entry["n"]) and entry["n"] >= 2):
            raise ValueError(f"'splits.{name}.n' must be an integer >= 2, got {entry['n']!r}")
        splits[name] = SplitSpec(entry["seed"], entry["n"])
    seeds = [s.seed for s in splits.values()]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"the train, val and test splits need three different seeds, got {seeds}")
    return splits


def _parse_threshold(value: Any, where: str) -> ThresholdRule:
    if value is None or value == "otsu":
        return ThresholdRule()
    if isinstance(value, dict) and set(value) == {"max_fraction"}:
        fraction = value["max_fraction"]
        if isinstance(fraction, (int, float)) and not isinstance(fraction, bool) and 0.0 < fraction < 1.0:
            return ThresholdRule("max_fraction", float(fraction))
    raise ValueError(f"{where}.threshold must be \"otsu\" or {{\"max_fraction\": f}} with 0 < f < 1, got {value!r}")


def _parse_methods(values: Any, model: ModelConfig) -> tuple[MethodSpec, ...]:
    if not isinstance(values, list) or not values:
        raise ValueError("'methods' must be a non-empty list")
    methods: list[MethodSpec] = []
    for i, entry in enumerate(values):
        where = f"methods[{i}]"
        if not isinstance(entry, dict):
            raise ValueError(f"{where} must be an object")
        unknown = set(entry) - {"name", "kind", "model", "threshold"}
        if unknown:
            raise ValueError(f"{where}: unknown keys {sorted(unknown)}")
        name, kind = entry.get("name"), entry.get("kind")
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"{where}.name must be a non-empty string")
        if kind not in METHOD_KINDS:
            raise ValueError(f"{where}.kind must be one of {list(METHOD_KINDS)}, got {kind!r}")
        overrides = entry.get("model", {})
        if not isinstance(overrides, dict):
            raise ValueError(f"{where}.model must be an object")
        if overrides and kind != "insight":
            raise ValueError(f"{where}: only 'insight' methods may set model options (same encoder and widths "
                             f"for every method); {kind!r} got {sorted(overrides)}")
        bad = set(overrides) - set(METHOD_MODEL_KEYS)
        if bad:
            raise ValueError(f"{where}.model: {sorted(bad)} cannot differ between methods "
                             f"(allowed per method: {list(METHOD_MODEL_KEYS)})")
        try:
            dataclasses.replace(model, **overrides)
        except ValueError as err:
            raise ValueError(f"{where}.model: {err}") from err
        methods.append(MethodSpec(name.strip(), kind, dict(overrides), _parse_threshold(entry.get("threshold"), where)))
    for label, values_ in (("names", [m.name for m in methods]), ("run folders", [m.slug for m in methods])):
        if len(set(values_)) != len(values_):
            raise ValueError(f"method {label} must be unique, got {values_}")
    return tuple(methods)


def _parse_evaluation(values: Any) -> EvaluationSpec:
    if not isinstance(values, dict):
        raise ValueError("'evaluation' must be a JSON object")
    allowed = {f.name for f in dataclasses.fields(EvaluationSpec)}
    unknown = set(values) - allowed
    if unknown:
        raise ValueError(f"'evaluation': unknown settings {sorted(unknown)} (allowed: {sorted(allowed)})")
    spec = EvaluationSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})
    threshold = spec.operating_threshold
    if threshold != "val_youden" and not (isinstance(threshold, (int, float)) and not isinstance(threshold, bool)
                                          and 0.0 < threshold < 1.0):
        raise ValueError(f"'evaluation.operating_threshold' must be \"val_youden\" or a probability in (0, 1), "
                         f"got {threshold!r}")
    if not (_is_int(spec.bootstrap) and spec.bootstrap >= 1):
        raise ValueError(f"'evaluation.bootstrap' must be a positive integer, got {spec.bootstrap!r}")
    if not spec.fp_rates or not all(isinstance(r, (int, float)) and not isinstance(r, bool) and r > 0
                                    for r in spec.fp_rates):
        raise ValueError(f"'evaluation.fp_rates' must be positive numbers, got {spec.fp_rates!r}")
    for name in ("montage_cases", "pointing_tolerance_voxels", "peak_tolerance_voxels"):
        if not (_is_int(getattr(spec, name)) and getattr(spec, name) >= 0):
            raise ValueError(f"'evaluation.{name}' must be a non-negative integer, got {getattr(spec, name)!r}")
    return dataclasses.replace(spec, fp_rates=tuple(float(r) for r in spec.fp_rates))
