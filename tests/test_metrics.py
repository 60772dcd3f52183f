"""Tests of insight.metrics: hand-made cases with known answers."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest

from insight.metrics import (
    auroc,
    best_threshold_dice,
    bootstrap_auroc_ci,
    dice,
    embolus_hits,
    expected_calibration_error,
    iou,
    label_components,
    match_regions,
    otsu_mask,
    pointing_game,
    sensitivity_specificity,
)

SHAPE = (8, 12, 16)  # [z, y, x]


def box_mask(shape=SHAPE, z=(2, 6), y=(3, 7), x=(4, 8)) -> np.ndarray:
    """Bool mask with a box [z0:z1, y0:y1, x0:x1] set."""
    m = np.zeros(shape, dtype=bool)
    m[z[0]:z[1], y[0]:y[1], x[0]:x[1]] = True
    return m


# --------------------------------------------------------------------------- classification


@pytest.mark.parametrize(
    "labels, scores, expected",
    [
        ([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9], 1.0),  # perfect
        ([0, 0, 1, 1], [0.9, 0.8, 0.2, 0.1], 0.0),  # inverted
        ([0, 0, 1, 1], [0.5, 0.5, 0.5, 0.5], 0.5),  # all tied
        ([0, 1, 0, 1], [0.1, 0.4, 0.5, 0.8], 0.75),  # 3 of 4 pairs ordered
        ([False, True, True], [-3.0, 10.0, 2.0], 1.0),  # bool labels, unbounded scores
    ],
)
def test_auroc_known_values(labels, scores, expected):
    assert auroc(labels, scores) == pytest.approx(expected)


def test_auroc_random_scores_near_half():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, size=4000)
    assert auroc(labels, rng.random(4000)) == pytest.approx(0.5, abs=0.03)


@pytest.mark.parametrize("labels", [[1, 1, 1], [0, 0]])
def test_auroc_single_class_is_nan_with_warning(labels, caplog):
    with caplog.at_level(logging.WARNING, logger="insight.metrics.classification"):
        value = auroc(labels, np.linspace(0, 1, len(labels)))
    assert math.isnan(value)
    assert any("one class" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    "labels, scores",
    [
        ([0, 1, 1], [0.1, 0.2]),  # length mismatch
        ([], []),  # empty
        ([0, 2, 1], [0.1, 0.2, 0.3]),  # not binary
        ([0, 1], [0.1, float("nan")]),  # NaN score
        ([[0, 1]], [[0.1, 0.2]]),  # 2-D
    ],
)
def test_auroc_bad_inputs(labels, scores):
    with pytest.raises(ValueError):
        auroc(labels, scores)


def _noisy_scores(n=200, seed=3):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, size=n)
    scores = labels * 0.8 + rng.normal(0, 0.6, size=n)
    return labels, scores


def test_bootstrap_ci_contains_point_estimate_and_is_deterministic():
    labels, scores = _noisy_scores()
    point = auroc(labels, scores)
    low, high = bootstrap_auroc_ci(labels, scores, seed=7)
    assert 0.5 < low < point < high < 1.0
    assert high - low < 0.25
    assert bootstrap_auroc_ci(labels, scores, seed=7) == (low, high)
    assert bootstrap_auroc_ci(labels, scores, seed=8) != (low, high)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bootstrap_rank_auroc_matches_sklearn_with_ties(seed):
    from sklearn.metrics import roc_auc_score

    from insight.metrics.classification import _rank_auroc

    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, size=(20, 50))
    scores = np.round(rng.random((20, 50)) + 0.3 * labels, 1)  # coarse: many ties
    expected = [roc_auc_score(y, s) for y, s in zip(labels, scores)]
    np.testing.assert_allclose(_rank_auroc(labels, scores), expected, rtol=0, atol=1e-12)
    assert np.isnan(_rank_auroc(np.ones((1, 5), int), np.arange(5.0)[None])).all()


def test_bootstrap_ci_narrower_at_lower_confidence():
    labels, scores = _noisy_scores()
    low95, high95 = bootstrap_auroc_ci(labels, scores, n_boot=400, alpha=0.05)
    low50, high50 = bootstrap_auroc_ci(labels, scores, n_boot=400, alpha=0.5)
    assert low95 < low50 < high50 < high95


def test_bootstrap_ci_perfect_separation_is_degenerate():
    assert bootstrap_auroc_ci([0, 0, 0, 1, 1, 1], [0.1, 0.2, 0.3, 0.7, 0.8, 0.9], n_boot=200) == (1.0, 1.0)


def test_bootstrap_ci_single_class_is_nan():
    low, high = bootstrap_auroc_ci([1, 1, 1], [0.2, 0.5, 0.9], n_boot=10)
    assert math.isnan(low) and math.isnan(high)


@pytest.mark.parametrize("kwargs", [{"n_boot": 0}, {"n_boot": 2.5}, {"alpha": 0.0}, {"alpha": 1.0}])
def test_bootstrap_ci_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        bootstrap_auroc_ci([0, 1, 0, 1], [0.1, 0.9, 0.2, 0.8], **kwargs)


# 4 positives scored 0.9, 0.7, 0.5, 0.2; 6 negatives scored 0.8, 0.4, 0.3, 0.1, 0.05, 0.0
SS_LABELS = [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]
SS_SCORES = [0.9, 0.7, 0.5, 0.2, 0.8, 0.4, 0.3, 0.1, 0.05, 0.0]


@pytest.mark.parametrize(
    "threshold, sens, spec",
    [
        (0.5, 3 / 4, 5 / 6),  # score == threshold counts as positive
        (0.51, 2 / 4, 5 / 6),
        (0.0, 1.0, 0.0),
        (0.95, 0.0, 1.0),
        (0.25, 3 / 4, 3 / 6),
    ],
)
def test_sensitivity_specificity(threshold, sens, spec):
    assert sensitivity_specificity(SS_LABELS, SS_SCORES, threshold) == pytest.approx((sens, spec))


def test_sensitivity_undefined_without_positives():
    sens, spec = sensitivity_specificity([0, 0, 0], [0.1, 0.6, 0.9], 0.5)
    assert math.isnan(sens)
    assert spec == pytest.approx(1 / 3)


def test_sensitivity_specificity_bad_threshold():
    with pytest.raises(ValueError):
        sensitivity_specificity([0, 1], [0.1, 0.9], float("nan"))


def test_ece_perfectly_calibrated_is_zero():
    # 10 scans at p = 0.3 with 3 positives, 4 scans at p = 0.75 with 3 positives, 5 at p = 1 all positive.
    probs = [0.3] * 10 + [0.75] * 4 + [1.0] * 5
    labels = [1, 1, 1] + [0] * 7 + [1, 1, 1, 0] + [1] * 5
    assert expected_calibration_error(labels, probs) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize(
    "labels, probs, n_bins, expected",
    [
        ([1, 0, 1, 0], [0.9] * 4, 10, 0.4),  # overconfident: |0.5 - 0.9|
        ([0] * 5 + [1] * 5, [0.2] * 5 + [0.8] * 5, 10, 0.2),  # each half off by 0.2
        ([0, 1], [0.4, 0.6], 1, 0.0),  # one bin: mean prob 0.5 == positive rate 0.5
        ([0, 1], [0.4, 0.6], 2, 0.4),  # two bins: each off by 0.4
    ],
)
def test_ece_known_values(labels, probs, n_bins, expected):
    assert expected_calibration_error(labels, probs, n_bins=n_bins) == pytest.approx(expected)


@pytest.mark.parametrize("probs, n_bins", [([0.2, 1.2], 10), ([-0.1, 0.5], 10), ([0.2, 0.5], 0)])
def test_ece_bad_arguments(probs, n_bins):
    with pytest.raises(ValueError):
        expected_calibration_error([0, 1], probs, n_bins=n_bins)


# --------------------------------------------------------------------------- localization


def test_perfect_heatmap_scores_dice_one():
    mask = box_mask()
    heatmap = mask.astype(np.float32) * 0.9 + 0.05
    pred = otsu_mask(heatmap)
    assert pred.dtype == bool
    assert dice(pred, mask) == 1.0
    assert iou(pred, mask) == 1.0


def test_shifted_heatmap_scores_lower():
    mask = box_mask()  # 4 x 4 x 4 box
    shifted = np.roll(mask, 2, axis=2)  # 2 voxels along x: overlap 4 * 4 * 2 = 32 of 64
    assert dice(shifted, mask) == pytest.approx(0.5)
    assert iou(shifted, mask) == pytest.approx(32 / 96)
    assert dice(np.roll(mask, 1, axis=2), mask) == pytest.approx(0.75)


@pytest.mark.parametrize(
    "pred_empty, true_empty, expected",
    [(True, True, 1.0), (True, False, 0.0), (False, True, 0.0)],
)
@pytest.mark.parametrize("metric", [dice, iou])
def test_empty_mask_conventions(metric, pred_empty, true_empty, expected):
    empty = np.zeros(SHAPE, dtype=bool)
    pred = empty if pred_empty else box_mask()
    true = empty if true_empty else box_mask()
    assert metric(pred, true) == expected


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_iou_equals_dice_over_two_minus_dice(seed):
    rng = np.random.default_rng(seed)
    pred = rng.random(SHAPE) > 0.6
    true = rng.random(SHAPE) > 0.5
    d = dice(pred, true)
    assert 0.0 < d < 1.0
    assert iou(pred, true) == pytest.approx(d / (2 - d))


def test_dice_accepts_uint8_masks():
    mask = box_mask()
    assert dice(mask.astype(np.uint8), np.roll(mask, 2, axis=2).astype(np.uint8)) == pytest.approx(0.5)


@pytest.mark.parametrize("metric", [dice, iou])
def test_overlap_bad_inputs(metric):
    with pytest.raises(ValueError, match="shape"):
        metric(np.zeros((4, 4, 4), bool), np.zeros((4, 4, 5), bool))
    with pytest.raises(ValueError, match="empty"):
        metric(np.zeros((0, 4, 4), bool), np.zeros((0, 4, 4), bool))


@pytest.mark.parametrize("value", [0.0, 0.7])
def test_otsu_mask_constant_map_is_empty(value):
    out = otsu_mask(np.full(SHAPE, value, dtype=np.float32))
    assert out.shape == SHAPE and out.dtype == bool and not out.any()


def test_otsu_mask_bimodal_noise():
    rng = np.random.default_rng(0)
    mask = box_mask()
    heatmap = np.clip(np.where(mask, 0.8, 0.1) + rng.normal(0, 0.05, SHAPE), 0, 1)
    pred = otsu_mask(heatmap)
    assert pred[mask].all()  # every target voxel found
    # Otsu's 256-bin histogram may let the odd extreme background voxel through (1 here)
    assert dice(pred, mask) > 0.98


def test_best_threshold_dice_finds_gap_between_distractor_and_target():
    # Target voxels score 0.6, a distractor region 0.3, the rest 0: every t in (0.3, 0.6] is
    # perfect; ties go to the lowest such threshold, 0.35.
    heatmaps, masks = [], []
    for shift in (0, 3):
        mask = np.roll(box_mask(), shift, axis=2)
        heatmap = np.zeros(SHAPE, dtype=np.float32)
        heatmap[mask] = 0.6
        heatmap[0, 0, :3] = 0.3
        heatmaps.append(heatmap)
        masks.append(mask)
    t, mean_dice = best_threshold_dice(heatmaps, masks)
    assert t == pytest.approx(0.35)
    assert mean_dice == pytest.approx(1.0)


def test_best_threshold_dice_mean_over_cases():
    # Case 1 is perfect at t <= 0.5; case 2 (target 0.2) is perfect only at t <= 0.2, where case 1's
    # distractor (0.2) counts: with thresholds [0.1, 0.5] mean Dice is (2*64/(64+64+3) + 1)/2 at 0.1
    # and (1 + 0)/2 at 0.5.
    mask = box_mask()
    h1 = np.where(mask, 0.5, 0.0)
    h1[0, 0, :3] = 0.2
    h2 = np.where(mask, 0.2, 0.0)
    t, mean_dice = best_threshold_dice([h1, h2], [mask, mask], thresholds=[0.5, 0.1])
    assert t == pytest.approx(0.1)
    assert mean_dice == pytest.approx((128 / 131 + 1) / 2)


def test_best_threshold_dice_empty_cases_count_as_perfect_when_nothing_predicted():
    t, mean_dice = best_threshold_dice([np.full(SHAPE, 0.4)], [np.zeros(SHAPE, bool)], thresholds=[0.3, 0.5])
    assert (t, mean_dice) == (0.5, 1.0)


@pytest.mark.parametrize(
    "heatmaps, masks, thresholds",
    [
        ([np.zeros(SHAPE)], [], None),
        ([], [], None),
        ([np.zeros(SHAPE)], [np.zeros((2, 2, 2), bool)], None),
        ([np.zeros(SHAPE)], [np.zeros(SHAPE, bool)], []),
    ],
)
def test_best_threshold_dice_bad_inputs(heatmaps, masks, thresholds):
    kwargs = {} if thresholds is None else {"thresholds": thresholds}
    with pytest.raises(ValueError):
        best_threshold_dice(heatmaps, masks, **kwargs)


@pytest.mark.parametrize(
    "peak_zyx, tolerance, expected",
    [
        ((3, 4, 5), 0, True),  # inside the mask
        ((3, 4, 5), 1, True),
        ((1, 2, 3), 0, False),  # diagonal neighbour of corner (2, 3, 4)
        ((1, 2, 3), 1, True),  # ... within one voxel along every axis
        ((0, 1, 2), 1, False),  # two voxels away
        ((0, 1, 2), 2, True),
        ((7, 11, 15), 1, False),  # far corner
    ],
)
def test_pointing_game(peak_zyx, tolerance, expected):
    mask = box_mask()  # z 2..5, y 3..6, x 4..7
    heatmap = np.full(SHAPE, 0.1, dtype=np.float32)
    heatmap[mask] = 0.5
    heatmap[peak_zyx] = 0.9
    assert pointing_game(heatmap, mask, tolerance_voxels=tolerance) is expected


def test_pointing_game_empty_mask_raises():
    with pytest.raises(ValueError, match="non-empty"):
        pointing_game(np.random.default_rng(0).random(SHAPE), np.zeros(SHAPE, bool))


@pytest.mark.parametrize("tolerance", [-1, 0.5])
def test_pointing_game_bad_tolerance(tolerance):
    with pytest.raises(ValueError):
        pointing_game(np.zeros(SHAPE), box_mask(), tolerance_voxels=tolerance)


def _three_emboli() -> np.ndarray:
    true = np.zeros((10, 20, 30), dtype=bool)
    true[1:3, 1:4, 1:4] = True  # embolus A
    true[5:8, 10:12, 5:9] = True  # embolus B ...
    true[8, 12, 9] = True  # ... plus a voxel touching B only at a corner: still B (26-connectivity)
    true[2:5, 15:18, 20:25] = True  # embolus C
    return true


def test_embolus_hits_three_emboli_two_hit_one_false_positive():
    true = _three_emboli()
    pred = np.zeros_like(true)
    pred[2:4, 2:6, 2:6] = True  # overlaps A
    pred[8:10, 12:14, 9:11] = True  # overlaps B only at its corner voxel (8, 12, 9): one voxel is enough
    pred[0:2, 15:19, 0:3] = True  # overlaps nothing: false positive; C is missed
    assert label_components(true)[1] == 3
    assert embolus_hits(pred, true) == (3, 2, 1)


@pytest.mark.parametrize(
    "pred_boxes, expected",
    [
        ([], (3, 0, 0)),
        ([(slice(0, 10), slice(0, 20), slice(0, 30))], (3, 3, 0)),  # one region covering everything
        ([(slice(1, 3), slice(1, 4), slice(1, 4))] * 2, (3, 1, 0)),  # same region twice = one region
        ([(slice(9, 10), slice(0, 1), slice(0, 1)), (slice(0, 1), slice(19, 20), slice(29, 30))], (3, 0, 2)),
    ],
)
def test_embolus_hits_table(pred_boxes, expected):
    true = _three_emboli()
    pred = np.zeros_like(true)
    for box in pred_boxes:
        pred[box] = True
    assert embolus_hits(pred, true) == expected


def test_embolus_hits_without_emboli_counts_every_region_as_false_positive():
    pred = np.zeros((5, 5, 5), bool)
    pred[0, 0, 0] = pred[4, 4, 4] = True
    assert embolus_hits(pred, np.zeros_like(pred)) == (0, 0, 2)
    assert embolus_hits(np.zeros_like(pred), np.zeros_like(pred)) == (0, 0, 0)


def test_match_regions_reports_per_embolus_and_per_region():
    true = np.array([[1, 1, 0, 2, 0, 3]])
    pred = np.array([[0, 1, 0, 1, 2, 0]])  # region 1 touches emboli 1 and 2; region 2 touches nothing
    match = match_regions(pred, true)
    assert match.embolus_hit.tolist() == [True, True, False]
    assert match.region_is_false_positive.tolist() == [False, True]
    assert (match.n_emboli, match.n_hit, match.n_regions, match.n_false_positive_regions) == (3, 2, 2, 1)


def test_match_regions_bad_inputs():
    with pytest.raises(ValueError, match="shape"):
        match_regions(np.zeros((2, 2), int), np.zeros((2, 3), int))
    with pytest.raises(ValueError, match="integer"):
        match_regions(np.zeros((2, 2)), np.zeros((2, 2), int))
    with pytest.raises(ValueError, match="exceeds"):
        match_regions(np.array([0, 3]), np.array([0, 1]), n_regions=2)
