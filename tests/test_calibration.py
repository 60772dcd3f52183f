"""Scan-probability calibration (Platt scaling folded into the detection module)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from insight.cli import main as cli_main
from insight.errors import InputError
from insight.models.checkpoint import load_checkpoint
from insight.models.insight_model import InsightModel
from insight.training.calibration import PlattScaling, fit_platt_scaling, fold_into_detection, probability_logits
from tests.helpers import TINY_MODEL
from tests.test_training import make_weak_label_folder, train


def test_folding_scales_every_detection_logit_exactly():
    torch.manual_seed(0)
    model = InsightModel(TINY_MODEL, in_channels=3).eval()
    slices = torch.rand(4, 3, 24, 24)
    with torch.no_grad():
        before = model(slices).detection_logits
        fold_into_detection(model, PlattScaling(slope=2.0, intercept=-1.5))
        after = model(slices).detection_logits
    torch.testing.assert_close(after, 2.0 * before - 1.5, rtol=1e-5, atol=1e-5)


def test_platt_scaling_recovers_an_overconfident_model_and_lowers_its_loss():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 400)
    true_logit = np.where(labels == 1, 1.0, -1.0) + rng.normal(0, 1.0, 400)
    overconfident = 1 / (1 + np.exp(-(0.5 * true_logit + 3.0)))  # ranks well, every p high
    scaling = fit_platt_scaling(overconfident, labels)
    calibrated = scaling.apply(overconfident)

    def bce(p):
        p = np.clip(p, 1e-6, 1 - 1e-6)
        return float(-np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p)))

    assert scaling.slope > 0 and bce(calibrated) < 0.8 * bce(overconfident)
    assert abs(calibrated.mean() - labels.mean()) < 0.02
    np.testing.assert_allclose(probability_logits(np.array([0.5, 0.9])), [0.0, np.log(9.0)])


def test_calibration_refuses_to_invert_a_ranking_or_fit_too_few_scans():
    with pytest.raises(InputError, match="does not rise"):
        fit_platt_scaling(np.array([0.9, 0.8, 0.2, 0.1, 0.85, 0.15]), np.array([0, 0, 1, 1, 0, 1]))
    with pytest.raises(InputError, match="at least 4"):
        fit_platt_scaling(np.array([0.9, 0.1]), np.array([1, 0]))
    with pytest.raises(InputError, match="both PE and no PE"):
        fit_platt_scaling(np.array([0.9, 0.1, 0.5, 0.4]), np.array([1, 1, 1, 1]))


def test_calibrate_command_writes_a_new_checkpoint_and_keeps_the_old(tmp_path, capsys):
    data = make_weak_label_folder(tmp_path / "train", 4, 0), make_weak_label_folder(tmp_path / "val", 8, 20)
    assert train(tmp_path / "smooth", data, epochs=1) == 0
    assert cli_main(["calibrate", "--model", str(tmp_path / "smooth" / "best.pt"), "--labelled", str(data[1]),
                     "--out", str(tmp_path / "x.pt")]) != 0
    assert "max pooling" in capsys.readouterr().err and not (tmp_path / "x.pt").exists()
    assert train(tmp_path / "run", data, epochs=1, extra=["--pooling", "max", "--no-context"]) == 0
    model = tmp_path / "run" / "best.pt"
    original = load_checkpoint(model).model_version
    # relabel the scans so that the tiny model ranks them right (it learned nothing real in one epoch):
    # the command's mechanics are under test here, not the model
    labelled = _relabel_by_model(model, data[1], tmp_path / "labelled")
    code = cli_main(["calibrate", "--model", str(model), "--labelled", str(labelled), "--out", str(tmp_path / "cal.pt"),
                     "--no-progress"])
    out = capsys.readouterr()
    assert code == 0, out.err
    report = json.loads(out.out)
    calibrated = load_checkpoint(tmp_path / "cal.pt", with_training_state=True)
    assert calibrated.model_version == report["model_version"] != original
    assert calibrated.training["calibration"]["calibrated_from"] == original
    assert report["after"]["auroc"] == pytest.approx(report["before"]["auroc"])  # monotone: same ranking
    assert load_checkpoint(model).model_version == original
    assert report["after"]["mean_p_pe"] > report["after"]["mean_p_no_pe"]
    assert json.loads((tmp_path / "cal.calibration.json").read_text())["slope"] == pytest.approx(report["slope"])
    assert cli_main(["calibrate", "--model", str(model), "--labelled", str(labelled), "--out", str(model)]) != 0
    assert "--out must differ" in capsys.readouterr().err


def _relabel_by_model(model_path, folder, out):
    """A copy of ``folder``'s labels.csv (linking its images) with pe = 1 for the half the model scores highest."""
    import csv

    from insight.training import prepare_cases, read_label_table
    from insight.training.trainer import scan_probabilities

    loaded = load_checkpoint(model_path)
    cases = read_label_table(folder)
    prepared = prepare_cases(cases, loaded.config.preprocess, False)
    scores = scan_probabilities(loaded.model, prepared, loaded.config.preprocess.slice_context)
    top = set(np.argsort(-scores, kind="stable")[: len(cases) // 2].tolist())
    out.mkdir()
    with (out / "labels.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "pe"])
        for i, case in enumerate(cases):
            (out / case.image_path.name).symlink_to(case.image_path)
            writer.writerow([case.name, int(i in top)])
    return out
