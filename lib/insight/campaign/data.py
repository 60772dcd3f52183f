"""The campaign's cases: phantoms of the pool and the test split, and the pool's weak labels.

A pool case starts with what a real campaign has: the image and its scan-level label. The weak-label
stage runs the INSIGHT model once per pool case (scan probability, heatmap, embedding) and turns the
heatmap into a pseudo-mask (:mod:`insight.pseudo_masks`). The truth clot mask stays hidden until the
simulated clinician corrects the case. Both label versions are put onto the segmentation grid once
(:func:`insight.segmentation.prepare_pair`, read back from a work folder) so that every round's
training set is a choice between two prepared pairs per case.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from insight.campaign.config import CampaignConfig, SplitSpec
from insight.inference import InsightPredictor
from insight.io import write_image
from insight.phantom import PhantomConfig, generate_case
from insight.pseudo_masks import MaskScore, PseudoMaskGenerator, predictor_heatmap_source, score_mask
from insight.segmentation.dataset import LabeledVolume, PreparedPair, prepare_pair

__all__ = ["CampaignCase", "PoolCase", "generate_split", "load_insight_predictor", "weak_label_pool"]

logger = logging.getLogger(__name__)


@dataclass
class CampaignCase:
    """A phantom with its truth.

    Attributes:
        name: phantom case name.
        image: int16 HU SimpleITK image (LPS, mm).
        truth: bool [Z, Y, X] clot mask on the image grid.
        pe: scan-level label (1 = at least one embolus).
        n_emboli: emboli placed by the generator.
    """

    name: str
    image: sitk.Image
    truth: np.ndarray
    pe: int
    n_emboli: int


@dataclass
class PoolCase(CampaignCase):
    """A pool case after the weak-label stage.

    Attributes:
        pe_probability: INSIGHT scan-level PE probability in [0, 1].
        heatmap_mask: bool [Z, Y, X], heatmap >= the model's finding threshold, on the image grid.
        embedding: float32 [D] case embedding (:mod:`insight.embeddings`).
        pseudo_mask: bool [Z, Y, X] pseudo-mask (empty for a scan labelled no-PE).
        pseudo_score: the pseudo-mask against the truth.
        pseudo_pair, final_pair: the case on the segmentation grid with its pseudo-mask (source
            ``pseudo``) and with its truth mask, i.e. the clinician's correction (source ``final``).
    """

    pe_probability: float = float("nan")
    heatmap_mask: np.ndarray | None = None
    embedding: np.ndarray | None = None
    pseudo_mask: np.ndarray | None = None
    pseudo_score: MaskScore | None = None
    pseudo_pair: PreparedPair | None = None
    final_pair: PreparedPair | None = None


def generate_split(split: SplitSpec, phantom: PhantomConfig) -> list[CampaignCase]:
    """Phantom cases ``0 .. n-1`` of the split's seed (deterministic)."""
    cases = []
    for index in range(split.n):
        case = generate_case(split.seed, index, phantom)
        cases.append(CampaignCase(case.name, case.to_sitk(case.image_hu), case.clot_mask.astype(bool), int(case.pe),
                                  int(case.metadata.get("n_emboli", 0))))
    return cases


def load_insight_predictor(config: CampaignConfig, device: str) -> InsightPredictor:
    """The INSIGHT model of the campaign, QA off (bulk heatmaps), on the configured grid."""
    predictor = InsightPredictor.from_checkpoint(config.insight.checkpoint_path, device, run_qa=False)
    if config.insight.grid_spacing_xyz is not None:
        spacing = tuple(float(s) for s in config.insight.grid_spacing_xyz)
        logger.warning("INSIGHT runs on a %s mm grid instead of the %s mm it was trained on (smoke settings)",
                       spacing, predictor.config.preprocess.target_spacing_xyz)
        predictor.config = dataclasses.replace(
            predictor.config, preprocess=dataclasses.replace(predictor.config.preprocess, target_spacing_xyz=spacing))
    return predictor


def weak_label_pool(cases: Iterable[CampaignCase], predictor: InsightPredictor, config: CampaignConfig,
                    work_dir: Path) -> list[PoolCase]:
    """INSIGHT pass, pseudo-mask and prepared label pairs for every pool case.

    Args:
        cases: the pool phantoms.
        predictor: the INSIGHT model (:func:`load_insight_predictor`).
        config: pseudo-mask settings, segmentation grid and label weights.
        work_dir: scratch folder for the volumes :func:`prepare_pair` reads (the caller removes it).
    """
    generator = PseudoMaskGenerator(config.pseudo_masks,
                                    predictor_heatmap_source(predictor) if config.relook_with_model else None)
    threshold = predictor.config.inference.finding_threshold
    pool = []
    for case in cases:
        started = time.perf_counter()
        result = predictor.predict_image(case.image, name=case.name)
        pseudo = generator.generate(case.image, result.heatmap, scan_label=case.pe)
        pseudo_mask = sitk.GetArrayFromImage(pseudo.mask) != 0
        score = score_mask(pseudo_mask, case.truth, case.name)
        image_path = write_image(case.image, work_dir / "images" / f"{case.name}.nii.gz")
        pairs = {}
        for source, mask in (("pseudo", pseudo.mask), ("final", _as_image(case.truth, case.image))):
            label_path = write_image(mask, work_dir / source / f"{case.name}.nii.gz")
            volume = LabeledVolume(case.name, image_path, label_path, source, config.train.weight_for(source))
            pairs[source] = prepare_pair(volume, config.segmentation.preprocess)
        pool.append(PoolCase(
            case.name, case.image, case.truth, case.pe, case.n_emboli,
            pe_probability=float(result.pe_probability),
            heatmap_mask=sitk.GetArrayViewFromImage(result.heatmap) >= threshold,
            embedding=np.asarray(result.embedding, dtype=np.float32),
            pseudo_mask=pseudo_mask, pseudo_score=score, pseudo_pair=pairs["pseudo"], final_pair=pairs["final"]))
        logger.info("%s (PE %d): p=%.4f, pseudo-mask %d voxel(s), Dice %.3f, emboli hit %d/%d (%.1f s)", case.name,
                    case.pe, result.pe_probability, score.predicted_voxels, score.dice, score.n_hit, score.n_emboli,
                    time.perf_counter() - started)
    return pool


def _as_image(mask: np.ndarray, reference: sitk.Image) -> sitk.Image:
    image = sitk.GetImageFromArray(mask.astype(np.uint8))
    image.CopyInformation(reference)
    return image
