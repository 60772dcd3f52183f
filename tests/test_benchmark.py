"""The benchmark: config checks, baselines (ABMIL, Grad-CAM), its metric helpers, and the small run end to end."""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import re
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
import torch.nn.functional as F
from matplotlib.image import imread
from torch import nn

from insight.baselines import (BaselineTrainer, GatedAttentionMIL, GlobalPoolCNN, build_baseline, grad_cam,
                               load_baseline_checkpoint, region_cells, upsample_to_input)
from insight.benchmark import RESULT_FILES, load_benchmark_config, parse_benchmark_config
from insight.benchmark.config import SplitSpec, ThresholdRule
from insight.benchmark.data import MANIFEST_FILE, ensure_split, ensure_splits, write_split
from insight.benchmark.evaluation import dice_curve, own_threshold
from insight.benchmark.methods import TRAINING_RECORD, training_fingerprint
from insight.benchmark.report import markdown_report
from insight.benchmark.summary import youden_threshold
from insight.cli import main as cli_main
from insight.config import InsightConfig, ModelConfig, TrainConfig
from insight.errors import InputError, ModelError
from insight.inference import InsightPredictor
from insight.metrics import best_threshold_dice, dice
from insight.models.checkpoint import load_checkpoint
from tests.helpers import REPO

SMALL_CONFIG = REPO / "benchmarks" / "configs" / "small.json"
FULL_CONFIG = REPO / "benchmarks" / "configs" / "full.json"
TINY = ModelConfig(encoder="filter_bank", encoder_channels=(8, 8), reduce_channels=8, head_widths=(8, 8, 8))


# --------------------------------------------------------------------------- the small run, end to end


@pytest.fixture(scope="module")
def small_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("benchmark") / "small"
    threads = torch.get_num_threads()
    assert cli_main(["benchmark", "--config", str(SMALL_CONFIG), "--out", str(out), "--no-progress"]) == 0
    assert torch.get_num_threads() == threads  # the config's thread count does not leak into the process
    return out


def test_small_benchmark_writes_every_result_file(small_run):
    for name in RESULT_FILES:
        assert (small_run / name).is_file(), name
    assert not [p for p in small_run.rglob(".*") if p.is_file()], "temporary files left behind"


def test_small_benchmark_table_lists_every_method_with_numeric_auroc(small_run):
    table = (small_run / "results.md").read_text()
    config = load_benchmark_config(SMALL_CONFIG)
    assert "synthetic CTPA phantoms, not on patients" in table
    assert "insight benchmark --config" in table and "Hardware: CPU only" in table
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith(("| Method", "| ---"))]
    assert [row.split(" | ")[0][2:] for row in rows] == [m.name for m in config.methods]
    for row in rows:
        cells = row.strip("| ").split(" | ")
        assert len(cells) == 14
        assert re.fullmatch(r"\d\.\d{3} \(\d\.\d\d-\d\.\d\d\)", cells[1]), cells[1]  # AUROC (95% CI)
        assert re.fullmatch(r"(\d\.\d\d|n/a)( / (\d\.\d\d|n/a)){3}", cells[9]), cells[9]  # FROC at 4 rates


