"""The simulated annotation campaign, from scan labels to corrected masks, round by round.

1. Phantoms: a pool (scan labels known, masks hidden) and a test split (another seed).
2. Weak labels: INSIGHT heatmaps of the pool -> pseudo-masks (:mod:`insight.campaign.data`).
3. Round 0: the segmentation model trained on pseudo-masks alone, scored on the test split. Every
   strategy starts from this one model.
4. Reference (``reference_all_corrected``): the model trained with every candidate corrected, the
   ceiling of this pool and training budget.
5. Rounds 1..R, per strategy (and per random seed): pick ``k`` uncorrected candidates with the
   current model, replace their pseudo-masks with the truth clot masks (the simulated clinician's
   correction, weighted as ``final`` labels), retrain from scratch (:mod:`insight.campaign.training`),
   score on the test split.

Deterministic for a configuration on one device and thread count: phantoms, the INSIGHT pass, the
random draws (seeded by (seed, round)) and the training (seeded by ``train.seed``) all are.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from insight import __version__
from insight.campaign.config import CampaignConfig
from insight.campaign.data import CampaignCase, PoolCase, generate_split, load_insight_predictor, weak_label_pool
from insight.campaign.selection import select_cases
from insight.campaign.training import evaluate_on, round_pairs, segment_case, train_round
from insight.devices import resolve_device
from insight.errors import InputError
from insight.pseudo_masks import summarize_scores
from insight.segmentation.predictor import SegmentationPredictor

__all__ = ["RESULTS_FORMAT", "run_campaign", "arm_names"]

logger = logging.getLogger(__name__)

#: Version of the results JSON layout.
RESULTS_FORMAT = 1
#: Test-set numbers copied into every round record (the full summary sits beside them under ``metrics``).
ROUND_METRICS = ("mean_dice_positive", "embolus_sensitivity", "false_positives_per_scan")


def arm_names(config: CampaignConfig) -> list[tuple[str, str, int | None]]:
    """(arm name, strategy, random seed) of every run: the strategies, then ``random_seed<S>`` per seed."""
    arms: list[tuple[str, str, int | None]] = [(s, s, None) for s in config.rounds.strategies]
    arms += [(f"random_seed{seed}", "random", seed) for seed in config.rounds.random_seeds]
    return arms


def run_campaign(config: CampaignConfig, device: str | None = None) -> dict[str, Any]:
    """Run the whole simulation; returns the results (see :mod:`insight.campaign.report` for the files).

    Raises:
        InputError: a test split without emboli, or a pool with fewer candidates than ``rounds * k``.
    """
    started = time.perf_counter()
    dev = resolve_device(device or config.device)
    if dev.type == "cpu" and config.train.num_threads > 0:
        torch.set_num_threads(config.train.num_threads)
    timings: dict[str, float] = {}

    tick = time.perf_counter()
    pool_phantoms = generate_split(config.pool, config.phantom)
    test = generate_split(config.test, config.phantom)
    timings["phantoms"] = time.perf_counter() - tick
    if not any(case.truth.any() for case in test):
        raise InputError(f"the test split (seed {config.test.seed}, n {config.test.n}) holds no embolus: "
                         "give it more cases or another seed")
    candidates = _candidates(pool_phantoms, config)
    if len(candidates) < config.rounds.corrections:
        raise InputError(f"the pool offers {len(candidates)} candidate scan(s) ({config.rounds.candidates}) but "
                         f"{config.rounds.rounds} round(s) of {config.rounds.k} need {config.rounds.corrections}: "
                         "enlarge the pool or correct fewer cases")

    with tempfile.TemporaryDirectory(prefix="insight-campaign-") as scratch:
        work = Path(scratch)
        tick = time.perf_counter()
        insight = load_insight_predictor(config, str(dev))
        pool = weak_label_pool(pool_phantoms, insight, config, work / "weak")
        timings["weak_labels"] = time.perf_counter() - tick

        tick = time.perf_counter()
        model0, info0 = train_round(round_pairs(pool, []), config.segmentation, config.train, work / "round0", dev)
        round0 = _round_record(0, [], [], {}, evaluate_on(model0, test), info0)
        logger.info("round 0 (pseudo-masks only): %s", _describe(round0))
        timings["round0"] = time.perf_counter() - tick

        all_corrected = None
        if config.rounds.reference_all_corrected:
            tick = time.perf_counter()
            model_all, info_all = train_round(round_pairs(pool, candidates), config.segmentation, config.train,
                                              work / "all_corrected", dev)
            all_corrected = _round_record(None, [], candidates, {}, evaluate_on(model_all, test), info_all)
            logger.info("every candidate corrected (%d): %s", len(candidates), _describe(all_corrected))
            timings["all_corrected"] = time.perf_counter() - tick

        arms = []
        for arm, strategy, seed in arm_names(config):
            tick = time.perf_counter()
            arms.append({"arm": arm, "strategy": strategy, "random_seed": seed,
                         "rounds": [round0] + _run_arm(arm, strategy, seed, config, pool, candidates, test, model0,
                                                      work, dev)})
            timings[f"arm_{arm}"] = time.perf_counter() - tick

    timings["total"] = time.perf_counter() - started
    return {
        "format": RESULTS_FORMAT,
        "insight_version": __version__,
        "name": config.name,
        "description": config.description,
        "results_on": "synthetic CTPA phantoms (results on phantoms are results on phantoms)",
        "device": str(dev),
        "torch_threads": torch.get_num_threads(),
        "retraining": "from scratch every round, same seed and budget",
        "config": config.to_json(),
        "insight_model": {"checkpoint": str(config.insight.checkpoint_path), "model_version": insight.model_version,
                          "grid_spacing_xyz": list(insight.config.preprocess.target_spacing_xyz),
                          "grid_overridden": config.insight.grid_spacing_xyz is not None,
                          "finding_threshold": insight.config.inference.finding_threshold},
        "pool": _pool_record(pool, candidates),
        "test": {"seed": config.test.seed, "n": len(test), "n_positive": sum(c.pe for c in test),
                 "n_emboli": int(round0["metrics"]["n_emboli"]), "cases": [c.name for c in test]},
        "arms": arms,
        "all_corrected": all_corrected,
        "seconds": {k: round(v, 2) for k, v in timings.items()},
    }


def _candidates(pool: list[CampaignCase], config: CampaignConfig) -> list[str]:
    """Pool cases that may be picked for correction (by the scan label: known before any model runs)."""
    if config.rounds.candidates == "positive_scans":
        return [case.name for case in pool if case.pe == 1]
    return [case.name for case in pool]


def _run_arm(arm: str, strategy: str, seed: int | None, config: CampaignConfig, pool: list[PoolCase],
             candidates: list[str], test: list[CampaignCase], model0: SegmentationPredictor, work: Path,
             dev: torch.device) -> list[dict[str, Any]]:
    """Rounds 1..R of one arm (round 0 is shared)."""
    by_name = {case.name: case for case in pool}
    corrected: list[str] = []
    model = model0
    records = []
    for round_index in range(1, config.rounds.rounds + 1):

        def segment(name: str, current: SegmentationPredictor = model) -> np.ndarray:
            return segment_case(current, by_name[name])

        open_candidates = [n for n in candidates if n not in corrected]
        selection = select_cases(strategy, config.rounds.k, open_candidates, by_name, corrected,
                                 segment=segment if strategy == "disagreement" else None,
                                 disagreement_mask=config.rounds.disagreement_mask, random_seed=seed,
                                 round_index=round_index)
        corrected = corrected + selection.picked
        model, info = train_round(round_pairs(pool, corrected), config.segmentation, config.train,
                                  work / arm / f"round{round_index}", dev)
        record = _round_record(round_index, selection.picked, corrected, selection.scores, evaluate_on(model, test),
                               info)
        logger.info("%s round %d: corrected %s -> %s", arm, round_index, ", ".join(selection.picked), _describe(record))
        records.append(record)
    return records


def _round_record(round_index: int | None, picked: list[str], corrected: list[str], scores: dict[str, float],
                  metrics: dict[str, Any], train_info: dict[str, Any]) -> dict[str, Any]:
    return {"round": round_index, "n_corrected": len(corrected), "picked": list(picked), "corrected": list(corrected),
            "selection_scores": {n: round(float(v), 6) for n, v in sorted(scores.items())},
            "dice": metrics["mean_dice_positive"], "embolus_sensitivity": metrics["embolus_sensitivity"],
            "false_positives_per_scan": metrics["false_positives_per_scan"], "metrics": metrics,
            "training": train_info}


def _describe(record: dict[str, Any]) -> str:
    return (f"test Dice {record['dice']}, embolus sensitivity {record['embolus_sensitivity']}, "
            f"FP/scan {record['false_positives_per_scan']}")


def _pool_record(pool: list[PoolCase], candidates: list[str]) -> dict[str, Any]:
    scores = [case.pseudo_score for case in pool if case.pseudo_score is not None]
    return {
        "n": len(pool), "n_positive": sum(c.pe for c in pool), "n_candidates": len(candidates),
        "pseudo_mask_metrics": summarize_scores(scores) if scores else None,
        "cases": [{"name": c.name, "pe": c.pe, "n_emboli": c.n_emboli, "candidate": c.name in candidates,
                   "pe_probability": round(c.pe_probability, 6),
                   "heatmap_mask_voxels": int(np.count_nonzero(c.heatmap_mask)),
                   "pseudo_mask": c.pseudo_score.to_dict() if c.pseudo_score else None} for c in pool],
    }
