"""QA before and after inference: acquisition checks, not-a-CTPA screening, heatmap QA, predictor JSON.

Constructed volumes start from one clean phantom (complete lung coverage, 2.7 mm slices, a field of
view wider than the body) and break one thing each; the real (non-CTPA) chest CTs are the downsampled
copies in tests/data/real-ct-qa and the real DICOM series in tests/data/real-ct.
"""

from __future__ import annotations

import json
import shutil
import time

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from insight.inference import InsightPredictor
from insight.phantom import PhantomConfig, generate_case
from insight.qa import QAFlag, QAReport, SeriesMetadata, read_series_metadata, screen_heatmap, screen_study
from insight.qa.acquisition import check_slice_positions, check_slice_thickness
from insight.qa.ctpa import GOOD_ENHANCEMENT_HU, NOT_CTPA_BELOW_HU
from insight.qa.heatmap_qa import MAX_OUTSIDE_FRACTION
from insight.qa.screening import _run
from tests.helpers import REAL_DICOM_SERIES, REPO, save_tiny_checkpoint

REAL_COPIES = sorted((REPO / "tests" / "data" / "real-ct-qa").glob("*.nrrd"))
ACQUISITION_CODES = {"missing_slices", "irregular_spacing", "nonfinite_values", "constant_slices",
                     "values_out_of_range", "not_hounsfield", "truncated_fov", "body_truncated", "lungs_truncated",
                     "thick_slices"}
#: QA of a 96x96x128 volume must stay well under this (seconds), even on a busy 2-core machine.
QA_TIME_LIMIT_S = 5.0


@pytest.fixture(scope="module")
def phantom_case():
    """A PE-positive phantom with the whole chest in view: 96x96x128 voxels of 3.6 x 3.6 x 2.7 mm."""
    return generate_case(5, 2, PhantomConfig(shape_xyz=(96, 96, 128), spacing_xyz=(3.6, 3.6, 2.7), pe_fraction=1.0))


@pytest.fixture(scope="module")
def clean(phantom_case) -> sitk.Image:
    return phantom_case.to_sitk(phantom_case.image_hu)


def codes(image: sitk.Image, metadata: SeriesMetadata | None = None) -> list[str]:
    return screen_study(image, metadata).report.codes


def from_array(array: np.ndarray, like: sitk.Image) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(like)
    return image


# --- the clean phantom ------------------------------------------------------------------------------

def test_clean_phantom_raises_no_flag(clean):
    start = time.perf_counter()
    screening = screen_study(clean)
    elapsed = time.perf_counter() - start
    report = screening.report
    assert report.codes == [], [f.message for f in report.flags]
    assert report.verdict == "pass" and report.summary() == ""
    assert report.measurements["pulmonary_blood_pool_hu"] >= GOOD_ENHANCEMENT_HU
    assert report.measurements["lung_volume_ml"] > 1500
    assert elapsed < QA_TIME_LIMIT_S


# --- acquisition: one broken thing each --------------------------------------------------------------

def test_dropped_dicom_slice_is_missing_slices(tmp_path):
    series = tmp_path / "series"
    shutil.copytree(REAL_DICOM_SERIES, series)
    full = read_series_metadata(series)
    assert "missing_slices" not in check_slice_positions(full.slice_positions_mm).codes
    (series / "1-15.dcm").unlink()  # a middle slice of 1-12 ... 1-19
    metadata = read_series_metadata(series)
    assert metadata.n_files == 7 and metadata.modality == "CT"
    report = check_slice_positions(metadata.slice_positions_mm)
    flag = next(f for f in report.flags if f.code == "missing_slices")
    assert flag.severity == "fail" and flag.details["missing_estimate"] == 1
    assert flag.details["gaps_mm"] == [[192.0, 208.0]]


def test_dropped_phantom_slice_and_irregular_steps(clean):
    positions = clean.GetOrigin()[2] + np.arange(clean.GetSize()[2]) * clean.GetSpacing()[2]
    assert check_slice_positions(positions).codes == []
    assert check_slice_positions(np.delete(positions, 60)).codes == ["missing_slices"]
    jittered = positions.copy()
    jittered[30:] += 0.5  # one step of 3.2 mm among 2.7 mm steps
    assert check_slice_positions(jittered).codes == ["irregular_spacing"]


def test_constant_slice(clean):
    array = sitk.GetArrayFromImage(clean)
    array[70] = -1024
    found = screen_study(from_array(array, clean)).report
    flag = next(f for f in found.flags if f.code == "constant_slices")
    assert flag.details["slices"] == [70] and flag.severity == "fail"
    assert not set(found.codes) & {"nonfinite_values", "values_out_of_range", "not_ctpa"}


def test_nan_slice(clean):
    array = sitk.GetArrayFromImage(clean).astype(np.float32)
    array[50, 10:20, 10:20] = np.nan
    array[51, 0, 0] = np.inf
    found = screen_study(from_array(array, clean)).report
    flag = next(f for f in found.flags if f.code == "nonfinite_values")
    assert flag.details["slices"] == [50, 51] and flag.details["n_voxels"] == 101
    assert "not_ctpa" not in found.codes  # the other checks still ran on the finite voxels