def test_small_benchmark_json_holds_every_figure(small_run):
    results = json.loads((small_run / "results.json").read_text())
    config = load_benchmark_config(SMALL_CONFIG)
    assert results["note"].startswith("Results on synthetic")
    assert results["hardware"]["device"] == "cpu"
    assert {k: v["seed"] for k, v in results["data"].items()} == {"train": 1100, "val": 1203, "test": 1304}
    assert results["data"]["test"]["n"] == 6 and 0 < results["data"]["test"]["n_pe"] < 6
    assert results["test_emboli"] >= results["data"]["test"]["n_pe"]
    by_name = {m["name"]: m for m in results["methods"]}
    assert list(by_name) == [m.name for m in config.methods]
    for method in results["methods"]:
        cls, loc, froc, cost = method["classification"], method["localization"], method["froc"], method["cost"]
        assert 0.0 <= cls["auroc"] <= 1.0 and cls["auroc_ci95"][0] <= cls["auroc"] <= cls["auroc_ci95"][1]
        assert 0.0 <= cls["sensitivity"] <= 1.0 and 0.0 <= cls["specificity"] <= 1.0 and 0.0 <= cls["ece"] <= 1.0
        probs = [c["probability"] for c in method["cases"]]
        labels = [c["label"] for c in method["cases"]]
        assert len(probs) == 6 and all(0.0 <= p <= 1.0 for p in probs)
        # the JSON rounds p to 6 decimals: scans that close to the threshold may fall either side
        negatives = [p for p, y in zip(probs, labels) if y == 0]
        threshold = cls["operating_threshold"]
        assert (np.mean([p < threshold - 1e-6 for p in negatives]) - 1e-9 <= cls["specificity"]
                <= np.mean([p < threshold + 1e-6 for p in negatives]) + 1e-9)
        assert loc["n_scans_with_clot"] == results["data"]["test"]["n_pe"]
        for key in ("dice_own_mean", "iou_own_mean", "pointing_game"):
            assert 0.0 <= loc[key] <= 1.0
        assert loc["iou_own_mean"] <= loc["dice_own_mean"] + 1e-12
        assert loc["dice_oracle_threshold"]["dice"] >= loc["dice_val_threshold"]["dice"] - 1e-12
        for rule in ("overlap", "peak"):
            assert set(froc[rule]["sensitivity_at"]) == {"0.5", "1", "2", "4"}
            assert froc[rule]["n_emboli"] == results["test_emboli"]
            sens = [froc[rule]["sensitivity_at"][k] for k in ("0.5", "1", "2", "4")]
            assert sens == sorted(sens)  # more false positives allowed never lowers sensitivity
        # 1 seeded + 2 weak-label epochs for INSIGHT kinds; the same 3 epochs, all weak-label, for baselines
        stages = [h["stage"] for h in method["training"]["history"]]
        assert stages == (["seed", "weak", "weak"] if method["kind"] == "insight" else ["weak"] * 3), stages
        assert method["parameters"] > 0
        # the filter bank's fixed part is computed once per scan for all methods and counted in each one's time
        assert 0 < cost["fixed_features_s_mean"] < cost["forward_s_mean"]
        assert cost["fixed_features_s_mean"] == by_name["INSIGHT"]["cost"]["fixed_features_s_mean"]
    assert by_name["CNN + Grad-CAM"]["cost"]["backward_s_mean"] > 0
    assert all(by_name[n]["cost"]["backward_s_mean"] == 0 for n in by_name if n != "CNN + Grad-CAM")
    assert by_name["CNN + Grad-CAM"]["threshold_rule"] == "0.15 x max"
    assert by_name["INSIGHT"]["threshold_rule"] == "Otsu"


def test_small_benchmark_plots_are_images(small_run):
    shapes = {name: imread(small_run / name).shape for name in ("roc.png", "froc.png", "montage.png")}
    for shape in shapes.values():
        assert len(shape) == 3 and shape[0] > 100 and shape[1] > 100
    n_methods = len(load_benchmark_config(SMALL_CONFIG).methods)
    assert shapes["montage.png"][1] > shapes["roc.png"][1] * (n_methods + 1) / 3  # one column per method


def test_small_benchmark_trains_each_method_on_the_same_encoder(small_run):
    runs = small_run / "runs"
    insight = load_checkpoint(runs / "insight" / "best.pt")
    detection = load_checkpoint(runs / "detection-only" / "best.pt")
    max_mil = load_checkpoint(runs / "max-pool-mil" / "best.pt")
    assert insight.config.model.use_context and not detection.config.model.use_context
    assert max_mil.config.model.pooling == "max" and not max_mil.config.model.use_context
    encoders = {(c.config.model.encoder, c.config.model.encoder_channels) for c in (insight, detection, max_mil)}
    for kind, folder in (("abmil", "abmil"), ("cnn_gradcam", "cnn-grad-cam")):
        loaded = load_baseline_checkpoint(runs / folder / "best.pt")
        assert loaded.kind == kind and loaded.model_version.startswith(f"{kind}-filter_bank-")
        encoders.add((loaded.model.config.encoder, loaded.model.config.encoder_channels))
        with pytest.raises(ModelError, match="not an insight checkpoint"):
            load_checkpoint(runs / folder / "best.pt")  # not an INSIGHT checkpoint: refused clearly
    assert encoders == {("filter_bank", (8, 8))}
    with pytest.raises(ModelError, match="not a baseline checkpoint"):
        load_baseline_checkpoint(runs / "insight" / "best.pt")


