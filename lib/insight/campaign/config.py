"""The campaign simulation's configuration file (JSON): data, weak labels, segmentation, rounds.

Layout (``name``, ``pool``, ``test`` and ``campaign`` are required; unknown keys are errors)::

    {
      "name": "small",
      "description": "...",
      "device": "cpu",
      "phantom":      {PhantomConfig fields, e.g. "shape_xyz": [48, 48, 24], "max_emboli": 3},
      "pool":         {"seed": 2100, "n": 8},       # cases to label: scan labels known, masks not
      "test":         {"seed": 2200, "n": 3},       # held out, scored against the truth clot masks
      "insight":      {"checkpoint": null,          # null: the shipped demo model
                       "grid_spacing_xyz": null},   # override the model's grid (mm): smoke tests only
      "pseudo_masks": {PseudoMaskConfig fields, "relook_with_model": false},
      "segmentation": {"grid_spacing_xyz": [2, 2, 2], "network": {SegNetworkConfig fields},
                       "patch_size_zyx": [64, 64, 64], "inference": {SegInferenceConfig fields}},
      "train":        {SegTrainConfig fields: epochs, learning_rate, final_weight, seed, num_threads, ...},
      "campaign":     {"rounds": 5, "k": 4, "strategies": ["uncertainty", "disagreement", "diversity"],
                       "random_seeds": [0, 1, 2], "candidates": "positive_scans",
                       "disagreement_mask": "heatmap", "reference_all_corrected": true}
    }

``candidates``: ``positive_scans`` offers only scans whose weak label is PE (a no-PE scan's mask is
already exact: empty, so correcting it teaches nothing), ``all`` offers every uncorrected scan as the
server does. ``disagreement_mask``: the heatmap-derived mask compared with the segmentation:
``heatmap`` (heatmap >= the INSIGHT model's finding threshold, the server's rule) or ``pseudo_mask``.
``reference_all_corrected``: also train one model with every candidate corrected, the most the
corrections can give with this pool and budget (the headroom the strategies compete for).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from insight.errors import InputError
from insight.json_config import check_top_level, dataclass_from_json, read_json_config
from insight.phantom import PhantomConfig
from insight.pseudo_masks.config import PseudoMaskConfig
from insight.segmentation.config import (SEG_PREPROCESS, SegInferenceConfig, SegmentationConfig, SegNetworkConfig,
                                         SegTrainConfig)

__all__ = ["CANDIDATE_RULES", "DISAGREEMENT_MASKS", "SELECTION_STRATEGIES", "DEFAULT_INSIGHT_CHECKPOINT", "SplitSpec",
           "InsightSpec", "RoundsSpec", "CampaignConfig", "load_campaign_config", "parse_campaign_config"]

#: Strategies compared against random selection (random is always run, once per ``random_seeds`` entry).
SELECTION_STRATEGIES = ("uncertainty", "disagreement", "diversity")
CANDIDATE_RULES = ("positive_scans", "all")
DISAGREEMENT_MASKS = ("heatmap", "pseudo_mask")
#: The INSIGHT checkpoint shipped in the repository (``insight.checkpoint: null``).
DEFAULT_INSIGHT_CHECKPOINT = Path(__file__).resolve().parents[3] / "sample-data" / "models" / "pe_insight_demo.pt"

_TOP_KEYS = {"name", "description", "device", "phantom", "pool", "test", "insight", "pseudo_masks", "segmentation",
             "train", "campaign"}


@dataclass(frozen=True)
class SplitSpec:
    """Phantom cases ``0 .. n-1`` of ``seed``."""

    seed: int
    n: int

    def __post_init__(self) -> None:
        if not (_is_int(self.seed) and self.seed >= 0 and _is_int(self.n) and self.n >= 1):
            raise ValueError(f"needs an integer seed >= 0 and n >= 1, got seed={self.seed!r}, n={self.n!r}")


@dataclass(frozen=True)
class InsightSpec:
    """The INSIGHT model giving heatmaps, scan probabilities and embeddings of the pool.

    Attributes:
        checkpoint: its file; None = :data:`DEFAULT_INSIGHT_CHECKPOINT`.
        grid_spacing_xyz: when set, the model runs on this grid (mm) instead of the one it was trained
            on: faster, and only for smoke runs whose numbers are not read.
    """

    checkpoint: str | None = None
    grid_spacing_xyz: tuple[float, float, float] | None = None

    def __post_init__(self) -> None:
        if self.grid_spacing_xyz is not None and (len(self.grid_spacing_xyz) != 3
                                                  or not all(float(s) > 0 for s in self.grid_spacing_xyz)):
            raise ValueError(f"grid_spacing_xyz must be null or three positive numbers (mm), got "
                             f"{self.grid_spacing_xyz!r}")

    @property
    def checkpoint_path(self) -> Path:
        return Path(self.checkpoint) if self.checkpoint else DEFAULT_INSIGHT_CHECKPOINT


@dataclass(frozen=True)
class RoundsSpec:
    """The correction rounds.

    Attributes:
        rounds: correction rounds after round 0 (pseudo-masks only).
        k: cases corrected per round.
        strategies: which of :data:`SELECTION_STRATEGIES` to run.
        random_seeds: one random-selection run per seed (at least one: it is the reference).
        candidates: one of :data:`CANDIDATE_RULES`.
        disagreement_mask: one of :data:`DISAGREEMENT_MASKS`.
        reference_all_corrected: also train and score a model with every candidate corrected.
    """

    rounds: int
    k: int
    strategies: tuple[str, ...] = SELECTION_STRATEGIES
    random_seeds: tuple[int, ...] = (0, 1, 2)
    candidates: str = "positive_scans"
    disagreement_mask: str = "heatmap"
    reference_all_corrected: bool = True

    def __post_init__(self) -> None:
        if not (_is_int(self.rounds) and self.rounds >= 1 and _is_int(self.k) and self.k >= 1):
            raise ValueError(f"rounds and k must be integers >= 1, got {self.rounds!r}, {self.k!r}")
        unknown = [s for s in self.strategies if s not in SELECTION_STRATEGIES]
        if unknown or len(set(self.strategies)) != len(self.strategies):
            raise ValueError(f"strategies must be distinct names from {SELECTION_STRATEGIES} (random runs "
                             f"always, see random_seeds), got {list(self.strategies)}")
        if not self.random_seeds or not all(_is_int(s) and s >= 0 for s in self.random_seeds) \
                or len(set(self.random_seeds)) != len(self.random_seeds):
            raise ValueError(f"random_seeds must be distinct integers >= 0, at least one, got {self.random_seeds!r}")
        if self.candidates not in CANDIDATE_RULES:
            raise ValueError(f"candidates must be one of {CANDIDATE_RULES}, got {self.candidates!r}")
        if self.disagreement_mask not in DISAGREEMENT_MASKS:
            raise ValueError(f"disagreement_mask must be one of {DISAGREEMENT_MASKS}, got {self.disagreement_mask!r}")
        if not isinstance(self.reference_all_corrected, bool):
            raise ValueError(f"reference_all_corrected must be true or false, got {self.reference_all_corrected!r}")

    @property
    def corrections(self) -> int:
        """Cases corrected by the end of the campaign."""
        return self.rounds * self.k


@dataclass(frozen=True)
class CampaignConfig:
    """A parsed campaign configuration (see the module docstring for the file)."""

    name: str
    pool: SplitSpec
    test: SplitSpec
    rounds: RoundsSpec
    description: str = ""
    device: str = "cpu"
    phantom: PhantomConfig = field(default_factory=PhantomConfig)
    insight: InsightSpec = field(default_factory=InsightSpec)
    pseudo_masks: PseudoMaskConfig = field(default_factory=PseudoMaskConfig)
    relook_with_model: bool = False
    segmentation: SegmentationConfig = field(default_factory=SegmentationConfig)
    train: SegTrainConfig = field(default_factory=SegTrainConfig)

    def to_json(self) -> dict[str, Any]:
        """Every setting, defaults included (JSON-ready apart from tuples, which serialize as lists)."""
        return {"name": self.name, "description": self.description, "device": self.device,
                "phantom": dataclasses.asdict(self.phantom), "pool": dataclasses.asdict(self.pool),
                "test": dataclasses.asdict(self.test), "insight": dataclasses.asdict(self.insight),
                "pseudo_masks": {**self.pseudo_masks.to_dict(), "relook_with_model": self.relook_with_model},
                "segmentation": self.segmentation.to_dict(), "train": dataclasses.asdict(self.train),
                "campaign": dataclasses.asdict(self.rounds)}


def load_campaign_config(path: str | Path) -> CampaignConfig:
    """Read and check a campaign configuration file.

    Raises:
        InputError: the file is missing, not JSON, or any setting is invalid (the message says which).
    """
    payload = read_json_config(path, "campaign config")
    return parse_campaign_config(payload, source=str(path))


def parse_campaign_config(payload: Any, source: str = "campaign config") -> CampaignConfig:
    """Build a :class:`CampaignConfig` from the JSON payload (InputError naming the bad setting)."""
    check_top_level(payload, _TOP_KEYS, source)
    for required in ("name", "pool", "test", "campaign"):
        if required not in payload:
            raise InputError(f"{source}: '{required}' is required")
    name = payload["name"]
    if not isinstance(name, str) or not name.strip():
        raise InputError(f"{source}: 'name' must be a non-empty string")
    try:
        pseudo = dict(payload.get("pseudo_masks", {}))
        relook = pseudo.pop("relook_with_model", False)
        if not isinstance(relook, bool):
            raise ValueError("'pseudo_masks': relook_with_model must be true or false")
        config = CampaignConfig(
            name=name.strip(),
            description=str(payload.get("description", "")),
            device=_device(payload.get("device", "cpu")),
            phantom=dataclass_from_json(PhantomConfig, payload.get("phantom", {}), "phantom"),
            pool=dataclass_from_json(SplitSpec, payload["pool"], "pool"),
            test=dataclass_from_json(SplitSpec, payload["test"], "test"),
            insight=dataclass_from_json(InsightSpec, payload.get("insight", {}), "insight"),
            pseudo_masks=dataclass_from_json(PseudoMaskConfig, pseudo, "pseudo_masks"),
            relook_with_model=relook,
            segmentation=_segmentation(payload.get("segmentation", {})),
            train=dataclass_from_json(SegTrainConfig, payload.get("train", {}), "train"),
            rounds=dataclass_from_json(RoundsSpec, payload["campaign"], "campaign"),
        )
    except (ValueError, TypeError) as err:
        raise InputError(f"{source}: {err}") from err
    if config.pool.seed == config.test.seed:
        raise InputError(f"{source}: pool and test must come from different phantom seeds (both {config.pool.seed})")
    return config


def _segmentation(values: Any) -> SegmentationConfig:
    if not isinstance(values, dict):
        raise ValueError("'segmentation' must be a JSON object")
    allowed = {"grid_spacing_xyz", "network", "patch_size_zyx", "inference"}
    unknown = set(values) - allowed
    if unknown:
        raise ValueError(f"'segmentation': unknown settings {sorted(unknown)} (allowed: {sorted(allowed)})")
    base = SegmentationConfig()
    spacing = values.get("grid_spacing_xyz", base.preprocess.target_spacing_xyz)
    if not isinstance(spacing, (list, tuple)) or len(spacing) != 3:
        raise ValueError(f"'segmentation': grid_spacing_xyz must be three numbers (mm), got {spacing!r}")
    return SegmentationConfig(
        preprocess=dataclasses.replace(SEG_PREPROCESS, target_spacing_xyz=tuple(float(s) for s in spacing)),
        network=dataclass_from_json(SegNetworkConfig, values.get("network", {}), "segmentation.network"),
        patch_size_zyx=tuple(values.get("patch_size_zyx", base.patch_size_zyx)),
        inference=dataclass_from_json(SegInferenceConfig, values.get("inference", {}), "segmentation.inference"),
    )


def _device(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("'device' must be a string such as auto, cpu or cuda")
    return value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
