"""Settings of the heatmap -> pseudo-mask conversion (one typed place, stored in every summary)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

__all__ = ["PseudoMaskConfig", "THRESHOLD_MODES"]

THRESHOLD_MODES = ("relative", "absolute")


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


@dataclass(frozen=True)
class PseudoMaskConfig:
    """How a heatmap (scores in [0, 1] on the CT grid) becomes a voxel mask.

    Attributes:
        threshold_mode: ``relative``: the hysteresis thresholds are fractions of the current
            heatmap maximum (inside the allowed region), re-taken in every round, so that weaker
            regions pass once stronger ones are masked (Label up's "mask what was found, look
            again"); ``absolute``: they are heatmap values.
        high_threshold: seeds: voxels at or above it start a region (fraction or value).
        low_threshold: regions grow from seeds through voxels above it (fraction or value).
        min_peak: absolute floor: nothing below this heatmap value becomes a seed; the rounds stop
            once the remaining maximum falls below it.
        max_iterations: rounds of find / mask / look again (1 = plain hysteresis).
        mask_margin_mm: found regions are masked out with this margin before the next round.
        restrict_to_vessels: regions must start near contrast-enhanced blood (seeds within
            ``vessel_dilation_mm`` of ``enhanced_hu`` voxels) and may grow only through soft tissue
            (HU >= ``soft_tissue_floor_hu``), so an occluded stretch of artery (clot all across the
            lumen, far from any contrast) is still reached from its ends, while lung, air and fat never are.
        enhanced_hu: (low, high) HU of contrast-enhanced blood; pulmonary arteries in CTPA lie
            at about 250-450 HU, partial-volume blurred down to ~150 HU in small branches.
        vessel_dilation_mm: seeds lie within this distance (mm) of enhanced blood (clot, 20-90 HU,
            sits inside and beside it).
        growth_dilation_mm: when set, regions also grow no farther than this from enhanced blood;
            None lets them follow soft tissue (the heatmap's low threshold bounds them).
        soft_tissue_floor_hu: voxels below this HU (lung, air, fat) are never part of a mask.
        min_region_volume_mm3: connected regions (26-connectivity) at or below this volume are removed.
        fill_shell_mm: when a model re-looks, found regions are replaced in the image by the median
            HU of enhanced blood in a shell this thick around them.
    """

    threshold_mode: str = "relative"
    high_threshold: float = 0.6
    low_threshold: float = 0.5
    min_peak: float = 0.25
    max_iterations: int = 3
    mask_margin_mm: float = 2.0
    restrict_to_vessels: bool = True
    enhanced_hu: tuple[float, float] = (150.0, 700.0)
    vessel_dilation_mm: float = 5.0
    growth_dilation_mm: float | None = None
    soft_tissue_floor_hu: float = -100.0
    min_region_volume_mm3: float = 20.0
    fill_shell_mm: float = 4.0

    def __post_init__(self) -> None:
        _require(self.threshold_mode in THRESHOLD_MODES,
                 f"threshold_mode must be one of {THRESHOLD_MODES}, got {self.threshold_mode!r}")
        _require(0.0 < self.low_threshold <= self.high_threshold <= 1.0,
                 f"need 0 < low_threshold <= high_threshold <= 1, got {self.low_threshold}, {self.high_threshold}")
        _require(0.0 <= self.min_peak < 1.0, f"min_peak must be in [0, 1), got {self.min_peak}")
        _require(self.max_iterations >= 1, f"max_iterations must be >= 1, got {self.max_iterations}")
        _require(len(self.enhanced_hu) == 2 and self.enhanced_hu[0] < self.enhanced_hu[1],
                 f"enhanced_hu must be (low, high) with low < high, got {self.enhanced_hu}")
        for name in ("mask_margin_mm", "vessel_dilation_mm", "min_region_volume_mm3", "fill_shell_mm"):
            _require(getattr(self, name) >= 0, f"{name} must be >= 0, got {getattr(self, name)}")
        _require(self.fill_shell_mm > 0, "fill_shell_mm must be > 0")
        _require(self.growth_dilation_mm is None or self.growth_dilation_mm >= self.vessel_dilation_mm,
                 f"growth_dilation_mm must be None or >= vessel_dilation_mm, got {self.growth_dilation_mm}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> "PseudoMaskConfig":
        """Rebuild from :meth:`to_dict`; unknown keys raise ValueError."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(payload) - names
        if unknown:
            raise ValueError(f"unknown PseudoMaskConfig settings: {sorted(unknown)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in payload.items()})