def test_small_benchmark_insight_probabilities_match_the_predictor(small_run):
    """The benchmark's evaluation path gives the product's own p(PE) for the same checkpoint."""
    results = json.loads((small_run / "results.json").read_text())
    insight = next(m for m in results["methods"] if m["name"] == "INSIGHT")
    predictor = InsightPredictor.from_checkpoint(small_run / "runs" / "insight" / "best.pt", "cpu", run_qa=False)
    for case in insight["cases"][:2]:
        result = predictor.predict_file(small_run / "data" / "test" / f"{case['name']}.nii.gz")
        assert result.pe_probability == pytest.approx(case["probability"], abs=1e-5)


def test_small_benchmark_rerun_reuses_every_finished_training(small_run, caplog):
    runs = small_run / "runs"
    checkpoints = {p: p.stat().st_mtime_ns for p in runs.rglob("best.pt")}
    before = json.loads((small_run / "results.json").read_text())
    with caplog.at_level(logging.INFO, logger="insight.benchmark.methods"):
        assert cli_main(["benchmark", "--config", str(SMALL_CONFIG), "--out", str(small_run), "--no-progress"]) == 0
    assert len(checkpoints) == 5 and {p: p.stat().st_mtime_ns for p in runs.rglob("best.pt")} == checkpoints
    assert caplog.text.count("reusing the finished training") == 5
    after = json.loads((small_run / "results.json").read_text())
    for old, new in zip(before["methods"], after["methods"]):
        assert [c["probability"] for c in new["cases"]] == [c["probability"] for c in old["cases"]]
        assert new["training"] == old["training"]


def test_changed_settings_train_the_method_again(small_run):
    config = load_benchmark_config(SMALL_CONFIG)
    spec = config.methods[0]
    record = json.loads((small_run / "runs" / spec.slug / TRAINING_RECORD).read_text())
    assert record["fingerprint"] == json.loads(json.dumps(training_fingerprint(spec, config)))
    changed = dataclasses.replace(config, train=dataclasses.replace(config.train, learning_rate=0.001))
    assert record["fingerprint"] != json.loads(json.dumps(training_fingerprint(spec, changed)))


def test_small_benchmark_splits_come_from_separate_seeds_and_are_reused(small_run):
    data = small_run / "data"
    names = {split: {p.name.split(".")[0] for p in (data / split).glob("*.nii.gz")}
             for split in ("train", "val", "test")}
    assert all(n.startswith("phantom_s1100_") for n in names["train"]) and len(names["train"]) == 8
    assert all(n.startswith("phantom_s1304_") for n in names["test"]) and len(names["test"]) == 6
    assert not (names["train"] & names["test"]) and not (names["val"] & names["test"])
    before = {p: p.stat().st_mtime_ns for p in data.rglob("*.nii.gz")}
    ensure_splits(load_benchmark_config(SMALL_CONFIG), data, progress=False)
    assert {p: p.stat().st_mtime_ns for p in data.rglob("*.nii.gz")} == before


def test_published_results_are_the_measured_run_of_the_shipped_cpu_config():
    """benchmarks/results/ holds one real run: its table is what its JSON gives, its settings are cpu.json's,
    and the figures quoted in the README are that JSON's."""
    published = REPO / "benchmarks" / "results"
    results = json.loads((published / "results.json").read_text())
    assert (published / "results.md").read_text() == markdown_report(results)
    config = load_benchmark_config(REPO / "benchmarks" / "configs" / "cpu.json")
    # settings added after the run, at defaults that reproduce what the run did
    later_defaults = {"train": {"weak_learning_rate": None}}  # None: the weak epochs use learning_rate
    run_settings = json.loads(json.dumps(results["config"]))
    for block, values in later_defaults.items():
        assert not set(values) & set(run_settings[block]), "a later setting is in the run's record: drop it here"
        run_settings[block].update(values)
    assert run_settings == json.loads(json.dumps(config.to_json()))
    assert [m["name"] for m in results["methods"]] == [m.name for m in config.methods]
    readme = (REPO / "README.md").read_text()
    for method in results["methods"]:
        cls = method["classification"]
        low, high = cls["auroc_ci95"]
        assert f"| {cls['auroc']:.3f} ({low:.2f}-{high:.2f}) | {method['localization']['pointing_game']:.2f} |" in readme


