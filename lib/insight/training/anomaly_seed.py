"""Anomaly-seeded instance selection: a warm start for weak-label INSIGHT training.

Why: trained from random weights on scan labels alone, INSIGHT's pooled loss never found the
phantom clots (model card, sessions 1-6): at initialisation the heatmap maximum sits on an arbitrary
location of every scan, and the loss only teaches that location. A clot, though, is *rare*: among the
soft-tissue voxels next to enhanced blood, the ones inside a filling defect look like nothing a
normal scan holds. So, using scan labels only (never a mask):

1. Fit a Gaussian mixture (the "normal appearance model") to the encoder's fixed features at
   search-region locations of the training scans labelled **no PE**.
2. In every training scan, take the ``M`` locations the mixture finds least likely (the most
   anomalous) as the scan's instances, each labelled with its scan's label.
3. Train the detection path (the encoder's learned layer, the reduction and the detection module)
   on those instances with BCE. The context module starts neutral (suppresses nothing) and learns
   in the later weak-label (MIL) epochs, if any.

In a PE scan the most anomalous locations are enriched for clot (on the default phantoms about 10%
of them are clot voxels, against well under 1% of the search region), while a normal scan's most
anomalous locations are exactly the look-alikes a detector must learn to ignore. Measured on
phantoms (docs/experiments/2026-11-23-cpu-anomaly-seeded-mil): on fixed per-voxel features, one
such round ranked validation/test PE phantoms at AUROC 0.83/0.75, where every unseeded weak method
had stayed at chance; with shuffled labels the same procedure stayed at chance.

Needs a fixed-feature encoder (``filter_bank`` or ``vessel_filters``): the mixture is fitted to
their parameter-free maps. An instance's training input is the patch of precomputed encoder input
around its location that the learned 3x3 layer sees, so the detection logit at the patch centre is
exactly the full-volume one (away from the volume's edges), while training costs no full-volume
passes. Shapes: per scan, locations are heatmap cells (z, y, x) at the encoder stride.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.mixture import GaussianMixture
from tqdm import tqdm

from insight.errors import InputError
from insight.models.insight_model import InsightModel
from insight.preprocessing import slice_stack
from insight.training.dataset import PreparedCase

__all__ = ["NormalAppearanceModel", "SeedInstances", "ScanLocations", "scan_locations", "most_anomalous",
           "extract_patches", "collect_seed_instances", "seed_detection_logits", "neutralise_context"]

logger = logging.getLogger(__name__)

#: Without progress bars, a log line every this many scans (a pass over 400 phantoms takes ~30 min on 2 cores).
_LOG_EVERY = 50

#: Covariance regularisation of the mixture (added to the diagonal, in standardised units).
_REG_COVAR = 1e-3
#: The context module's starting bias: sigmoid(-6) = 0.0025, so H = D * 0.9975.
_NEUTRAL_CONTEXT_BIAS = -6.0


class NormalAppearanceModel:
    """A Gaussian mixture of feature vectors from scans without PE; anomaly = -log-likelihood.

    Args:
        components: mixture components (64 on the phantoms; fewer when there are few samples).
        seed: random state of the mixture's initialisation.
    """

    def __init__(self, components: int, seed: int = 0) -> None:
        if components < 1:
            raise ValueError(f"components must be >= 1, got {components}")
        self.components = components
        self.seed = seed
        self.mean: np.ndarray | None = None
        self.scale: np.ndarray | None = None
        self.mixture: GaussianMixture | None = None

    def fit(self, samples: np.ndarray) -> "NormalAppearanceModel":
        """``samples`` [n, F] float: standardise per feature, then fit the mixture (full covariances)."""
        samples = np.asarray(samples, dtype=np.float64)
        if samples.ndim != 2 or len(samples) < 2:
            raise InputError(f"the normal appearance model needs at least 2 feature vectors, got shape {samples.shape}")
        components = min(self.components, len(samples) // 2)
        if components < self.components:
            logger.warning("only %d reference locations: %d mixture components instead of %d", len(samples),
                           components, self.components)
        self.mean, self.scale = samples.mean(0), samples.std(0) + 1e-6
        self.mixture = GaussianMixture(components, covariance_type="full", reg_covar=_REG_COVAR, max_iter=200,
                                       random_state=self.seed).fit((samples - self.mean) / self.scale)
        return self

    def anomaly(self, features: np.ndarray) -> np.ndarray:
        """[n, F] -> [n] float64: the negative log-likelihood under the mixture (higher = rarer)."""
        if self.mixture is None:
            raise RuntimeError("fit the normal appearance model first")
        return -self.mixture.score_samples((np.asarray(features, dtype=np.float64) - self.mean) / self.scale)


@dataclass
class ScanLocations:
    """A scan's search-region locations and what the encoder gives there.

    Attributes:
        encoder_input: [N, C', h, w] the encoder's precomputed input (its parameter-free part).
        locations: [L, 3] int64 heatmap cells (slice, row, column) inside the search region.
        features: [L, F] float32 the fixed feature vector at each location (the mixture's input).
    """

    encoder_input: torch.Tensor
    locations: torch.Tensor
    features: np.ndarray


@dataclass
class SeedInstances:
    """The selected instances of all training scans.

    Attributes:
        patches: [n, C', 2r+1, 2r+1] float16 encoder input around each instance (r: the learned
            layer's radius).
        labels: [n] float32 the scan label of each instance's scan.
        scan_index: [n] int64 which training scan each instance came from.
    """

    patches: torch.Tensor
    labels: torch.Tensor
    scan_index: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)


def _require_fixed_features(model: InsightModel) -> None:
    if not model.supports_precompute:
        raise InputError(f"anomaly seeding needs a fixed-feature encoder (filter_bank or vessel_filters), "
                         f"got {model.config.encoder!r}")


@torch.no_grad()
def scan_locations(model: InsightModel, case: PreparedCase, slice_context: int,
                   device: torch.device | str = "cpu", encoder_input: torch.Tensor | None = None) -> ScanLocations:
    """The search-region locations of ``case`` with their fixed features (see :class:`ScanLocations`).

    The features are the encoder's precomputed maps at each location (at stride 1 the fixed maps
    themselves, at coarser strides their average- and max-pooled versions). ``encoder_input``: the scan's
    precomputed encoder input [N, C', h, w] when already at hand (e.g. the trainer's cache), else
    it is computed here.
    """
    _require_fixed_features(model)
    if encoder_input is None:
        encoder_input = model.encoder.precompute(slice_stack(case.volume.float(), slice_context).to(device))
    encoder_input = encoder_input.to(device).float()
    if case.region is not None:
        cells = model.region_cells(case.region.to(device), tuple(encoder_input.shape[-2:]))[:, 0]
    else:
        cells = torch.ones((encoder_input.shape[0], *encoder_input.shape[-2:]), dtype=torch.bool, device=device)
    locations = cells.nonzero()
    features = encoder_input.permute(0, 2, 3, 1)[cells].cpu().numpy().astype(np.float32)
    return ScanLocations(encoder_input.cpu(), locations.cpu(), features)


def most_anomalous(scores: np.ndarray, count: int) -> np.ndarray:
    """Indices of the ``count`` highest ``scores`` [L], highest first (all of them when L <= count)."""
    scores = np.asarray(scores)
    if len(scores) <= count:
        return np.argsort(-scores, kind="stable")
    top = np.argpartition(-scores, count - 1)[:count]
    return top[np.argsort(-scores[top], kind="stable")]


def extract_patches(encoder_input: torch.Tensor, locations: torch.Tensor, radius: int) -> torch.Tensor:
    """In-plane patches of ``encoder_input`` [N, C, h, w] centred on ``locations`` [m, 3] (slice, row, col).

    Returns [m, C, 2r+1, 2r+1]; locations near the in-plane edge see edge-replicated values.
    """
    if len(locations) == 0:
        return encoder_input.new_zeros((0, encoder_input.shape[1], 2 * radius + 1, 2 * radius + 1))
    padded = F.pad(encoder_input, (radius,) * 4, mode="replicate") if radius else encoder_input
    offsets = torch.arange(2 * radius + 1)
    z = locations[:, 0]
    rows = (locations[:, 1, None] + offsets)[:, :, None]  # [m, 2r+1, 1] (padded coordinates)
    cols = (locations[:, 2, None] + offsets)[:, None, :]  # [m, 1, 2r+1]
    patches = padded[z[:, None, None], :, rows, cols]  # [m, 2r+1, 2r+1, C]
    return patches.permute(0, 3, 1, 2).contiguous()


def learned_radius(model: InsightModel) -> int:
    """In-plane radius of the encoder's learned layer (the reduction and detection are 1x1)."""
    return int(model.encoder.mix[0].kernel_size[0]) // 2


def collect_seed_instances(model: InsightModel, cases: list[PreparedCase], slice_context: int,
                           instances_per_scan: int, components: int, reference_per_scan: int, seed: int,
                           device: torch.device | str = "cpu", progress: bool = True,
                           encoder_inputs: list[torch.Tensor] | None = None) -> SeedInstances:
    """Fit the normal appearance model on the no-PE ``cases`` and select each case's instances.

    Args:
        instances_per_scan: M, the most anomalous locations kept per scan.
        components: mixture components.
        reference_per_scan: locations sampled from each no-PE scan to fit the mixture.
        seed: random state of the sampling and of the mixture.
        encoder_inputs: the precomputed encoder input of each case (aligned with ``cases``), if
            already cached; without it the fixed features are computed in each of the two passes
            (rather than held: at stride 1 they take about 90 MB per phantom).

    Labels: only the scan labels; no mask is read.
    """
    if encoder_inputs is not None and len(encoder_inputs) != len(cases):
        raise ValueError(f"{len(encoder_inputs)} cached encoder inputs for {len(cases)} cases")

    def locations_of(index: int) -> ScanLocations:
        cached = encoder_inputs[index] if encoder_inputs is not None else None
        return scan_locations(model, cases[index], slice_context, device, cached)

    _require_fixed_features(model)
    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    reference = []
    normals = [i for i, c in enumerate(cases) if c.label == 0]
    for position, index in enumerate(tqdm(normals, desc="normal reference", disable=not progress, unit="scan")):
        _log_progress(progress, "normal reference", position, len(normals), started)
        features = locations_of(index).features
        if len(features):
            reference.append(features[rng.choice(len(features), min(reference_per_scan, len(features)), replace=False)])
    if not reference:
        raise InputError("anomaly seeding needs no-PE training scans with a non-empty search region")
    reference_features = np.concatenate(reference)
    normal = NormalAppearanceModel(components, seed).fit(reference_features)
    logger.info("normal appearance model: %d components on %d locations x %d features from %d no-PE scans (%.0f s)",
                normal.mixture.n_components, *reference_features.shape, len(reference), time.perf_counter() - started)
    radius = learned_radius(model)
    patches, labels, owners = [], [], []
    for index, case in enumerate(tqdm(cases, desc="selecting instances", disable=not progress, unit="scan")):
        _log_progress(progress, "selecting instances", index, len(cases), started)
        scan = locations_of(index)
        if not len(scan.features):
            logger.warning("%s: empty search region, no instances", case.name)
            continue
        chosen = torch.from_numpy(most_anomalous(normal.anomaly(scan.features), instances_per_scan))
        patches.append(extract_patches(scan.encoder_input, scan.locations[chosen], radius).to(torch.float16))
        labels.append(torch.full((len(chosen),), float(case.label)))
        owners.append(torch.full((len(chosen),), index, dtype=torch.int64))
    instances = SeedInstances(torch.cat(patches), torch.cat(labels), torch.cat(owners))
    logger.info("selected %d instances from %d scans in %.0f s (%.0f MB)", len(instances), len(patches),
                time.perf_counter() - started, instances.patches.numel() * 2 / 1e6)
    return instances


def _log_progress(progress: bool, stage: str, position: int, total: int, started: float) -> None:
    """Without progress bars, one log line every ``_LOG_EVERY`` scans."""
    if not progress and position and position % _LOG_EVERY == 0:
        logger.info("%s: %d/%d scans (%.0f s so far)", stage, position, total, time.perf_counter() - started)


def seed_detection_logits(model: InsightModel, patches: torch.Tensor) -> torch.Tensor:
    """Detection logits at the centre of each patch: [m, C', 2r+1, 2r+1] -> [m, K].

    Equal to the full-volume detection logits at those locations (same weights, same mode).
    """
    features = model.reduce(model.encoder(patches, precomputed=True))
    logits = model.detection(features)
    centre = patches.shape[-1] // 2
    return logits[:, :, centre, centre]


@torch.no_grad()
def neutralise_context(model: InsightModel) -> None:
    """Make the context module suppress nothing to start with: X = sigmoid(-6) everywhere, H ~ D."""
    if model.context is None:
        return
    last = model.context.layers[-1].conv
    last.weight.zero_()
    last.bias.fill_(_NEUTRAL_CONTEXT_BIAS)

