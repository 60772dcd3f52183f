"""Pseudo-masks from heatmaps (insight.pseudo_masks): hand-made scenes with known answers, then the
CLI on the sample phantoms with constructed heatmaps (truth blurred, noise, distractors).

The scene: a lung (-850 HU) with two enhanced arteries (350 HU) along z on a 2 mm oblique grid. Artery
A holds an occlusive clot (40 HU), artery B a smaller central one (110 HU). The heatmap shows A
strongly (0.9), B weakly (0.35, below the first round's seed threshold), a lung blob (0.8, far from
any vessel) and a one-voxel speck inside artery A (0.7).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from insight.cli import main as insight_main
from insight.io import write_image
from insight.metrics import embolus_hits, label_components
from insight.pseudo_masks import PseudoMaskConfig, PseudoMaskGenerator, read_truth_mask, score_mask, summarize_scores
from insight.pseudo_masks.batch import read_scan_labels
from insight.pseudo_masks.constructed_heatmaps import constructed_heatmap
from insight.pseudo_masks.inpainting import fill_with_surrounding_blood
from insight.pseudo_masks.morphology import ball_mm, contrast_vessel_region, remove_small_regions
from tests.helpers import oblique_direction

SHAPE_ZYX = (32, 48, 48)
SPACING_MM = 2.0
ARTERY_A_XY, ARTERY_B_XY, RADIUS = (14, 24), (34, 24), 3
CLOT_A_Z, CLOT_B_Z = range(10, 18), range(18, 23)
LUNG_BLOB_ZYX = (16, 8, 24)
SPECK_ZYX = (28, 24, 14)
SAMPLE_STUDIES = Path(__file__).resolve().parents[1] / "sample-data" / "studies"
#: Sample phantoms used with constructed heatmaps: two with emboli, one without.
PHANTOM_CASES = ("phantom_s7_0004", "phantom_s7_0005", "phantom_s7_0001")


def _disc(center_xy: tuple[int, int], radius: float) -> np.ndarray:
    y, x = np.mgrid[0:SHAPE_ZYX[1], 0:SHAPE_ZYX[2]]
    return (x - center_xy[0]) ** 2 + (y - center_xy[1]) ** 2 <= radius**2


def _scene() -> dict[str, np.ndarray]:
    image = np.full(SHAPE_ZYX, -850.0, dtype=np.float32)
    clot_a = np.zeros(SHAPE_ZYX, dtype=bool)
    clot_b = np.zeros(SHAPE_ZYX, dtype=bool)
    image[:, _disc(ARTERY_A_XY, RADIUS)] = 350.0
    image[:, _disc(ARTERY_B_XY, RADIUS)] = 350.0
    for z in CLOT_A_Z:
        clot_a[z] = _disc(ARTERY_A_XY, RADIUS)
    for z in CLOT_B_Z:
        clot_b[z] = _disc(ARTERY_B_XY, 2)
    image[clot_a] = 40.0
    image[clot_b] = 110.0
    return {"image": image, "clot_a": clot_a, "clot_b": clot_b}


def _blob(mask: np.ndarray, peak: float, sigma_vox: float = 1.0) -> np.ndarray:
    blurred = ndimage.gaussian_filter(mask.astype(np.float32), sigma_vox)
    return peak * blurred / blurred.max()


def _heatmap(scene: dict[str, np.ndarray]) -> np.ndarray:
    lung_point = np.zeros(SHAPE_ZYX, dtype=bool)
    lung_point[LUNG_BLOB_ZYX] = True
    heat = np.maximum.reduce([_blob(scene["clot_a"], 0.9), _blob(scene["clot_b"], 0.35),
                              _blob(lung_point, 0.8, sigma_vox=1.5)])
    heat[SPECK_ZYX] = 0.7
    return heat.astype(np.float32)


def _image(array: np.ndarray) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((SPACING_MM,) * 3)
    image.SetOrigin((-40.0, 12.5, -300.0))
    image.SetDirection(oblique_direction(25.0))
    return image


@pytest.fixture(scope="module")
def scene():
    data = _scene()
    data["ct"] = _image(data["image"])
    data["heat"] = _image(_heatmap(data))
    return data


def _mask(result) -> np.ndarray:
    return sitk.GetArrayFromImage(result.mask) > 0


def _hits(mask: np.ndarray, clot: np.ndarray) -> bool:
    return bool((mask & clot).any())


def test_default_rounds_find_the_strong_clot_then_the_weak_one_and_nothing_else(scene):
    result = PseudoMaskGenerator(PseudoMaskConfig()).generate(scene["ct"], scene["heat"])
    mask = _mask(result)
    rounds = [r for r in result.rounds if "round" in r]
    assert rounds[0]["new_regions"] == 1 and _hits(mask, scene["clot_a"])  # A; the speck was too small
    assert rounds[1]["new_regions"] == 1 and rounds[1]["max"] == pytest.approx(0.35, abs=0.02)  # B, next round
    assert _hits(mask, scene["clot_b"])
    truth = scene["clot_a"] | scene["clot_b"]
    assert embolus_hits(mask, truth) == (2, 2, 0)  # both emboli hit, no false-positive region
    assert not mask[LUNG_BLOB_ZYX] and not mask[SPECK_ZYX]
    assert score_mask(mask, truth).dice > 0.6
    assert result.n_regions == 2


def test_one_round_misses_the_weak_clot(scene):
    mask = _mask(PseudoMaskGenerator(PseudoMaskConfig(max_iterations=1)).generate(scene["ct"], scene["heat"]))
    assert _hits(mask, scene["clot_a"]) and not _hits(mask, scene["clot_b"])


def test_without_the_vessel_restriction_the_lung_blob_becomes_a_false_positive(scene):
    config = PseudoMaskConfig(restrict_to_vessels=False)
    mask = _mask(PseudoMaskGenerator(config).generate(scene["ct"], scene["heat"]))
    assert mask[LUNG_BLOB_ZYX]
    _, _, false_positives = embolus_hits(mask, scene["clot_a"] | scene["clot_b"])
    assert false_positives >= 1


def test_without_small_region_removal_the_speck_stays(scene):
    config = PseudoMaskConfig(min_region_volume_mm3=0.0)
    assert _mask(PseudoMaskGenerator(config).generate(scene["ct"], scene["heat"]))[SPECK_ZYX]


def test_mask_is_uint8_on_the_exact_input_grid_and_empty_for_a_no_pe_scan(scene):
    generator = PseudoMaskGenerator()
    for label in (None, 0):
        mask = generator.generate(scene["ct"], scene["heat"], scan_label=label).mask
        assert mask.GetPixelID() == sitk.sitkUInt8
        assert mask.GetSize() == scene["ct"].GetSize()
        assert mask.GetSpacing() == scene["ct"].GetSpacing() and mask.GetOrigin() == scene["ct"].GetOrigin()
        assert mask.GetDirection() == scene["ct"].GetDirection()
    assert not sitk.GetArrayFromImage(generator.generate(scene["ct"], scene["heat"], scan_label=0).mask).any()


def test_a_heatmap_on_another_grid_is_resampled_onto_the_image(scene):
    coarse = sitk.Resample(scene["heat"], [24, 24, 16], sitk.Transform(), sitk.sitkLinear, scene["heat"].GetOrigin(),
                           (4.0, 4.0, 4.0), scene["heat"].GetDirection(), 0.0, sitk.sitkFloat32)
    mask = _mask(PseudoMaskGenerator().generate(scene["ct"], coarse))
    assert mask.shape == SHAPE_ZYX and _hits(mask, scene["clot_a"])


def test_a_heatmap_with_nan_is_refused(scene):
    bad = sitk.GetArrayFromImage(scene["heat"])
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        PseudoMaskGenerator().generate(scene["ct"], _image(bad))


def test_vessel_region_holds_clot_near_blood_but_not_lung_nor_the_middle_of_an_occlusion(scene):
    spacing = (SPACING_MM,) * 3
    region = contrast_vessel_region(scene["image"], spacing, (150.0, 700.0), 5.0, -100.0)
    assert region[scene["clot_b"]].all()  # central clot: blood all around
    ends, middle = scene["clot_a"][CLOT_A_Z[0]], scene["clot_a"][13]
    assert region[CLOT_A_Z[0]][ends].all() and not region[13][middle].any()  # 6+ mm from any blood
    assert not region[LUNG_BLOB_ZYX] and not region[scene["image"] < -100].any()
    # the default generator still covers the occlusion: seeded at its ends, grown through soft tissue
    mask = _mask(PseudoMaskGenerator().generate(scene["ct"], scene["heat"]))
    assert mask[13][middle].mean() > 0.8
    hard = _mask(PseudoMaskGenerator(PseudoMaskConfig(growth_dilation_mm=5.0)).generate(scene["ct"], scene["heat"]))
    assert not hard[13][middle].any()  # growth confined near blood as well: the occlusion splits in two


def test_remove_small_regions_cuts_at_the_volume_in_mm3():
    mask = np.zeros((10, 10, 10), dtype=bool)
    mask[1, 1, 1:3] = True  # 2 voxels = 16 mm3 at 2 mm
    mask[5:7, 5:7, 5:7] = True  # 8 voxels = 64 mm3
    kept = remove_small_regions(mask, 16.0, (2.0, 2.0, 2.0))
    assert not kept[1, 1, 1:3].any() and kept[5:7, 5:7, 5:7].all()
    assert remove_small_regions(mask, 15.9, (2.0, 2.0, 2.0))[1, 1, 1:3].all()
    assert ball_mm(4.0, (2.0, 1.0, 1.0)).shape == (5, 9, 9)


def test_fill_with_surrounding_blood_paints_regions_only(scene):
    filled = fill_with_surrounding_blood(scene["image"], scene["clot_a"], (SPACING_MM,) * 3, (150.0, 700.0), 4.0)
    assert np.all(filled[scene["clot_a"]] == 350.0)
    untouched = ~scene["clot_a"]
    assert np.array_equal(filled[untouched], scene["image"][untouched])


def filling_defect_detector(image: sitk.Image) -> sitk.Image:
    """A real (hand-made) heatmap source for the scene: voxels between 0 and 150 HU, brighter the darker."""
    hu = sitk.GetArrayFromImage(image)
    heat = np.where((hu >= 0) & (hu <= 150), (150.0 - hu) / 150.0, 0.0).astype(np.float32)
    out = sitk.GetImageFromArray(heat)
    out.CopyInformation(image)
    return out


def test_with_a_model_found_regions_are_painted_over_and_the_model_looks_again(scene):
    seen: list[np.ndarray] = []

    def source(image: sitk.Image) -> sitk.Image:
        seen.append(sitk.GetArrayFromImage(image))
        return filling_defect_detector(image)

    config = PseudoMaskConfig(min_peak=0.1)
    result = PseudoMaskGenerator(config, heatmap_source=source).generate(scene["ct"])
    mask = _mask(result)
    assert len(seen) == 3  # first look, after clot A was painted over, after clot B was
    assert np.all(seen[1][scene["clot_a"]] == 350.0) and np.all(seen[1][scene["clot_b"]] == 110.0)
    assert np.all(seen[2][scene["clot_b"]] == 350.0)
    assert mask[scene["clot_a"]].all() and mask[scene["clot_b"]].all()
    assert score_mask(mask, scene["clot_a"] | scene["clot_b"]).dice == pytest.approx(1.0)
    one_look = PseudoMaskGenerator(PseudoMaskConfig(min_peak=0.1, max_iterations=1), source).generate(scene["ct"])
    assert not _hits(_mask(one_look), scene["clot_b"])  # B (0.27) is below 0.6 x A's peak (0.73)


def test_config_rejects_bad_values():
    for bad in (dict(low_threshold=0.7, high_threshold=0.5), dict(max_iterations=0), dict(threshold_mode="otsu"),
                dict(enhanced_hu=(500.0, 100.0))):
        with pytest.raises(ValueError):
            PseudoMaskConfig(**bad)
    assert PseudoMaskConfig.from_dict(PseudoMaskConfig().to_dict()) == PseudoMaskConfig()


# -- the CLI on sample phantoms with constructed heatmaps ---------------------------------------------

@pytest.fixture(scope="module")
def phantom_inputs(tmp_path_factory):
    """Three sample studies (links), labels.csv, and constructed heatmaps for them."""
    root = tmp_path_factory.mktemp("pseudo")
    studies, heatmaps = root / "studies", root / "heatmaps"
    studies.mkdir()
    rows = ["image,pe"]
    labels = read_scan_labels(SAMPLE_STUDIES / "labels.csv")
    for name in PHANTOM_CASES:
        (studies / f"{name}.nii.gz").symlink_to(SAMPLE_STUDIES / f"{name}.nii.gz")
        rows.append(f"{name},{labels[name]}")
        image = sitk.ReadImage(str(SAMPLE_STUDIES / f"{name}.nii.gz"))
        truth = read_truth_mask(SAMPLE_STUDIES / "truth", name, image)
        heat, _ = constructed_heatmap(truth, sitk.GetArrayFromImage(image), tuple(reversed(image.GetSpacing())),
                                      np.random.default_rng([7, int(name[-4:])]))
        heat_image = sitk.GetImageFromArray(heat)
        heat_image.CopyInformation(image)
        write_image(heat_image, heatmaps / f"{name}_heatmap.nii.gz")
    (studies / "labels.csv").write_text("\n".join(rows) + "\n")
    return studies, heatmaps


def test_cli_on_constructed_heatmaps_writes_masks_on_the_image_grid_and_scores_them(phantom_inputs, tmp_path):
    studies, heatmaps = phantom_inputs
    out = tmp_path / "masks"
    code = insight_main(["pseudo-masks", str(studies), "--heatmaps", str(heatmaps), "--out", str(out),
                         "--truth", str(SAMPLE_STUDIES / "truth")])
    assert code == 0
    summary = json.loads((out / "pseudo_masks.json").read_text())
    assert summary["n_cases"] == 3 and not summary["failures"]
    for name in PHANTOM_CASES:
        mask, image = sitk.ReadImage(str(out / f"{name}.nii.gz")), sitk.ReadImage(str(studies / f"{name}.nii.gz"))
        assert mask.GetSize() == image.GetSize() and mask.GetPixelID() == sitk.sitkUInt8
        np.testing.assert_allclose(mask.GetOrigin(), image.GetOrigin(), atol=1e-6)
        np.testing.assert_allclose(mask.GetSpacing(), image.GetSpacing(), atol=1e-6)
    negative = next(c for c in summary["cases"] if c["name"] == "phantom_s7_0001")
    assert negative["n_regions"] == 0 and negative["scan_label"] == 0  # labels.csv in the folder says no PE
    metrics = summary["metrics"]
    print("constructed heatmaps, 2 PE + 1 no-PE phantom:", metrics)
    assert metrics["embolus_sensitivity"] >= 0.8
    assert metrics["mean_dice_positive"] >= 0.45
    assert metrics["false_positives_per_scan"] <= 2.0

    plain = tmp_path / "plain"
    assert insight_main(["pseudo-masks", str(studies), "--heatmaps", str(heatmaps), "--out", str(plain), "--truth",
                         str(SAMPLE_STUDIES / "truth"), "--no-vessel-restriction", "--iterations", "1"]) == 0
    ablation = json.loads((plain / "pseudo_masks.json").read_text())["metrics"]
    assert ablation["false_positives_per_scan"] > metrics["false_positives_per_scan"]


def test_cli_errors_are_one_clear_line(phantom_inputs, tmp_path, capsys):
    studies, heatmaps = phantom_inputs
    assert insight_main(["pseudo-masks", str(studies), "--out", str(tmp_path / "a")]) == 2
    assert "--model" in capsys.readouterr().err
    assert insight_main(["pseudo-masks", str(studies), "--heatmaps", str(heatmaps), "--out", str(studies)]) == 2
    assert "another folder" in capsys.readouterr().err
    assert insight_main(["pseudo-masks", str(studies), "--heatmaps", str(heatmaps), "--out", str(tmp_path / "b"),
                         "--low", "0.9", "--high", "0.5"]) == 2
    assert "low_threshold" in capsys.readouterr().err

    empty = tmp_path / "no_heatmaps"
    empty.mkdir()
    out = tmp_path / "c"
    assert insight_main(["pseudo-masks", str(studies), "--heatmaps", str(empty), "--out", str(out), "--no-labels"]) == 1
    summary = json.loads((out / "pseudo_masks.json").read_text())
    assert len(summary["failures"]) == 3 and "no heatmap" in summary["failures"][0]["error"]
    assert not list(out.glob("*.nii.gz"))


def test_cli_with_a_model_runs_it_on_the_painted_image(tmp_path):
    """A real (tiny, untrained) INSIGHT checkpoint: the predictor path runs and keeps the grid."""
    from tests.helpers import make_volume, save_tiny_checkpoint

    model = save_tiny_checkpoint(tmp_path / "tiny.pt")
    volume = make_volume(size_xyz=(40, 36, 12), direction=oblique_direction(15.0), seed=3)
    path = write_image(volume, tmp_path / "in" / "vol.nii.gz")
    out = tmp_path / "out"
    code = insight_main(["pseudo-masks", str(path), "--model", str(model), "--out", str(out), "--device", "cpu",
                         "--min-peak", "0.01"])
    assert code == 0
    summary = json.loads((out / "pseudo_masks.json").read_text())
    assert summary["model_version"] == "test-tiny" and summary["cases"][0]["heatmap"] == "model"
    mask = sitk.ReadImage(str(out / "vol.nii.gz"))
    assert mask.GetSize() == volume.GetSize() and mask.GetDirection() == pytest.approx(volume.GetDirection())


def test_label_components_agree_with_the_metric_rule():
    """The generator counts regions with the same 26-connectivity the per-embolus metric uses."""
    mask = np.zeros((5, 5, 5), dtype=bool)
    mask[1, 1, 1] = mask[2, 2, 2] = True  # diagonal neighbours: one region
    assert label_components(mask)[1] == 1
    assert math.isclose(score_mask(mask, mask).dice, 1.0)


def test_summary_scan_auroc_ranks_scans_by_their_scan_score_against_the_truth():
    """Truth decides the scan label (mask not empty); the scan scores rank them: 3 of 4 pairs right."""
    clot = np.zeros((4, 4, 4), dtype=bool)
    clot[1, 1, 1] = True
    empty = np.zeros_like(clot)
    scores = [score_mask(empty, clot, "pe_a"), score_mask(empty, clot, "pe_b"),
              score_mask(empty, empty, "no_a"), score_mask(empty, empty, "no_b")]
    summary = summarize_scores(scores, scan_scores={"pe_a": 0.9, "pe_b": 0.4, "no_a": 0.5, "no_b": 0.1})
    assert summary["scan_auroc"] == pytest.approx(0.75)
    assert "scan_auroc" not in summarize_scores(scores)
    assert summarize_scores(scores[:2], scan_scores={"pe_a": 0.9, "pe_b": 0.4})["scan_auroc"] is None
    with pytest.raises(ValueError, match="no scan score for no_b"):
        summarize_scores(scores, scan_scores={"pe_a": 0.9, "pe_b": 0.4, "no_a": 0.5})