def test_split_with_other_settings_is_generated_again(tmp_path):
    config = load_benchmark_config(SMALL_CONFIG)
    folder = ensure_split(tmp_path / "test", SplitSpec(1304, 2), config.phantom, progress=False)
    assert len(list(folder.glob("*.nii.gz"))) == 2
    (folder / MANIFEST_FILE).write_text(json.dumps({"seed": 1304, "n": 3}))
    (folder / "stale.nii.gz").write_text("left by another run")
    ensure_split(folder, SplitSpec(1304, 2), config.phantom, progress=False)
    assert json.loads((folder / MANIFEST_FILE).read_text())["n"] == 2
    assert not (folder / "stale.nii.gz").exists() and len(list(folder.glob("*.nii.gz"))) == 2
    foreign = tmp_path / "foreign"
    (foreign / "train").mkdir(parents=True)
    (foreign / "train" / "mine.txt").write_text("not the benchmark's")
    with pytest.raises(InputError, match="not written by insight benchmark"):
        ensure_splits(config, foreign, progress=False)
    assert (foreign / "train" / "mine.txt").is_file()


def test_parallel_generation_writes_what_insight_phantom_writes(tmp_path):
    phantom = load_benchmark_config(SMALL_CONFIG).phantom
    write_split(tmp_path / "one", SplitSpec(7, 2), phantom, workers=1, progress=False)
    write_split(tmp_path / "two", SplitSpec(7, 2), phantom, workers=2, progress=False)
    assert (tmp_path / "one" / "labels.csv").read_text() == (tmp_path / "two" / "labels.csv").read_text()
    files = {d: sorted(p.relative_to(tmp_path / d) for p in (tmp_path / d).rglob("*.nii.gz")) for d in ("one", "two")}
    assert len(files["one"]) == 8 and files["one"] == files["two"]
    for name in files["one"]:
        one, two = (sitk.ReadImage(str(tmp_path / d / name)) for d in ("one", "two"))
        assert np.array_equal(sitk.GetArrayFromImage(one), sitk.GetArrayFromImage(two))
        assert one.GetSpacing() == two.GetSpacing() and one.GetOrigin() == two.GetOrigin()


# --------------------------------------------------------------------------- configuration


def small_payload() -> dict:
    return json.loads(SMALL_CONFIG.read_text())


def test_shipped_configs_parse():
    small, full = load_benchmark_config(SMALL_CONFIG), load_benchmark_config(FULL_CONFIG)
    for config in (small, full):
        assert [m.kind for m in config.methods] == ["insight", "insight", "abmil", "cnn_gradcam", "insight"]
        assert len({s.seed for s in config.splits.values()}) == 3
    assert small.method_model(small.methods[1]).use_context is False
    assert full.splits["test"].n > small.splits["test"].n
    # the published CPU run and the timing run measure the full config's model and recipe on fewer scans
    cpu, timing = (load_benchmark_config(FULL_CONFIG.parent / f"{n}.json") for n in ("cpu", "timing"))
    for config in (cpu, timing):
        assert config.model == full.model and config.preprocess == full.preprocess and config.methods == full.methods
        assert config.train.seed_instances == full.train.seed_instances > 0
        assert config.splits["train"].n < full.splits["train"].n