def test_out_of_range_values_and_a_non_hu_scale(clean):
    array = sitk.GetArrayFromImage(clean)
    array[40, :, :30] = 30000  # a third of a slice saturated: corrupted, not metal
    found = screen_study(from_array(array, clean)).report
    flag = next(f for f in found.flags if f.code == "values_out_of_range")
    assert flag.details["slices"] == [40]
    raw = sitk.GetArrayFromImage(clean).astype(np.int32) + 1024  # stored values without the rescale intercept
    assert "not_hounsfield" in codes(from_array(raw, clean))


def test_padding_outside_the_scan_circle_is_not_out_of_range(clean):
    array = sitk.GetArrayFromImage(clean)
    ny, nx = array.shape[1:]
    y, x = np.ogrid[:ny, :nx]
    array[:, (y - ny / 2) ** 2 + (x - nx / 2) ** 2 > (0.52 * nx) ** 2] = -3024  # corners, as GE pads them
    assert not set(codes(from_array(array, clean))) & ACQUISITION_CODES


def test_field_of_view_cut_through_the_lungs(clean):
    nx, ny, nz = clean.GetSize()
    narrow = sitk.RegionOfInterest(clean, [nx // 2, ny, nz], [nx // 4, 0, 0])  # the middle half, left to right
    found = codes(narrow)
    assert "truncated_fov" in found and "not_ctpa" not in found


def test_lungs_cut_at_top_and_bottom(clean):
    nx, ny, nz = clean.GetSize()
    middle = sitk.RegionOfInterest(clean, [nx, ny, nz // 2], [0, 0, nz // 4])
    report = screen_study(middle).report
    flag = next(f for f in report.flags if f.code == "lungs_truncated")
    assert flag.details["top_area_fraction"] > 0.2 and flag.details["bottom_area_fraction"] > 0.2
    assert "not_ctpa" not in report.codes


def test_five_mm_slices_are_thick(clean):
    spacing = (clean.GetSpacing()[0], clean.GetSpacing()[1], 5.0)
    size = [clean.GetSize()[0], clean.GetSize()[1], int(clean.GetSize()[2] * clean.GetSpacing()[2] / 5.0)]
    thick = sitk.Resample(clean, size, sitk.Transform(), sitk.sitkLinear, clean.GetOrigin(), spacing,
                          clean.GetDirection(), -1024.0, clean.GetPixelID())
    report = screen_study(thick).report
    assert [c for c in report.codes if c in ACQUISITION_CODES] == ["thick_slices"]
    assert report.verdict == "warn"
    # thin spacing but a thick nominal SliceThickness (DICOM) is thick too
    assert check_slice_thickness(clean, nominal_thickness_mm=5.0).codes == ["thick_slices"]
    assert check_slice_thickness(clean, nominal_thickness_mm=1.0).codes == []


# --- not a CTPA --------------------------------------------------------------------------------------

def test_every_real_chest_ct_is_not_a_ctpa():
    assert len(REAL_COPIES) == 5, "tests/data/real-ct-qa must hold the five downsampled real volumes"
    for path in REAL_COPIES:
        report = screen_study(sitk.ReadImage(str(path))).report
        assert "not_ctpa" in report.codes, path.name
        assert report.verdict == "fail"
        assert report.measurements["pulmonary_blood_pool_hu"] < NOT_CTPA_BELOW_HU, path.name
        assert report.measurements["lung_volume_ml"] > 1000, path.name  # found as chest CT, just not enhanced


def test_contrast_removed_from_the_phantom_is_not_a_ctpa(clean):
    array = sitk.GetArrayFromImage(clean)
    plain = np.where(array > 100, 45, array).astype(np.int16)  # every enhanced (and bony) voxel back to blood
    report = screen_study(from_array(plain, clean)).report
    assert "not_ctpa" in report.codes
    weak = np.where(array > 150, 225, array).astype(np.int16)  # enhanced, but weakly
    report = screen_study(from_array(weak, clean)).report
    assert "low_enhancement" in report.codes and "not_ctpa" not in report.codes


def test_modality_and_body_part_from_the_headers(clean):
    report = screen_study(clean, SeriesMetadata(modality="MR", body_part="CHEST")).report
    flag = next(f for f in report.flags if f.code == "not_ctpa")
    assert flag.details["reasons"] == ["modality is MR, not CT"]
    report = screen_study(clean, SeriesMetadata(modality="CT", body_part="HEAD")).report
    assert report.codes == ["body_part"] and report.verdict == "warn"
    assert screen_study(clean, SeriesMetadata(modality="CT", body_part="CHEST")).report.codes == []


def test_no_lungs_is_not_a_ctpa(clean):
    array = sitk.GetArrayFromImage(clean)
    solid = np.where(array < -400, 40, array).astype(np.int16)  # a water phantom: no air inside
    assert "not_ctpa" in codes(from_array(solid, clean))


# --- heatmap QA --------------------------------------------------------------------------------------

def test_heatmap_on_the_clot_passes_and_on_bone_fails(phantom_case, clean):
    screening = screen_study(clean)
    spacing = np.array(clean.GetSpacing())[::-1]
    on_clot = ndimage.gaussian_filter(phantom_case.clot_mask.astype(np.float32), 3.0 / spacing)
    on_clot /= on_clot.max()
    report = screen_heatmap(screening, from_array(on_clot, clean))
    assert report.codes == [] and report.measurements["heatmap_outside_fraction"] < MAX_OUTSIDE_FRACTION
    bone = ndimage.gaussian_filter((phantom_case.image_hu > 500).astype(np.float32), 3.0 / spacing)
    report = screen_heatmap(screening, from_array(bone / bone.max(), clean))
    assert report.codes == ["heatmap_outside_anatomy"]
    assert report.flags[0].details["outside_fraction"] > MAX_OUTSIDE_FRACTION
    empty = screen_heatmap(screening, from_array(np.zeros_like(on_clot), clean))
    assert empty.codes == [] and empty.measurements["heatmap_outside_fraction"] is None


# --- the report and the predictor's JSON -------------------------------------------------------------

def test_report_verdict_and_json():
    report = QAReport(measurements={"hu": np.float32(12.345678), "where": np.array([1.0, np.nan])})
    assert report.verdict == "pass"
    report.flags.append(QAFlag("body_truncated", "noted", "info"))
    assert report.verdict == "pass"
    report.flags.append(QAFlag("thick_slices", "thick", "warn", details={"slice_mm": np.float64(5.0)}))
    assert report.verdict == "warn"
    report.flags.append(QAFlag("not_ctpa", "no contrast", "fail", "ctpa"))
    payload = json.loads(json.dumps(report.to_json(), allow_nan=False))
    assert payload["verdict"] == "fail" and "not_ctpa" in payload["summary"] and "body_truncated" not in payload["summary"]
    assert payload["flags"][1] == {"code": "thick_slices", "message": "thick", "severity": "warn",
                                   "check": "acquisition", "slice_mm": 5.0}
    assert payload["measurements"] == {"hu": 12.346, "where": [1.0, None]}
    with pytest.raises(ValueError):
        QAFlag("x", "y", "fatal")
    with pytest.raises(ValueError):
        QAFlag("x", "y", details={"code": "z"})


def test_a_broken_check_becomes_a_flag_not_an_exception():
    report = QAReport()

    def broken() -> QAReport:
        raise RuntimeError("odd input")

    _run(report, "demo", broken)
    assert report.codes == ["qa_check_failed"] and "odd input" in report.flags[0].message


@pytest.fixture(scope="module")
def predictor(tmp_path_factory):
    return InsightPredictor.from_checkpoint(save_tiny_checkpoint(tmp_path_factory.mktemp("m") / "tiny.pt"), device="cpu")


def test_predictor_scores_a_non_ctpa_with_its_qa_verdict(predictor, tmp_path, caplog):
    source = REAL_COPIES[0]
    with caplog.at_level("WARNING", logger="insight.inference.predictor"):
        result = predictor.predict_file(source)
    _, json_path = result.write(tmp_path)
    payload = json.loads(json_path.read_text())
    assert 0.0 <= payload["pe_probability"] <= 1.0 and isinstance(payload["findings"], list)  # still scored
    qa = payload["qa"]
    assert qa["verdict"] == "fail" and qa["summary"].startswith("QA failed")
    assert all({"code", "message", "severity", "check"} <= set(flag) for flag in qa["flags"])
    assert "not_ctpa" in [flag["code"] for flag in qa["flags"]]
    assert qa["measurements"]["pulmonary_blood_pool_hu"] < NOT_CTPA_BELOW_HU
    assert "heatmap_outside_fraction" in qa["measurements"]
    assert "qa" in payload["timings_s"]
    assert any("not_ctpa" in record.getMessage() for record in caplog.records)  # never silently


def test_predictor_reads_dicom_headers_for_qa(predictor, tmp_path):
    series = tmp_path / "A0002_gap"
    shutil.copytree(REAL_DICOM_SERIES, series)
    (series / "1-16.dcm").unlink()
    flags = {flag["code"]: flag for flag in predictor.predict_file(series).qa["flags"]}
    assert {"missing_slices", "not_ctpa", "thick_slices"} <= set(flags)
    assert "body_part" not in flags  # BodyPartExamined is CHEST


def test_predictor_passes_the_clean_phantom_and_can_skip_qa(predictor, clean, tmp_path):
    result = predictor.predict_image(clean, name="clean")
    assert result.qa["verdict"] in ("pass", "warn")  # a random tiny model may look anywhere: heatmap QA only
    assert {flag["code"] for flag in result.qa["flags"]} <= {"heatmap_outside_anatomy"}
    skipping = InsightPredictor(predictor.model, predictor.config, predictor.model_version, "cpu", run_qa=False)
    assert skipping.predict_image(clean).qa == {"verdict": "not_run", "summary": "QA was not run for this prediction",
                                                "flags": [], "measurements": {}}
