"""Inference end to end with a real (small, random) checkpoint: outputs, geometry, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from insight.cli import main as cli_main
from insight.errors import InputError, ModelError
from insight.inference import InsightPredictor
from insight.io import write_image
from tests.helpers import REAL_DICOM_SERIES, make_volume, oblique_direction, save_tiny_checkpoint


@pytest.fixture(scope="module")
def predictor(tmp_path_factory):
    path = save_tiny_checkpoint(tmp_path_factory.mktemp("model") / "tiny.pt")
    return InsightPredictor.from_checkpoint(path, device="cpu")


@pytest.mark.parametrize("direction", [None, oblique_direction(20.0), oblique_direction(5.0, flip_x=True)])
def test_heatmap_lies_exactly_on_the_input_grid(predictor, direction):
    image = make_volume(size_xyz=(50, 44, 14), spacing=(0.9, 1.2, 2.0), direction=direction)
    result = predictor.predict_image(image, name="case")
    heat = result.heatmap
    assert heat.GetSize() == image.GetSize()
    assert heat.GetSpacing() == image.GetSpacing()
    assert heat.GetOrigin() == image.GetOrigin()
    assert heat.GetDirection() == image.GetDirection()
    assert heat.GetPixelID() == sitk.sitkFloat32
    values = sitk.GetArrayViewFromImage(heat)
    assert 0.0 <= values.min() and values.max() <= 1.0
    assert 0.0 <= result.pe_probability <= 1.0
    assert set(result.timings_s) >= {"preprocess", "model", "postprocess"}


def test_predict_file_writes_heatmap_and_json(predictor, tmp_path):
    source = write_image(make_volume(), tmp_path / "in" / "study_42.nii.gz")
    result = predictor.predict_file(source)
    heat_path, json_path = result.write(tmp_path / "out")
    assert heat_path.name == "study_42_heatmap.nii.gz" and json_path.name == "study_42.json"
    payload = json.loads(json_path.read_text())
    assert payload["model_version"] == "test-tiny"
    assert payload["pe_probability"] == pytest.approx(result.pe_probability, abs=1e-6)
    assert payload["qa"]["verdict"] in ("pass", "warn", "fail")
    assert all({"code", "message"} <= set(flag) for flag in payload["qa"]["flags"])
    # the toy volume has no lungs and no contrast: QA must say it is not a CTPA, and it is still scored
    assert "not_ctpa" in {flag["code"] for flag in payload["qa"]["flags"]}
    assert isinstance(payload["findings"], list)
    assert {"read", "preprocess", "model", "postprocess", "write"} <= set(payload["timings_s"])
    written = sitk.ReadImage(str(heat_path))
    assert written.GetSize() == sitk.ReadImage(str(source)).GetSize()


def test_real_dicom_series_predicts_on_its_grid(predictor):
    result = predictor.predict_file(REAL_DICOM_SERIES)
    assert result.name == "A0002_B40f_8slices"
    assert result.heatmap.GetSize() == (512, 512, 8)


def test_missing_and_corrupt_checkpoints_are_model_errors(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        InsightPredictor.from_checkpoint(tmp_path / "nope.pt", device="cpu")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"garbage")
    with pytest.raises(ModelError, match="cannot read"):
        InsightPredictor.from_checkpoint(bad, device="cpu")


def test_bad_input_is_an_input_error(predictor, tmp_path):
    with pytest.raises(InputError):
        predictor.predict_file(tmp_path / "missing.nii.gz")


def test_cli_predict_several_inputs_one_bad(tmp_path, capsys):
    model = save_tiny_checkpoint(tmp_path / "m.pt")
    good_a = write_image(make_volume(seed=1), tmp_path / "a.nii.gz")
    good_b = write_image(make_volume(seed=2), tmp_path / "b.nrrd")
    code = cli_main(["predict", str(good_a), str(good_b), str(tmp_path / "missing.nii.gz"),
                     "--out", str(tmp_path / "out"), "--model", str(model), "--device", "cpu"])
    assert code == 1  # one input failed, the others were still written
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == ["a.json", "a_heatmap.nii.gz", "b.json", "b_heatmap.nii.gz"]


def test_cli_reports_bad_model_without_traceback(tmp_path, capsys):
    code = cli_main(["predict", str(tmp_path / "x.nii.gz"), "--out", str(tmp_path), "--model", str(tmp_path / "none.pt")])
    assert code == 2
    err = capsys.readouterr().err
    assert "model checkpoint not found" in err and "Traceback" not in err