@pytest.mark.parametrize("edit, message", [
    (lambda p: p.update(extra=1), "unknown keys"),
    (lambda p: p["splits"]["val"].update(seed=1100), "three different seeds"),
    (lambda p: p["splits"].pop("val"), "exactly the keys"),
    (lambda p: p["splits"]["test"].update(n=1), "integer >= 2"),
    (lambda p: p["methods"][0].update(model={"encoder": "small_cnn"}), "cannot differ between methods"),
    (lambda p: p["methods"][2].update(model={"use_context": False}), "only 'insight' methods"),
    (lambda p: p["methods"][0].update(kind="transmil"), "kind must be one of"),
    (lambda p: p["methods"][3].update(threshold={"max_fraction": 2}), "threshold must be"),
    (lambda p: p["methods"].append(dict(p["methods"][0])), "unique"),
    (lambda p: p["model"].update(encoder_stride=3), "encoder_stride"),
    (lambda p: p["train"].update(epochs=-1), "epochs"),
    (lambda p: p["evaluation"].update(operating_threshold="youden"), "operating_threshold"),
    (lambda p: p["phantom"].update(shape_xyz=[8, 8, 8]), "shape_xyz"),
])
def test_bad_configs_are_refused_with_a_clear_message(edit, message):
    payload = copy.deepcopy(small_payload())
    edit(payload)
    with pytest.raises(InputError, match=message):
        parse_benchmark_config(payload)


def test_cli_reports_a_bad_config_in_one_line(tmp_path, capsys):
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    assert cli_main(["benchmark", "--config", str(broken), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "insight benchmark: error: cannot read benchmark config" in err and "Traceback" not in err
    assert cli_main(["benchmark", "--config", str(tmp_path / "missing.json"), "--out", str(tmp_path / "o")]) == 2
    assert "benchmark config not found" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- metric helpers with known answers


def box(shape=(6, 16, 16), z=(2, 4), y=(4, 8), x=(4, 8)) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[z[0]:z[1], y[0]:y[1], x[0]:x[1]] = True
    return mask


def test_perfect_heatmap_scores_dice_one_and_a_shifted_one_lower():
    truth = box()
    perfect = truth.astype(np.float32)
    shifted = np.roll(perfect, 2, axis=2)  # half the box's width
    for heat, expected in ((perfect, 1.0), (shifted, 0.5)):
        threshold = own_threshold(torch.from_numpy(heat), None, ThresholdRule())
        assert 0.0 <= threshold < 1.0
        assert dice(heat > threshold, truth) == pytest.approx(expected)
        assert dice_curve(heat, truth).tolist() == pytest.approx([expected] * 19)


def test_dice_curve_agrees_with_best_threshold_dice():
    rng = np.random.default_rng(0)
    truths = [box(), box(z=(0, 3), y=(8, 14), x=(1, 6))]
    heats = [np.clip(t * 0.6 + rng.random(t.shape) * 0.5, 0, 1).astype(np.float32) for t in truths]
    curve = np.mean([dice_curve(h, t) for h, t in zip(heats, truths)], axis=0)
    threshold, best = best_threshold_dice(heats, truths)
    assert curve.max() == pytest.approx(best)
    assert np.linspace(0.05, 0.95, 19)[int(np.argmax(curve))] == pytest.approx(threshold)


def test_own_threshold_rules():
    heat = torch.tensor([[[0.1, 0.2], [0.8, 0.9]]])
    cells = torch.tensor([[[True, True], [True, False]]])
    assert own_threshold(heat, cells, ThresholdRule("max_fraction", 0.5)) == pytest.approx(0.4)  # 0.9 is outside
    assert 0.2 <= own_threshold(heat, None, ThresholdRule()) < 0.8
    assert own_threshold(torch.full((1, 2, 2), 0.3), None, ThresholdRule()) == pytest.approx(0.3)  # nothing above


def test_youden_threshold():
    assert youden_threshold(np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.7, 0.9])) == pytest.approx(0.7)
    assert youden_threshold(np.array([1, 1]), np.array([0.1, 0.2])) == 0.5


# --------------------------------------------------------------------------- baselines


def toy_volume(n=3, size=(30, 30)) -> tuple[torch.Tensor, torch.Tensor]:
    """[N, 3, H, W] slices at 0.2 with a bright 4x4 blob in slice 1 at y 16-19, x 8-11; region: x < 24."""
    slices = torch.full((n, 3, *size), 0.2)
    slices[1, :, 16:20, 8:12] = 0.9
    region = torch.zeros(n, *size, dtype=torch.bool)
    region[:, :, :24] = True
    return slices, region


