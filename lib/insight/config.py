"""One typed place for every setting shared by training and inference.

A checkpoint stores :class:`InsightConfig` as a plain dict (``to_dict``) and inference rebuilds it
with ``from_dict``, so preprocessing constants are defined exactly once for both.

Geometry order: anything ``*_xyz`` is in SimpleITK (x, y, z) order, in millimetres, LPS patient space.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "PreprocessConfig",
    "ModelConfig",
    "TrainConfig",
    "InferenceConfig",
    "InsightConfig",
    "ENCODER_NAMES",
    "SEARCH_REGION_NAMES",
    "POOLING_NAMES",
    "FIXED_FEATURE_ENCODERS",
    "FIXED_FEATURE_STRIDES",
]

#: Where heatmap mass may lie (see :mod:`insight.preprocessing.search_region`).
SEARCH_REGION_NAMES = ("filling_defects", "vessels", "chest", "body", "none")
ENCODER_NAMES = ("small_cnn", "filter_bank", "vessel_filters", "resnet18", "resnet34")
POOLING_NAMES = ("smoothmax", "max")
#: Encoders whose features are fixed filters pooled to the stride: any stride in FIXED_FEATURE_STRIDES.
FIXED_FEATURE_ENCODERS = ("filter_bank", "vessel_filters")
FIXED_FEATURE_STRIDES = (1, 2, 4, 8)


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


@dataclass(frozen=True)
class PreprocessConfig:
    """How a CT volume is put onto the model grid.

    Attributes:
        target_spacing_xyz: voxel spacing of the model grid in mm (x, y, z).
        orientation: the anatomical orientation every volume is turned to first (DICOM code, e.g. "LPS").
        hu_window: (low, high) HU clip window, mapped linearly onto [0, 1]. The default is the
            radiologists' PE window (W 700, L 100): enhanced arteries (250-450 HU) stand out from
            clot (20-90 HU), while lung and air clip to 0.
        slice_context: neighbouring slices on each side stacked as channels (2.5D); the encoder
            sees ``2 * slice_context + 1`` channels.
        background_hu: HU assigned to voxels resampled from outside the scan.
        body_crop_hu: when set, the model grid is cropped in-plane to the bounding box of voxels
            above this HU (the body, plus the table if any), which roughly halves the work; the
            heatmap is zero outside the crop. None keeps the whole field of view.
        body_crop_margin_mm: margin kept around that bounding box.
        search_region: where heatmap mass may lie: ``chest`` (the chest cavity, default),
            ``vessels`` (near contrast-enhanced blood), ``filling_defects`` (soft tissue near enhanced
            blood: where a clot can be), ``body`` or ``none``. See :mod:`insight.preprocessing.search_region`.
        search_margin_mm: in-plane margin of the chest and vessel regions.
    """

    target_spacing_xyz: tuple[float, float, float] = (2.5, 2.5, 3.0)
    orientation: str = "LPS"
    hu_window: tuple[float, float] = (-250.0, 450.0)
    slice_context: int = 1
    background_hu: float = -1024.0
    body_crop_hu: float | None = -500.0
    body_crop_margin_mm: float = 10.0
    search_region: str = "chest"
    search_margin_mm: float = 5.0

    def __post_init__(self) -> None:
        _require(len(self.target_spacing_xyz) == 3 and all(s > 0 for s in self.target_spacing_xyz),
                 f"target_spacing_xyz must be three positive numbers (mm), got {self.target_spacing_xyz}")
        _require(len(self.hu_window) == 2 and self.hu_window[0] < self.hu_window[1],
                 f"hu_window must be (low, high) with low < high, got {self.hu_window}")
        _require(self.body_crop_margin_mm >= 0, f"body_crop_margin_mm must be >= 0, got {self.body_crop_margin_mm}")
        _require(self.search_region in SEARCH_REGION_NAMES,
                 f"search_region must be one of {SEARCH_REGION_NAMES}, got {self.search_region!r}")
        _require(self.search_margin_mm >= 0, f"search_margin_mm must be >= 0, got {self.search_margin_mm}")
        _require(self.slice_context >= 0, f"slice_context must be >= 0, got {self.slice_context}")
        _require(len(self.orientation) == 3, f"orientation must be a 3-letter code like 'LPS', got {self.orientation!r}")

    @property
    def in_channels(self) -> int:
        """Number of input channels of the slice encoder (neighbouring slices stacked)."""
        return 2 * self.slice_context + 1


@dataclass(frozen=True)
class ModelConfig:
    """The INSIGHT network: a slice encoder followed by detection and context modules.

    Attributes:
        encoder: ``small_cnn`` (trained from scratch, default), ``filter_bank`` (fixed
            morphological features plus one learned layer: see :mod:`insight.models.filter_bank`),
            ``vessel_filters`` (fixed 3D vessel and filling-defect features plus one learned layer:
            see :mod:`insight.models.vessel_filters`) or a torchvision ResNet trunk.
        encoder_channels: widths of the small CNN's stages (ignored for ResNet trunks; the last one
            is the learned width of ``filter_bank`` and ``vessel_filters``).
        encoder_stride: output stride of the encoder feature maps: 4 or 8, or also 1 or 2 for the
            fixed-feature encoders (``filter_bank``, ``vessel_filters``).
        encoder_weights: optional local weights file for the encoder (a site's pretrained trunk).
        reduce_channels: width after the 1x1 reduction (128 in the paper).
        head_widths: hidden widths of the detection/context modules after the reduction.
        num_classes: K heatmap channels / scan-level outputs (1 for PE).
        use_context: False gives the paper's "Baseline" ablation (detection module alone).
        context_depth: slices the context module's 3x3 convs see (1 = per slice, as in the paper;
            3 = also the neighbouring slices).
        pooling: ``smoothmax`` (paper default) or ``max``.
        smoothmax_alpha: the SmoothMax sharpness a.
        otsu_in_training: zero heatmap values below the per-class Otsu threshold before pooling,
            in training as well as inference (as in the authors' code).
    """

    encoder: str = "small_cnn"
    encoder_channels: tuple[int, ...] = (16, 32, 64)
    encoder_stride: int = 4
    encoder_weights: str | None = None
    reduce_channels: int = 128
    head_widths: tuple[int, int, int] = (128, 64, 64)
    num_classes: int = 1
    use_context: bool = True
    context_depth: int = 3
    pooling: str = "smoothmax"
    smoothmax_alpha: float = 8.0
    otsu_in_training: bool = True

    def __post_init__(self) -> None:
        _require(self.encoder in ENCODER_NAMES, f"encoder must be one of {ENCODER_NAMES}, got {self.encoder!r}")
        strides = FIXED_FEATURE_STRIDES if self.encoder in FIXED_FEATURE_ENCODERS else (4, 8)
        _require(self.encoder_stride in strides,
                 f"encoder_stride of {self.encoder} must be one of {strides}, got {self.encoder_stride}")
        _require(len(self.encoder_channels) >= 2 and all(c > 0 for c in self.encoder_channels),
                 f"encoder_channels needs at least two positive widths, got {self.encoder_channels}")
        _require(self.reduce_channels > 0 and all(w > 0 for w in self.head_widths) and len(self.head_widths) == 3,
                 f"reduce_channels and three head_widths must be positive, got {self.reduce_channels}, {self.head_widths}")
        _require(self.num_classes >= 1, f"num_classes must be >= 1, got {self.num_classes}")
        _require(self.context_depth >= 1 and self.context_depth % 2 == 1,
                 f"context_depth must be a positive odd number of slices, got {self.context_depth}")
        _require(self.pooling in POOLING_NAMES, f"pooling must be one of {POOLING_NAMES}, got {self.pooling!r}")
        _require(self.smoothmax_alpha > 0, f"smoothmax_alpha must be > 0, got {self.smoothmax_alpha}")


@dataclass(frozen=True)
class TrainConfig:
    """Weak-label training settings (scan-level labels only).

    Attributes:
        epochs: weak-label (MIL) passes over the training set, one optimizer step per volume (a bag);
            0 is allowed after seed epochs.
        learning_rate: AdamW learning rate.
        weight_decay: AdamW weight decay.
        spectral_lambda: spectral-decoupling weight: (lambda / 2) * mean(detection_logit ** 2).
        seed: seeds python, numpy and torch; training is reproducible for a seed on one device.
        amp: bf16 autocast on CUDA (ignored on CPU).
        augment: random left-right flips, intensity shift/scale and noise.
        num_threads: torch CPU threads (0 = torch default).
        slice_stride: train on every ``slice_stride``-th slice of each scan (random offset per step),
            2.5D neighbours still included as channels: halves the cost at stride 2. Needs a
            per-slice context module (``context_depth == 1``), which then sees at inference exactly
            what it saw in training.
        negative_weight: weight of the hard-negative instance term of the loss (every location of a
            scan labelled "no PE" is a known negative; 0 = the paper's loss alone). See
            :mod:`insight.models.losses`.
        negative_topk_fraction: fraction of a negative scan's heatmap locations (the hottest) that
            the hard-negative term pushes down per step.
        scans_per_step: scans (MIL bags) whose losses are averaged per optimizer step.
        cache_fixed_features: compute a fixed-feature encoder's parameter-free part once per
            training scan and reuse it every epoch (fast, but cached inputs only get the left-right
            flip: noise and intensity augmentation no longer reach them). False computes it every
            step from the augmented volume. Validation always uses a cache.
        feature_cache_gb: the training scans' fixed-feature cache is used only when it fits in this
            many GB (float16; at stride 1 a 128 x 128 x 80 phantom takes about 0.04 GB with
            ``vessel_filters``); above it the features are computed every step.
        seed_instances: anomaly seeding (:mod:`insight.training.anomaly_seed`): the M most anomalous
            search-region locations kept per training scan as instances; 0 = no seeding. Needs a
            fixed-feature encoder.
        seed_epochs: epochs of instance training before the ``epochs`` weak-label (MIL) epochs.
        seed_components: components of the normal appearance model (a Gaussian mixture).
        seed_reference_per_scan: locations sampled from each no-PE training scan to fit it.
        seed_batch_size: instances per optimizer step in the seed epochs.
        weak_learning_rate: peak rate of the weak-label epochs' cosine schedule; None = ``learning_rate``.
            (On the phantoms, a 10x lower rate after seeding did not keep the seeded detector either:
            docs/experiments/2026-11-24-cpu-weak-lr-after-seeding.)
        freeze_batch_norm: keep the encoder's BatchNorm statistics fixed (eval mode) in the weak-label
            epochs. Always on after seed epochs, whose statistics describe the seeded instances; set
            it to fine-tune a seeded checkpoint without seeding again.
    """

    epochs: int = 20
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    spectral_lambda: float = 0.01
    seed: int = 0
    amp: bool = True
    augment: bool = True
    num_threads: int = 0
    slice_stride: int = 1
    negative_weight: float = 0.0
    negative_topk_fraction: float = 0.01
    scans_per_step: int = 1
    cache_fixed_features: bool = True
    feature_cache_gb: float = 6.0
    seed_instances: int = 0
    seed_epochs: int = 10
    seed_components: int = 64
    seed_reference_per_scan: int = 1000
    seed_batch_size: int = 512
    weak_learning_rate: float | None = None
    freeze_batch_norm: bool = False

    def __post_init__(self) -> None:
        _require(self.negative_weight >= 0, f"negative_weight must be >= 0, got {self.negative_weight}")
        _require(0.0 < self.negative_topk_fraction <= 1.0,
                 f"negative_topk_fraction must be in (0, 1], got {self.negative_topk_fraction}")
        _require(self.scans_per_step >= 1, f"scans_per_step must be >= 1, got {self.scans_per_step}")
        _require(self.slice_stride >= 1, f"slice_stride must be >= 1, got {self.slice_stride}")
        _require(self.feature_cache_gb >= 0, f"feature_cache_gb must be >= 0, got {self.feature_cache_gb}")
        _require(self.seed_instances >= 0, f"seed_instances must be >= 0, got {self.seed_instances}")
        if self.seed_instances:
            _require(self.seed_epochs >= 1 and self.seed_components >= 1 and self.seed_reference_per_scan >= 1
                     and self.seed_batch_size >= 1,
                     "seed_epochs, seed_components, seed_reference_per_scan and seed_batch_size must be >= 1")
            _require(self.epochs >= 0, f"epochs must be >= 0, got {self.epochs}")
        else:
            _require(self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}")
        _require(self.learning_rate > 0, f"learning_rate must be > 0, got {self.learning_rate}")
        _require(self.weak_learning_rate is None or self.weak_learning_rate > 0,
                 f"weak_learning_rate must be > 0 or None, got {self.weak_learning_rate}")
        _require(self.weight_decay >= 0 and self.spectral_lambda >= 0,
                 "weight_decay and spectral_lambda must be >= 0")

    @property
    def weak_rate(self) -> float:
        """The weak-label epochs' peak learning rate (``weak_learning_rate``, else ``learning_rate``)."""
        return self.learning_rate if self.weak_learning_rate is None else self.weak_learning_rate


@dataclass(frozen=True)
class InferenceConfig:
    """How a heatmap becomes findings.

    Attributes:
        finding_threshold: heatmap value (0-1) above which voxels form candidate regions.
        min_finding_volume_mm3: regions smaller than this are dropped.
        max_findings: at most this many findings are reported, highest peak first.
    """

    finding_threshold: float = 0.5
    min_finding_volume_mm3: float = 20.0
    max_findings: int = 20

    def __post_init__(self) -> None:
        _require(0.0 < self.finding_threshold < 1.0, f"finding_threshold must be in (0, 1), got {self.finding_threshold}")
        _require(self.min_finding_volume_mm3 >= 0, "min_finding_volume_mm3 must be >= 0")
        _require(self.max_findings >= 1, "max_findings must be >= 1")


@dataclass(frozen=True)
class InsightConfig:
    """Everything a checkpoint needs to be used: preprocessing, model and inference settings."""

    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> "InsightConfig":
        """Rebuild from ``to_dict`` output; unknown keys raise ValueError (a newer checkpoint)."""
        return cls(
            preprocess=_build(PreprocessConfig, payload.get("preprocess", {})),
            model=_build(ModelConfig, payload.get("model", {})),
            inference=_build(InferenceConfig, payload.get("inference", {})),
        )


def _build(kind: type, values: dict[str, Any]) -> Any:
    names = {f.name: f for f in dataclasses.fields(kind)}
    unknown = set(values) - set(names)
    if unknown:
        raise ValueError(f"unknown {kind.__name__} settings: {sorted(unknown)}")
    converted = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    return kind(**converted)
