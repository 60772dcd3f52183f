"""Tests of insight.inference.findings on hand-made heatmaps with known geometry."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from insight.inference.findings import Finding, extract_findings

SIZE_IJK = (40, 30, 20)  # (x, y, z) voxels
SPACING = (0.7, 0.9, 2.5)  # mm, (x, y, z)
ORIGIN = (-120.5, 33.0, 210.0)  # mm, LPS
VOXEL_MM3 = 0.7 * 0.9 * 2.5


def _rotation() -> np.ndarray:
    """An oblique direction: 30 deg about z, then 20 deg about x (orthonormal, det +1)."""
    a, b = math.radians(30), math.radians(20)
    rz = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, math.cos(b), -math.sin(b)], [0, math.sin(b), math.cos(b)]])
    return rz @ rx


DIRECTION = _rotation()

# Blob A: small, highest peak. i 5..8, j 4..6, k 2..3 -> 4 * 3 * 2 = 24 voxels at 0.6, peak 0.95.
A_BOX = dict(i=(5, 8), j=(4, 6), k=(2, 3))
A_PEAK_IJK = (7, 5, 3)
A_VOXELS = 24
# Blob B: larger, lower peak. i 20..29, j 10..17, k 8..12 -> 10 * 8 * 5 = 400 voxels at 0.5, peak 0.8.
B_BOX = dict(i=(20, 29), j=(10, 17), k=(8, 12))
B_PEAK_IJK = (25, 12, 10)
B_VOXELS = 400


def _set_box(arr: np.ndarray, box: dict, value: float) -> None:
    (i0, i1), (j0, j1), (k0, k1) = box["i"], box["j"], box["k"]
    arr[k0:k1 + 1, j0:j1 + 1, i0:i1 + 1] = value  # numpy is [z, y, x] = [k, j, i]


def _image(arr: np.ndarray) -> sitk.Image:
    img = sitk.GetImageFromArray(arr.astype(np.float32))
    img.SetSpacing(SPACING)
    img.SetOrigin(ORIGIN)
    img.SetDirection(tuple(DIRECTION.ravel()))
    return img


def _two_blobs() -> sitk.Image:
    arr = np.zeros(SIZE_IJK[::-1], dtype=np.float32)
    _set_box(arr, A_BOX, 0.6)
    arr[A_PEAK_IJK[::-1]] = 0.95
    _set_box(arr, B_BOX, 0.5)
    arr[B_PEAK_IJK[::-1]] = 0.8
    return _image(arr)


def _expected_lps(ijk) -> np.ndarray:
    """Physical point of a continuous index, written out: origin + D @ (spacing * ijk)."""
    return np.asarray(ORIGIN) + DIRECTION @ (np.asarray(SPACING) * np.asarray(ijk, dtype=float))


def test_two_blobs_order_volume_and_geometry():
    findings = extract_findings(_two_blobs(), threshold=0.3)
    assert [f.label for f in findings] == [1, 2]
    a, b = findings
    # A ranks first on its peak although B is 16x larger
    assert a.peak_score == pytest.approx(0.95) and b.peak_score == pytest.approx(0.8)
    assert (a.voxel_count, b.voxel_count) == (A_VOXELS, B_VOXELS)
    assert a.volume_mm3 == pytest.approx(A_VOXELS * VOXEL_MM3)  # 37.8 mm3
    assert b.volume_mm3 == pytest.approx(B_VOXELS * VOXEL_MM3)  # 630 mm3
    assert a.mean_score == pytest.approx((23 * 0.6 + 0.95) / 24, rel=1e-6)
    assert b.mean_score == pytest.approx((399 * 0.5 + 0.8) / 400, rel=1e-6)
    assert a.peak_ijk == A_PEAK_IJK and b.peak_ijk == B_PEAK_IJK
    assert a.bbox_ijk == (5, 4, 2, 8, 6, 3)
    assert b.bbox_ijk == (20, 10, 8, 29, 17, 12)
    assert a.centroid_ijk == pytest.approx((6.5, 5.0, 2.5))
    assert b.centroid_ijk == pytest.approx((24.5, 13.5, 10.0))
    np.testing.assert_allclose(a.centroid_lps_mm, _expected_lps((6.5, 5.0, 2.5)), atol=1e-9)
    np.testing.assert_allclose(b.centroid_lps_mm, _expected_lps((24.5, 13.5, 10.0)), atol=1e-9)


def test_oblique_direction_matters():
    """The LPS centroid must differ from the axis-aligned answer: the direction is really used."""
    b = extract_findings(_two_blobs(), threshold=0.3)[1]
    axis_aligned = np.asarray(ORIGIN) + np.asarray(SPACING) * np.array([24.5, 13.5, 10.0])
    assert np.linalg.norm(np.asarray(b.centroid_lps_mm) - axis_aligned) > 2.0


@pytest.mark.parametrize(
    "min_volume_mm3, expected_peaks",
    [
        (0.0, [0.95, 0.8]),
        (A_VOXELS * VOXEL_MM3, [0.95, 0.8]),  # a region exactly at the minimum is kept
        (38.0, [0.8]),  # A (37.8 mm3) is dropped; B is relabelled 1
        (630.0 - 1e-9, [0.8]),
        (1000.0, []),
    ],
)
def test_min_volume_filtering(min_volume_mm3, expected_peaks):
    findings = extract_findings(_two_blobs(), threshold=0.3, min_volume_mm3=min_volume_mm3)
    assert [f.peak_score for f in findings] == pytest.approx(expected_peaks)
    assert [f.label for f in findings] == list(range(1, len(expected_peaks) + 1))


@pytest.mark.parametrize("max_findings, expected_peaks", [(1, [0.95]), (2, [0.95, 0.8]), (5, [0.95, 0.8]),
                                                          (None, [0.95, 0.8])])
def test_max_findings_cap(max_findings, expected_peaks):
    findings = extract_findings(_two_blobs(), threshold=0.3, max_findings=max_findings)
    assert [f.peak_score for f in findings] == pytest.approx(expected_peaks)


@pytest.mark.parametrize(
    "threshold, expected_counts",
    [
        (0.5, [A_VOXELS, B_VOXELS]),  # >= is inclusive: B's 0.5 voxels count
        (0.55, [A_VOXELS, 1]),  # only B's peak voxel remains
        (0.9, [1]),  # only A's peak voxel
        (0.95, [1]),  # the peak itself, float32 0.95 vs threshold 0.95
        (1.0, []),
    ],
)
def test_threshold_is_inclusive(threshold, expected_counts):
    assert [f.voxel_count for f in extract_findings(_two_blobs(), threshold)] == expected_counts


def test_equal_peaks_rank_larger_volume_first():
    arr = np.zeros(SIZE_IJK[::-1], dtype=np.float32)
    arr[2, 2, 2] = 0.7  # 1 voxel
    arr[10:13, 10:13, 10:13] = 0.7  # 27 voxels
    findings = extract_findings(_image(arr), 0.5)
    assert [f.voxel_count for f in findings] == [27, 1]


def test_26_connectivity_joins_corner_neighbours():
    arr = np.zeros(SIZE_IJK[::-1], dtype=np.float32)
    arr[5, 5, 5] = 0.9
    arr[6, 6, 6] = 0.7  # touches (5, 5, 5) only at a corner
    arr[8, 6, 6] = 0.7  # two slices away: separate
    findings = extract_findings(_image(arr), 0.5)
    assert [f.voxel_count for f in findings] == [2, 1]
    assert findings[0].centroid_ijk == pytest.approx((5.5, 5.5, 5.5))


@pytest.mark.parametrize("value", [0.0, 0.2])
def test_no_voxel_above_threshold_gives_empty_list(value):
    arr = np.full(SIZE_IJK[::-1], value, dtype=np.float32)
    assert extract_findings(_image(arr), 0.5) == []


def test_matches_scipy_reference_on_random_map():
    rng = np.random.default_rng(4)
    arr = ndimage.gaussian_filter(rng.random(SIZE_IJK[::-1]), 1.0).astype(np.float32)
    arr = (arr - arr.min()) / (arr.max() - arr.min())
    threshold = 0.6
    labels, n = ndimage.label(arr >= threshold, structure=np.ones((3, 3, 3), bool))
    assert n > 3
    index = np.arange(1, n + 1)
    counts = ndimage.sum_labels(np.ones_like(arr), labels, index)
    peaks = ndimage.maximum(arr, labels, index)
    expected = sorted(zip(peaks.tolist(), counts.tolist()), key=lambda pc: (-pc[0], -pc[1]))
    findings = extract_findings(_image(arr), threshold)
    got = [(f.peak_score, f.voxel_count) for f in findings]
    assert len(got) == n
    np.testing.assert_allclose(np.array(got), np.array(expected), rtol=1e-6)
    for f in findings:  # the peak index really holds the peak, inside the bounding box
        i, j, k = f.peak_ijk
        assert arr[k, j, i] == pytest.approx(f.peak_score)
        assert all(lo <= p <= hi for lo, p, hi in zip(f.bbox_ijk[:3], f.peak_ijk, f.bbox_ijk[3:]))


def test_to_dict_is_json_ready():
    d = extract_findings(_two_blobs(), threshold=0.3)[1].to_dict()
    text = json.dumps(d)
    assert json.loads(text) == d
    assert d["label"] == 2 and d["voxel_count"] == B_VOXELS
    assert d["volume_mm3"] == pytest.approx(630.0)
    assert d["peak_ijk"] == list(B_PEAK_IJK)
    assert d["bbox_ijk"] == [20, 10, 8, 29, 17, 12]
    assert isinstance(d["centroid_lps_mm"], list) and len(d["centroid_lps_mm"]) == 3
    assert d["peak_score"] == 0.8  # rounded: float32 0.8 is 0.800000011920929
    assert set(d) == set(Finding.__dataclass_fields__)


@pytest.mark.parametrize("threshold", [0.0, -0.1, 1.5, float("nan"), float("inf"), True, "0.5", None])
def test_threshold_validation(threshold):
    with pytest.raises(ValueError, match="threshold"):
        extract_findings(_two_blobs(), threshold)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"min_volume_mm3": -1.0}, "min_volume_mm3"),
        ({"min_volume_mm3": float("nan")}, "min_volume_mm3"),
        ({"max_findings": 0}, "max_findings"),
        ({"max_findings": 1.5}, "max_findings"),
    ],
)
def test_argument_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        extract_findings(_two_blobs(), 0.5, **kwargs)


@pytest.mark.parametrize(
    "heatmap",
    [
        np.zeros((4, 4, 4), np.float32),  # numpy array, not an image
        sitk.Image(8, 8, sitk.sitkFloat32),  # 2D
        sitk.Image([4, 4, 4], sitk.sitkVectorFloat32, 3),  # vector pixels
    ],
)
def test_image_validation(heatmap):
    with pytest.raises(ValueError):
        extract_findings(heatmap, 0.5)
