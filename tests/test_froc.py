"""FROC on constructed scans with known hits and false positives at every rate."""

from __future__ import annotations

import math

import numpy as np
import pytest

from insight.metrics import embolus_hits
from insight.metrics.froc import FP_RATES, froc_curve, scan_candidates

SHAPE = (6, 20, 20)  # [z, y, x]


def blob(heat: np.ndarray, z: int, y: int, x: int, peak: float, size: int = 2) -> None:
    """A cube of ``size`` voxels per side at (z, y, x), value ``peak`` (slightly less at its edge)."""
    heat[z : z + size, y : y + size, x : x + size] = peak * 0.9
    heat[z, y, x] = peak


def box(mask: np.ndarray, z: int, y: int, x: int, size: int = 2) -> None:
    mask[z : z + size, y : y + size, x : x + size] = True


@pytest.fixture
def two_scans():
    """Scan A: emboli E1, E2; candidates hitting E1 (peak 0.9), a false positive (0.8), hitting E2 (0.3).
    Scan B (no PE): one false positive (0.6)."""
    heat_a, truth_a = np.zeros(SHAPE), np.zeros(SHAPE, dtype=bool)
    box(truth_a, 1, 2, 2)
    box(truth_a, 3, 12, 12)
    blob(heat_a, 1, 2, 2, 0.9)
    blob(heat_a, 1, 2, 14, 0.8)
    blob(heat_a, 3, 12, 12, 0.3)
    heat_b, truth_b = np.zeros(SHAPE), np.zeros(SHAPE, dtype=bool)
    blob(heat_b, 2, 8, 8, 0.6)
    return (heat_a, truth_a), (heat_b, truth_b)


def candidates(scan, rule="overlap", level=0.1):
    heat, truth = scan
    return scan_candidates(heat, truth, heat > level, rule=rule)


def test_scan_candidates_scores_and_matches(two_scans):
    a = candidates(two_scans[0])
    assert a.n_candidates == 3 and a.n_emboli == 2
    assert sorted(a.scores.tolist()) == pytest.approx([0.3, 0.8, 0.9])
    assert dict(zip(np.round(a.scores, 3), a.is_false_positive)) == {0.9: False, 0.8: True, 0.3: False}
    assert sorted(a.embolus_scores.tolist()) == pytest.approx([0.3, 0.9])
    assert a.volumes_voxels.tolist() == [8, 8, 8]


def test_froc_counts_at_each_false_positive_rate(two_scans):
    curve = froc_curve([candidates(s) for s in two_scans])
    assert curve.n_scans == 2 and curve.n_emboli == 2
    # operating points: none kept; >= 0.9: E1 hit, 0 FP; >= 0.8: 1 FP (0.5/scan); >= 0.6: 2 FP (1/scan); >= 0.3: E2 too
    assert curve.thresholds[0] == math.inf
    assert curve.thresholds[1:].tolist() == pytest.approx([0.9, 0.8, 0.6, 0.3])
    assert curve.fp_per_scan.tolist() == pytest.approx([0.0, 0.0, 0.5, 1.0, 1.0])
    assert curve.sensitivity.tolist() == pytest.approx([0.0, 0.5, 0.5, 0.5, 1.0])
    assert curve.sensitivities(FP_RATES) == {0.5: 0.5, 1.0: 1.0, 2.0: 1.0, 4.0: 1.0}
    assert curve.sensitivity_at(0.0) == 0.5
    assert curve.sensitivity_at(0.49) == 0.5


def test_froc_stricter_when_the_hit_lies_below_a_false_positive():
    """The only hit has a lower peak than two false positives in a single scan: it needs 2 FP/scan."""
    heat, truth = np.zeros(SHAPE), np.zeros(SHAPE, dtype=bool)
    box(truth, 0, 0, 0)
    blob(heat, 0, 0, 0, 0.4)
    blob(heat, 0, 10, 10, 0.7)
    blob(heat, 4, 15, 2, 0.5)
    curve = froc_curve([scan_candidates(heat, truth, heat > 0.1)])
    assert curve.sensitivities((0.5, 1.0, 2.0, 4.0)) == {0.5: 0.0, 1.0: 0.0, 2.0: 1.0, 4.0: 1.0}


def test_all_candidates_kept_agrees_with_embolus_hits(two_scans):
    for heat, truth in two_scans:
        found = candidates((heat, truth))
        n_emboli, n_hit, n_fp = embolus_hits(heat > 0.1, truth)
        assert (found.n_emboli, int(np.isfinite(found.embolus_scores).sum()), int(found.is_false_positive.sum())) \
            == (n_emboli, n_hit, n_fp)


