"""Settings of the PE segmentation network, stored in every checkpoint so infer matches training.

Geometry order: ``*_xyz`` is SimpleITK (x, y, z) order in mm; ``*_zyx`` is array order [z, y, x].
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from insight.config import PreprocessConfig

__all__ = ["SEG_PREPROCESS", "SegNetworkConfig", "SegInferenceConfig", "SegmentationConfig", "SegTrainConfig"]

#: The segmentation grid: 2 mm isotropic, LPS, the INSIGHT HU window (W 700 / L 100), cropped to the body.
SEG_PREPROCESS = PreprocessConfig(target_spacing_xyz=(2.0, 2.0, 2.0), slice_context=0)


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


@dataclass(frozen=True)
class SegNetworkConfig:
    """A MONAI 3D UNet (``monai.networks.nets.UNet``), one input channel, background + PE outputs.

    Attributes:
        channels: feature widths per level; each level after the first halves the resolution.
        num_res_units: residual units per block (0 = plain convolutions).
        dropout: dropout probability inside the blocks.
    """

    channels: tuple[int, ...] = (8, 16, 32, 64)
    num_res_units: int = 1
    dropout: float = 0.0

    def __post_init__(self) -> None:
        _require(len(self.channels) >= 2 and all(int(c) > 0 for c in self.channels),
                 f"channels needs at least two positive widths, got {self.channels}")
        _require(self.num_res_units >= 0, f"num_res_units must be >= 0, got {self.num_res_units}")
        _require(0.0 <= self.dropout < 1.0, f"dropout must be in [0, 1), got {self.dropout}")

    @property
    def downsampling(self) -> int:
        """Total downsampling factor: patch sides must be multiples of it."""
        return 2 ** (len(self.channels) - 1)


@dataclass(frozen=True)
class SegInferenceConfig:
    """Sliding-window inference and post-processing.

    Attributes:
        sw_batch_size: windows per forward pass.
        overlap: window overlap fraction (monai.inferers.sliding_window_inference).
        threshold: PE probability (after resampling to the input grid) at or above which a voxel is PE.
        min_region_volume_mm3: PE regions at or below this volume are removed (0 keeps all).
    """

    sw_batch_size: int = 2
    overlap: float = 0.25
    threshold: float = 0.5
    min_region_volume_mm3: float = 0.0

    def __post_init__(self) -> None:
        _require(self.sw_batch_size >= 1, f"sw_batch_size must be >= 1, got {self.sw_batch_size}")
        _require(0.0 <= self.overlap < 1.0, f"overlap must be in [0, 1), got {self.overlap}")
        _require(0.0 < self.threshold < 1.0, f"threshold must be in (0, 1), got {self.threshold}")
        _require(self.min_region_volume_mm3 >= 0, "min_region_volume_mm3 must be >= 0")


@dataclass(frozen=True)
class SegmentationConfig:
    """Everything a segmentation checkpoint needs to be used.

    Attributes:
        preprocess: the grid and HU window (shared with INSIGHT's preprocessing code).
        network: the UNet.
        patch_size_zyx: training patch and inference window, voxels [z, y, x] on the model grid.
        inference: sliding window and post-processing.
    """

    preprocess: PreprocessConfig = field(default_factory=lambda: SEG_PREPROCESS)
    network: SegNetworkConfig = field(default_factory=SegNetworkConfig)
    patch_size_zyx: tuple[int, int, int] = (64, 64, 64)
    inference: SegInferenceConfig = field(default_factory=SegInferenceConfig)

    def __post_init__(self) -> None:
        _require(self.preprocess.slice_context == 0,
                 "the 3D network reads one channel: preprocess.slice_context must be 0, got "
                 f"{self.preprocess.slice_context}")
        factor = self.network.downsampling
        patch = self.patch_size_zyx
        _require(len(patch) == 3 and all(int(p) > 0 and int(p) % factor == 0 for p in patch),
                 f"patch_size_zyx must be three positive multiples of {factor} (the network's downsampling), "
                 f"got {self.patch_size_zyx}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> "SegmentationConfig":
        """Rebuild from :meth:`to_dict`; unknown keys raise ValueError (a newer checkpoint)."""
        unknown = set(payload) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown SegmentationConfig settings: {sorted(unknown)}")
        return cls(
            preprocess=_build(PreprocessConfig, payload.get("preprocess", {})),
            network=_build(SegNetworkConfig, payload.get("network", {})),
            patch_size_zyx=tuple(payload.get("patch_size_zyx", (64, 64, 64))),
            inference=_build(SegInferenceConfig, payload.get("inference", {})),
        )


@dataclass(frozen=True)
class SegTrainConfig:
    """Training settings (not needed to use a checkpoint, stored beside it).

    Attributes:
        epochs: passes over the training cases (each rank sees its share per epoch).
        learning_rate: AdamW learning rate (cosine decay over the epochs).
        weight_decay: AdamW weight decay.
        cases_per_batch: volumes per optimizer step (per process).
        samples_per_case: patches cropped from each volume per step (RandCropByPosNegLabeld).
        positive_fraction: share of patches centred on a PE voxel (when the label has any).
        final_weight: loss weight of a case with a clinician-corrected ("final") label.
        pseudo_weight: loss weight of a case with a pseudo-mask.
        seed: seeds the network, the case order and the augmentation; a run is reproducible for a
            seed on one device and process count.
        amp: bf16 autocast on CUDA (ignored on CPU).
        augment: random left-right flips and small intensity scale/shift.
        num_threads: torch CPU threads per process (0 = torch default).
    """

    epochs: int = 50
    learning_rate: float = 2e-3
    weight_decay: float = 1e-5
    cases_per_batch: int = 1
    samples_per_case: int = 2
    positive_fraction: float = 0.5
    final_weight: float = 3.0
    pseudo_weight: float = 1.0
    seed: int = 0
    amp: bool = True
    augment: bool = True
    num_threads: int = 0

    def __post_init__(self) -> None:
        _require(self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}")
        _require(self.learning_rate > 0 and self.weight_decay >= 0, "learning_rate must be > 0, weight_decay >= 0")
        _require(self.cases_per_batch >= 1 and self.samples_per_case >= 1,
                 "cases_per_batch and samples_per_case must be >= 1")
        _require(0.0 <= self.positive_fraction <= 1.0,
                 f"positive_fraction must be in [0, 1], got {self.positive_fraction}")
        _require(self.final_weight > 0 and self.pseudo_weight > 0, "final_weight and pseudo_weight must be > 0")
        _require(self.num_threads >= 0, f"num_threads must be >= 0, got {self.num_threads}")

    def weight_for(self, source: str) -> float:
        """The loss weight of a case whose label came from ``source`` (``final`` or ``pseudo``)."""
        if source == "final":
            return self.final_weight
        if source == "pseudo":
            return self.pseudo_weight
        raise ValueError(f"label source must be 'final' or 'pseudo', got {source!r}")


def _build(kind: type, values: dict[str, Any]) -> Any:
    names = {f.name for f in dataclasses.fields(kind)}
    unknown = set(values) - names
    if unknown:
        raise ValueError(f"unknown {kind.__name__} settings: {sorted(unknown)}")
    return kind(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})