def test_abmil_attention_and_heatmap_invariants():
    torch.manual_seed(0)
    model = GatedAttentionMIL(TINY, 3).eval()
    slices, region = toy_volume()
    output = model(slices, region=region)
    assert output.probability.shape == (1,) and output.heatmap.shape == (3, 1, 8, 8)
    assert output.detection_logits.shape == (1, 1, 1, 1) and output.context_logits is None
    cells = region_cells(region, model.stride)
    embeddings = model.embed(model.encoder(slices))
    weights = model.attention(embeddings, cells)
    weights = weights.detach()
    assert float(weights.sum()) == pytest.approx(1.0, abs=1e-5)
    assert float(weights[~cells.expand_as(weights)].abs().max()) == 0.0
    assert float(output.heatmap[~cells.expand_as(output.heatmap)].abs().max()) == 0.0
    assert float(output.heatmap.max()) == pytest.approx(float(output.probability.detach()[0]), rel=1e-5)
    cached = model(model.encoder.precompute(slices), precomputed=True, region=region)
    assert torch.allclose(cached.probability, output.probability, atol=1e-6)
    model.train()
    model(slices, region=region).probability.sum().backward()
    assert float(model.encoder.mix[0].weight.grad.abs().sum()) > 0  # the encoder learns through attention


class MeanIntensityEncoder(nn.Module):
    """A hand-set 'encoder': the centre channel averaged over 4x4 cells (stride 4, one channel)."""

    stride = 4
    out_channels = 1

    def forward(self, slices: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(slices[:, 1:2], 4, ceil_mode=True)


def hand_set_cnn(weight: float) -> GlobalPoolCNN:
    """logit = weight * (mean intensity over the region's cells) - 5: brighter means more likely positive."""
    model = GlobalPoolCNN(TINY, 3)
    model.encoder, model.reduce, model.head = MeanIntensityEncoder(), nn.Identity(), nn.Identity()
    model.classifier = nn.Linear(1, 1)
    with torch.no_grad():
        model.classifier.weight.fill_(weight)
        model.classifier.bias.fill_(-5.0)
    return model.eval()


def test_grad_cam_highlights_the_blob_of_a_hand_set_model():
    model = hand_set_cnn(20.0)
    slices, region = toy_volume()
    result = grad_cam(model, slices, region)
    assert result.heatmap.shape == (3, 1, 8, 8) and result.forward_s > 0 and result.backward_s > 0
    cam = upsample_to_input(result.heatmap[:, 0], model.stride, (30, 30))
    assert cam.shape == (3, 30, 30)  # the input's grid
    assert float(cam.min()) >= 0.0
    n, y, x = np.unravel_index(int(cam.argmax()), cam.shape)
    assert n == 1 and 16 <= y < 20 and 8 <= x < 12  # its maximum lies on the blob
    assert float(result.heatmap.max()) == pytest.approx(float(result.probability[0]), rel=1e-5)
    assert float(result.heatmap[..., 6:].abs().max()) == 0.0  # cells wholly outside the region
    expected = torch.sigmoid(model.classify(model.feature_maps(slices), region_cells(region, 4)))
    assert torch.allclose(result.probability, expected.detach())
    assert model.classifier.weight.grad is None  # explaining does not touch the weights' gradients


def test_grad_cam_of_evidence_against_the_class_is_all_zero():
    result = grad_cam(hand_set_cnn(-20.0), *toy_volume())
    assert float(result.heatmap.abs().max()) == 0.0 and torch.isfinite(result.heatmap).all()


def test_global_pool_cnn_forward_shapes():
    model = build_baseline("cnn_gradcam", TINY, 3).eval()
    slices, region = toy_volume()
    output = model(slices, region=region)
    assert output.probability.shape == (1,) and output.heatmap.shape == (3, 1, 8, 8)
    assert float(output.heatmap.abs().max()) == 0.0  # no built-in heatmap
    assert model(slices).probability.shape == (1,)
    with pytest.raises(ValueError, match="unknown baseline"):
        build_baseline("transmil", TINY, 3)


def test_baseline_trainer_refuses_to_resume(tmp_path):
    trainer = BaselineTrainer("abmil", InsightConfig(model=TINY), TrainConfig(epochs=1), tmp_path)
    assert isinstance(trainer.model, GatedAttentionMIL)
    with pytest.raises(ModelError, match="not supported"):
        trainer.resume(tmp_path / "last.pt")
    with pytest.raises(ModelError, match="not found"):
        load_baseline_checkpoint(tmp_path / "missing.pt")