def test_overlap_rule_credits_one_large_region_but_the_peak_rule_does_not():
    """One region covering both emboli, peaking on neither: overlap hits both, peak hits none."""
    heat, truth = np.zeros(SHAPE), np.zeros(SHAPE, dtype=bool)
    box(truth, 1, 2, 2)
    box(truth, 1, 2, 12)
    heat[0:4, 0:6, 0:18] = 0.5
    heat[3, 5, 8] = 0.9  # the peak, two voxels or more from either embolus
    overlap = scan_candidates(heat, truth, heat > 0.1, rule="overlap")
    peak = scan_candidates(heat, truth, heat > 0.1, rule="peak", tolerance_voxels=1)
    assert overlap.n_candidates == peak.n_candidates == 1
    assert np.isfinite(overlap.embolus_scores).all() and not overlap.is_false_positive[0]
    assert not np.isfinite(peak.embolus_scores).any() and peak.is_false_positive[0]


def test_peak_rule_tolerance():
    heat, truth = np.zeros(SHAPE), np.zeros(SHAPE, dtype=bool)
    box(truth, 2, 5, 5)  # voxels z 2-3, y 5-6, x 5-6
    heat[2:4, 5:9, 5:9] = 0.5
    heat[3, 6, 7] = 0.9  # one voxel beyond the embolus in x
    strict = scan_candidates(heat, truth, heat > 0.1, rule="peak", tolerance_voxels=0)
    tolerant = scan_candidates(heat, truth, heat > 0.1, rule="peak", tolerance_voxels=1)
    assert strict.is_false_positive.tolist() == [True] and tolerant.is_false_positive.tolist() == [False]


def test_negative_scans_only_and_empty_candidates():
    heat = np.zeros(SHAPE)
    blob(heat, 0, 0, 0, 0.7)
    no_truth = np.zeros(SHAPE, dtype=bool)
    curve = froc_curve([scan_candidates(heat, no_truth, heat > 0.1), scan_candidates(heat, no_truth, heat > 2)])
    assert curve.n_emboli == 0 and math.isnan(curve.sensitivity_at(1.0))
    assert curve.fp_per_scan.tolist() == [0.0, 0.5]
    truth = np.zeros(SHAPE, dtype=bool)
    box(truth, 0, 0, 0)
    missed = froc_curve([scan_candidates(heat, truth, np.zeros(SHAPE, dtype=bool))])
    assert missed.sensitivities((1.0,)) == {1.0: 0.0} and missed.thresholds.tolist() == [math.inf]


@pytest.mark.parametrize("kwargs, message", [
    (dict(rule="centroid"), "rule must be"),
    (dict(tolerance_voxels=-1), "tolerance_voxels"),
    (dict(candidate_mask=np.zeros((2, 2, 2), dtype=bool)), "one shape"),
])
def test_scan_candidates_bad_inputs(kwargs, message):
    args = dict(heatmap=np.zeros(SHAPE), true_mask=np.zeros(SHAPE, dtype=bool),
                candidate_mask=np.zeros(SHAPE, dtype=bool))
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        scan_candidates(**args)


def test_froc_curve_bad_inputs(two_scans):
    with pytest.raises(ValueError, match="at least one scan"):
        froc_curve([])
    with pytest.raises(ValueError, match="fp_rate"):
        froc_curve([candidates(two_scans[0])]).sensitivity_at(-1)


def test_candidate_scores_and_peaks_match_scipy_on_a_random_map():
    from scipy import ndimage

    rng = np.random.default_rng(3)
    heat = ndimage.gaussian_filter(rng.random((10, 24, 24)), 1.5)
    truth = np.zeros(heat.shape, dtype=bool)
    box(truth, 4, 10, 10, size=3)
    found = scan_candidates(heat, truth, heat > np.quantile(heat, 0.85), rule="peak", tolerance_voxels=0)
    labels, n = ndimage.label(heat > np.quantile(heat, 0.85), structure=np.ones((3, 3, 3)))
    index = np.arange(1, n + 1)
    assert found.n_candidates == n > 3
    assert found.scores.tolist() == pytest.approx(ndimage.maximum(heat, labels, index).tolist())
    assert found.volumes_voxels.tolist() == np.bincount(labels.ravel())[1:].tolist()
    peaks = ndimage.maximum_position(heat, labels, index)
    expected = [not truth[p] for p in peaks]  # the peak rule with no tolerance: is the peak voxel in the clot?
    assert found.is_false_positive.tolist() == expected
