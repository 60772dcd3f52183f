"""The PE segmentation network (insight.segmentation): data pairing and weights, loss, reproducible and
resumable training, DDP on two gloo processes, inference on the exact input grid, the CLI, and the
``pe_segmentation`` task of the real MONAI Label server.

Training data: sample phantoms with their truth clot masks as labels (tiny network, 4 mm grid, 16^3
patches so that everything runs in seconds on a CPU).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import requests
import SimpleITK as sitk
import torch

from insight.cli import main as insight_main
from insight.errors import InputError, ModelError
from insight.io import write_image
from insight.models.checkpoint import weights_digest
from insight.segmentation import (SEG_PREPROCESS, SegmentationConfig, SegmentationPredictor, SegNetworkConfig,
                                  SegTrainConfig, collect_label_pairs, load_segmentation_checkpoint, prepare_pair)
from insight.segmentation.job import SegTrainingJob, prepare_pairs, run_training
from insight.segmentation.losses import WeightedDiceCELoss
from insight.segmentation.trainer import SegmentationTrainer
from tests.conftest import parse_infer_multipart, read_image_bytes
from tests.helpers import oblique_direction, save_tiny_checkpoint

SAMPLE_STUDIES = Path(__file__).resolve().parents[1] / "sample-data" / "studies"
DEMO_MODEL = Path(__file__).resolve().parents[1] / "sample-data" / "models" / "pe_insight_demo.pt"
FINAL_CASE, PSEUDO_CASE, NEGATIVE_CASE = "phantom_s7_0004", "phantom_s7_0005", "phantom_s7_0001"
TINY = SegmentationConfig(preprocess=dataclasses.replace(SEG_PREPROCESS, target_spacing_xyz=(4.0, 4.0, 4.0)),
                          network=SegNetworkConfig(channels=(4, 8), num_res_units=0), patch_size_zyx=(16, 16, 16))
TINY_TRAIN = SegTrainConfig(epochs=2, seed=3, samples_per_case=2)


@pytest.fixture(scope="module")
def seg_data(tmp_path_factory) -> dict[str, Path]:
    """images/ (links to three sample studies), final/ (truth of one), pseudo/ (truth of another, empty mask
    for the no-PE study) and truth/ (links to the phantoms' truth folder)."""
    root = tmp_path_factory.mktemp("seg")
    folders = {name: root / name for name in ("images", "final", "pseudo")}
    for folder in folders.values():
        folder.mkdir()
    for name in (FINAL_CASE, PSEUDO_CASE, NEGATIVE_CASE):
        (folders["images"] / f"{name}.nii.gz").symlink_to(SAMPLE_STUDIES / f"{name}.nii.gz")
    shutil.copy(SAMPLE_STUDIES / "truth" / f"{FINAL_CASE}_clot.nii.gz", folders["final"] / f"{FINAL_CASE}.nii.gz")
    shutil.copy(SAMPLE_STUDIES / "truth" / f"{PSEUDO_CASE}_clot.nii.gz", folders["pseudo"] / f"{PSEUDO_CASE}.nii.gz")
    negative = sitk.ReadImage(str(SAMPLE_STUDIES / "truth" / f"{NEGATIVE_CASE}_clot.nii.gz"))
    write_image(negative, folders["pseudo"] / f"{NEGATIVE_CASE}.nii.gz")
    return {**folders, "root": root, "truth": SAMPLE_STUDIES / "truth"}


@pytest.fixture(scope="module")
def prepared(seg_data):
    cases = collect_label_pairs(seg_data["images"], TINY_TRAIN, pseudo_dir=seg_data["pseudo"],
                                final_dir=seg_data["final"])
    return prepare_pairs(cases, SegTrainingJob(TINY, TINY_TRAIN, seg_data["root"] / "unused"))


@pytest.fixture(scope="module")
def tiny_checkpoint(prepared, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tiny_seg")
    SegmentationTrainer(TINY, TINY_TRAIN, out, "cpu").fit(prepared)
    return out / "last.pt"


# -- configuration, data, loss ------------------------------------------------------------------------

def test_config_validates_and_round_trips():
    assert SegmentationConfig.from_dict(TINY.to_dict()) == TINY
    assert SegmentationConfig().network.channels == (8, 16, 32, 64)
    with pytest.raises(ValueError, match="multiples of 8"):
        SegmentationConfig(patch_size_zyx=(64, 60, 64))
    with pytest.raises(ValueError, match="slice_context"):
        SegmentationConfig(preprocess=dataclasses.replace(SEG_PREPROCESS, slice_context=1))
    with pytest.raises(ValueError):
        SegTrainConfig(final_weight=0)
    with pytest.raises(ValueError, match="unknown"):
        SegmentationConfig.from_dict({**TINY.to_dict(), "extra": 1})


def test_final_labels_win_over_pseudo_masks_and_weigh_more(seg_data):
    # one study with both a final label and a pseudo-mask: the final one is used
    shutil.copy(seg_data["final"] / f"{FINAL_CASE}.nii.gz", seg_data["root"] / "both.nii.gz")
    pseudo_too = seg_data["root"] / "pseudo_too"
    shutil.copytree(seg_data["pseudo"], pseudo_too)
    shutil.copy(seg_data["root"] / "both.nii.gz", pseudo_too / f"{FINAL_CASE}.nii.gz")
    cases = {c.name: c for c in collect_label_pairs(seg_data["images"], SegTrainConfig(final_weight=3.0),
                                                    pseudo_dir=pseudo_too, final_dir=seg_data["final"])}
    assert set(cases) == {FINAL_CASE, PSEUDO_CASE, NEGATIVE_CASE}
    assert (cases[FINAL_CASE].source, cases[FINAL_CASE].weight) == ("final", 3.0)
    assert cases[FINAL_CASE].label_path.parent == seg_data["final"]
    assert (cases[PSEUDO_CASE].source, cases[PSEUDO_CASE].weight) == ("pseudo", 1.0)
    only_final = collect_label_pairs(seg_data["images"], SegTrainConfig(), final_dir=seg_data["final"])
    assert [c.name for c in only_final] == [FINAL_CASE]  # images without a label are left out
    empty = seg_data["root"] / "empty"
    empty.mkdir(exist_ok=True)
    with pytest.raises(InputError, match="no image has a label"):
        collect_label_pairs(seg_data["images"], SegTrainConfig(), final_dir=empty)
    with pytest.raises(InputError, match="not found"):
        collect_label_pairs(seg_data["images"], SegTrainConfig(), pseudo_dir=seg_data["root"] / "missing")


def test_prepared_label_keeps_its_volume_on_the_segmentation_grid(prepared):
    pair = next(p for p in prepared if p.name == FINAL_CASE)
    assert pair.image.shape == pair.label.shape and pair.image.dtype == torch.float16
    truth = sitk.ReadImage(str(SAMPLE_STUDIES / "truth" / f"{FINAL_CASE}_clot.nii.gz"))
    true_mm3 = float(sitk.GetArrayViewFromImage(truth).sum()) * float(np.prod(truth.GetSpacing()))
    on_grid_mm3 = float(pair.label.sum()) * 4.0**3
    assert 0.4 * true_mm3 < on_grid_mm3 < 2.5 * true_mm3  # nearest neighbour from ~2.5 mm to 4 mm voxels


def test_label_of_another_size_is_refused(seg_data, tmp_path):
    wrong = tmp_path / "final"
    wrong.mkdir()
    write_image(sitk.Image(10, 10, 10, sitk.sitkUInt8), wrong / f"{FINAL_CASE}.nii.gz")
    case = collect_label_pairs(seg_data["images"], SegTrainConfig(), final_dir=wrong)[0]
    with pytest.raises(InputError, match="differs from image"):
        prepare_pair(case, TINY.preprocess)


def test_loss_counts_a_sample_of_weight_3_as_three_copies_of_it():
    torch.manual_seed(0)
    logits = torch.randn(2, 2, 8, 8, 8)
    target = (torch.rand(2, 1, 8, 8, 8) > 0.8).long()
    loss = WeightedDiceCELoss()
    weighted = float(loss(logits, target, torch.tensor([3.0, 1.0])))
    copies = torch.cat([logits[:1]] * 3 + [logits[1:]]), torch.cat([target[:1]] * 3 + [target[1:]])
    assert weighted == pytest.approx(float(loss(*copies, torch.ones(4))), rel=1e-5)
    assert weighted != pytest.approx(float(loss(logits, target, torch.ones(2))), rel=1e-3)
    perfect = torch.where(target.bool(), 20.0, -20.0).float()
    assert float(loss(torch.cat([-perfect, perfect], dim=1), target, torch.ones(2))) < 1e-3
    with pytest.raises(ValueError):
        loss(logits, target, torch.ones(3))


# -- training -------------------------------------------------------------------------------------------

def test_training_is_reproducible_for_a_seed_and_resume_continues_exactly(prepared, tmp_path, tiny_checkpoint):
    reference = load_segmentation_checkpoint(tiny_checkpoint)
    again = SegmentationTrainer(TINY, TINY_TRAIN, tmp_path / "again", "cpu").fit(prepared)
    assert again.model_version == reference.model_version

    first = SegmentationTrainer(TINY, TINY_TRAIN, tmp_path / "split", "cpu")
    assert len(first.fit(prepared, until_epoch=1).history) == 1
    resumed = SegmentationTrainer(TINY, TINY_TRAIN, tmp_path / "split", "cpu")
    resumed.resume(tmp_path / "split" / "last.pt")
    assert resumed.start_epoch == 1
    summary = resumed.fit(prepared)
    assert summary.model_version == reference.model_version  # 1 + 1 epochs == 2 epochs
    assert [r["epoch"] for r in summary.history] == [1, 2]

    other_seed = SegmentationTrainer(TINY, dataclasses.replace(TINY_TRAIN, seed=4), tmp_path / "seed4", "cpu")
    assert other_seed.fit(prepared).model_version != reference.model_version
    stored = load_segmentation_checkpoint(tiny_checkpoint, with_training_state=True)
    assert stored.config == TINY and stored.training["epoch"] == 1 and "optimizer" in stored.training
    metrics = json.loads((tmp_path / "split" / "metrics.json").read_text())
    assert metrics["model_version"] == reference.model_version


def test_validation_dice_counts_pe_cases_only_so_an_empty_network_is_not_the_best(prepared, tmp_path):
    trainer = SegmentationTrainer(TINY, TINY_TRAIN, tmp_path, "cpu")

    def background_everywhere(module, inputs, output):
        logits = torch.zeros_like(output)
        logits[:, 0] = 5.0
        return logits

    trainer.network.register_forward_hook(background_everywhere)
    by_name = {pair.name: pair for pair in prepared}
    pe_case, negative = by_name[FINAL_CASE], by_name[NEGATIVE_CASE]
    assert pe_case.label.any() and not negative.label.any()
    # the empty answer scores Dice 1 on the PE-free scan: a mean over both scans would give it 0.5
    assert trainer.validate([pe_case, negative]) == 0.0
    assert trainer.validate([negative]) == 1.0  # no PE case at all: the mean over every case


def test_resume_refuses_another_configuration(tiny_checkpoint, tmp_path):
    other = dataclasses.replace(TINY, patch_size_zyx=(32, 32, 32))
    with pytest.raises(ModelError, match="different configuration"):
        SegmentationTrainer(other, TINY_TRAIN, tmp_path, "cpu").resume(tiny_checkpoint)


def test_ddp_with_two_gloo_processes_ends_with_the_same_weights_on_both_ranks(seg_data, tmp_path):
    cases = collect_label_pairs(seg_data["images"], TINY_TRAIN, pseudo_dir=seg_data["pseudo"],
                                final_dir=seg_data["final"])
    job = SegTrainingJob(TINY, dataclasses.replace(TINY_TRAIN, epochs=1), tmp_path / "ddp", device="cpu")
    summary = run_training(job, cases, nproc=2)
    report = json.loads((tmp_path / "ddp" / "distributed.json").read_text())
    assert report["world_size"] == 2 and report["backend"] == "gloo"
    assert report["ranks_agree"] and len(set(report["weights_digests"])) == 1
    saved = load_segmentation_checkpoint(tmp_path / "ddp" / "last.pt")
    assert weights_digest(saved.model) == report["weights_digests"][0] == summary.weights_digest
    torch.manual_seed(TINY_TRAIN.seed)
    from insight.segmentation import build_network

    assert weights_digest(build_network(TINY.network)) != summary.weights_digest  # it did train
    assert summary.history[0]["iterations"] == 2  # 3 cases over 2 ranks: 2 steps each (sampler pads)


# -- inference ------------------------------------------------------------------------------------------

def test_label_volume_lies_on_the_exact_oblique_input_grid(tiny_checkpoint):
    predictor = SegmentationPredictor.from_checkpoint(tiny_checkpoint, device="cpu")
    study = sitk.ReadImage(str(SAMPLE_STUDIES / f"{FINAL_CASE}.nii.gz"))
    oblique = sitk.Image(study)
    oblique.SetDirection(oblique_direction(20.0, flip_x=True))
    oblique.SetOrigin((12.3, -45.6, 78.9))
    oblique.SetSpacing((2.3, 2.1, 3.3))
    result = predictor.predict_image(oblique, name="oblique")
    for image in (result.label, result.probability):
        assert image.GetSize() == oblique.GetSize()
        assert image.GetSpacing() == oblique.GetSpacing() and image.GetOrigin() == oblique.GetOrigin()
        assert image.GetDirection() == oblique.GetDirection()
    assert result.label.GetPixelID() == sitk.sitkUInt8
    assert set(np.unique(sitk.GetArrayViewFromImage(result.label))) <= {0, 1}
    assert result.peak_probability == pytest.approx(float(sitk.GetArrayViewFromImage(result.probability).max()))
    assert 0.0 <= result.peak_probability <= 1.0
    assert result.model_version == load_segmentation_checkpoint(tiny_checkpoint).model_version


def test_an_insight_checkpoint_is_not_a_segmentation_one(tmp_path):
    insight_checkpoint = save_tiny_checkpoint(tmp_path / "insight.pt")
    with pytest.raises(ModelError, match="not a PE segmentation checkpoint"):
        load_segmentation_checkpoint(insight_checkpoint)
    with pytest.raises(ModelError, match="not found"):
        load_segmentation_checkpoint(tmp_path / "missing.pt")


def test_cli_train_seg_then_segment_with_scores(seg_data, tmp_path):
    out = tmp_path / "run"
    code = insight_main(["train-seg", "--images", str(seg_data["images"]), "--final-labels", str(seg_data["final"]),
                         "--pseudo-labels", str(seg_data["pseudo"]), "--out", str(out), "--epochs", "1",
                         "--channels", "4", "8", "--res-units", "0", "--patch", "16", "16", "16", "--spacing", "4",
                         "4", "4", "--device", "cpu", "--seed", "1"])
    assert code == 0 and (out / "best.pt").is_file() and (out / "metrics.json").is_file()
    seg_out = tmp_path / "seg"
    code = insight_main(["segment", str(seg_data["images"] / f"{FINAL_CASE}.nii.gz"), "--model", str(out / "best.pt"),
                         "--out", str(seg_out), "--truth", str(seg_data["truth"]), "--device", "cpu"])
    assert code == 0
    summary = json.loads((seg_out / "segment.json").read_text())
    assert len(summary["cases"]) == 1 and summary["metrics"]["n_scans"] == 1
    assert summary["metrics"]["n_emboli"] == summary["cases"][0]["score"]["n_emboli"] >= 1
    assert 0.0 <= summary["cases"][0]["peak_probability"] <= 1.0
    assert summary["metrics"]["scan_auroc"] is None  # one PE scan: no negative to rank it against
    assert summary["model_version"] == load_segmentation_checkpoint(out / "best.pt").model_version
    label = sitk.ReadImage(str(seg_out / f"{FINAL_CASE}.nii.gz"))
    assert label.GetSize() == sitk.ReadImage(str(SAMPLE_STUDIES / f"{FINAL_CASE}.nii.gz")).GetSize()


def test_cli_train_seg_errors(seg_data, tmp_path, capsys):
    assert insight_main(["train-seg", "--images", str(seg_data["images"]), "--out", str(tmp_path)]) == 2
    assert "--final-labels" in capsys.readouterr().err
    assert insight_main(["train-seg", "--images", str(seg_data["images"]), "--final-labels", str(seg_data["final"]),
                         "--out", str(tmp_path), "--patch", "20", "16", "16"]) == 2
    assert "multiples" in capsys.readouterr().err
    assert insight_main(["segment", str(seg_data["images"]), "--model", str(tmp_path / "none.pt"), "--out",
                         str(tmp_path / "o")]) == 2
    assert "not found" in capsys.readouterr().err


# -- the MONAI Label server ---------------------------------------------------------------------------

def test_server_lists_pe_segmentation_says_not_trained_then_serves_a_checkpoint_without_restart(
        monailabel_server_factory, tiny_checkpoint, tmp_path_factory):
    served = tmp_path_factory.mktemp("served") / "pe_segmentation.pt"
    server = monailabel_server_factory(SAMPLE_STUDIES, DEMO_MODEL,
                                       conf={"seg_model_path": str(served), "auto_scoring": "false"})
    info = server.info()
    entry = info["models"]["pe_segmentation"]
    assert entry["status"] == "not_trained" and entry["model_version"] is None
    assert "not trained yet" in entry["error"] and entry["labels"] == {"pe": 1}
    assert "pe_segmentation" in info["trainers"]

    response = requests.post(server.url("/infer/pe_segmentation"), params={"image": FINAL_CASE}, timeout=120)
    assert response.status_code == 422, response.text[:300]
    assert "not trained yet" in response.json()["detail"]

    shutil.copy(tiny_checkpoint, served)  # what a finished training (or insight train-seg) leaves there
    response = requests.post(server.url("/infer/pe_segmentation"), params={"image": FINAL_CASE}, timeout=300)
    assert response.status_code == 200, response.text[:300]
    answer = parse_infer_multipart(response)
    version = load_segmentation_checkpoint(tiny_checkpoint).model_version
    assert answer.params["model_version"] == version and answer.params["labels"] == {"pe": 1}
    label = read_image_bytes(answer.image)
    study = sitk.ReadImage(str(server.studies_dir / f"{FINAL_CASE}.nii.gz"))
    assert label.GetSize() == study.GetSize()
    np.testing.assert_allclose(label.GetSpacing(), study.GetSpacing(), atol=1e-6)
    np.testing.assert_allclose(label.GetOrigin(), study.GetOrigin(), atol=1e-5)
    np.testing.assert_allclose(label.GetDirection(), study.GetDirection(), atol=1e-6)
    assert set(np.unique(sitk.GetArrayViewFromImage(label))) <= {0, 1}
    entry = server.info()["models"]["pe_segmentation"]
    assert entry["status"] == "ready" and entry["model_version"] == version
