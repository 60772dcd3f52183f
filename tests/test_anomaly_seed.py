"""Anomaly-seeded instance selection: the normal appearance model, selection, exact patches, training."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from insight.cli import main as cli_main
from insight.config import ModelConfig
from insight.errors import InputError
from insight.models.checkpoint import load_checkpoint
from insight.models.insight_model import InsightModel
from insight.preprocessing import slice_stack
from insight.training.anomaly_seed import (NormalAppearanceModel, collect_seed_instances, extract_patches,
                                           learned_radius, most_anomalous, neutralise_context, scan_locations,
                                           seed_detection_logits)
from insight.training.dataset import PreparedCase
from tests.test_training import TINY_FLAGS, make_weak_label_folder

SEEDED_MODEL = ModelConfig(encoder="vessel_filters", encoder_stride=1, encoder_channels=(8, 8), reduce_channels=8,
                           head_widths=(8, 8, 8), context_depth=1)


def test_normal_appearance_model_finds_the_outliers():
    rng = np.random.default_rng(0)
    normal = rng.normal(size=(2000, 3))
    model = NormalAppearanceModel(components=4, seed=0).fit(normal)
    queries = np.concatenate([rng.normal(size=(50, 3)), [[6.0, 0, 0], [0, -7.0, 0]]])
    scores = model.anomaly(queries)
    assert set(most_anomalous(scores, 2)) == {50, 51}
    assert scores[50:].min() > scores[:50].max()


def test_normal_appearance_model_refuses_too_little_data():
    with pytest.raises(InputError, match="at least 2"):
        NormalAppearanceModel(components=4).fit(np.zeros((1, 3)))


def test_most_anomalous_returns_the_highest_first():
    scores = np.array([0.1, 5.0, -2.0, 3.0, 4.0])
    assert most_anomalous(scores, 3).tolist() == [1, 4, 3]
    assert most_anomalous(scores, 10).tolist() == [1, 4, 3, 0, 2]


def _random_case(label: int, seed: int, shape=(6, 20, 24), noise: float = 1.0) -> PreparedCase:
    """Uniform noise (``noise`` = 1) or a flat 0.4 with +-noise/2 of it, in the window's [0, 1] units."""
    generator = torch.Generator().manual_seed(seed)
    volume = (0.4 + noise * (torch.rand(shape, generator=generator) - 0.5)).clamp(0, 1).to(torch.float16)
    region = torch.zeros(shape, dtype=torch.bool)
    region[1:-1, 3:-3, 4:-4] = True
    return PreparedCase(f"case{seed}", volume, label, region)


def test_patch_logits_equal_the_full_volume_detection_logits():
    torch.manual_seed(0)
    model = InsightModel(SEEDED_MODEL, in_channels=3).eval()
    scan = scan_locations(model, _random_case(1, 0), slice_context=1)
    assert scan.features.shape == (len(scan.locations), model.encoder.N_FIXED)
    assert len(scan.locations) == 4 * 14 * 16  # the region's voxels at stride 1
    chosen = scan.locations[::37]
    patches = extract_patches(scan.encoder_input, chosen, learned_radius(model))
    assert patches.shape == (len(chosen), scan.encoder_input.shape[1], 3, 3)
    with torch.no_grad():
        from_patches = seed_detection_logits(model, patches)[:, 0]
        full = model.detection(model.reduce(model.encoder(scan.encoder_input, precomputed=True)))
    expected = full[chosen[:, 0], 0, chosen[:, 1], chosen[:, 2]]
    torch.testing.assert_close(from_patches, expected, rtol=1e-5, atol=1e-5)


def test_collected_instances_prefer_the_planted_anomaly_and_carry_scan_labels():
    cases = [_random_case(label, seed, noise=0.05) for label, seed in [(0, 0), (0, 1), (0, 2), (1, 10), (1, 11), (1, 12)]]
    for case in cases[3:]:  # a bright plug inside the region of every positive scan
        case.volume[2:4, 8:11, 9:12] = 0.9
    model = InsightModel(SEEDED_MODEL, in_channels=3)
    instances = collect_seed_instances(model, cases, 1, instances_per_scan=5, components=2, reference_per_scan=200,
                                       seed=0, progress=False)
    assert len(instances) == 30 and instances.patches.dtype == torch.float16
    assert instances.labels.tolist() == [0.0] * 15 + [1.0] * 15
    assert instances.scan_index.tolist() == sorted(list(range(6)) * 5)
    # the centre intensity (fixed map 0) of the positives' instances lies on or right next to the plug
    centre_intensity = instances.patches[15:, 0, 1, 1].float()
    assert (centre_intensity > 0.85).float().mean() > 0.5


def test_cached_encoder_inputs_select_the_same_instances():
    cases = [_random_case(label, seed, noise=0.05) for label, seed in [(0, 0), (0, 1), (1, 10), (1, 11)]]
    for case in cases[2:]:
        case.volume[2:4, 8:11, 9:12] = 0.9
    model = InsightModel(SEEDED_MODEL, in_channels=3)
    settings = dict(instances_per_scan=4, components=2, reference_per_scan=100, seed=0, progress=False)
    computed = collect_seed_instances(model, cases, 1, **settings)
    with torch.no_grad():
        cached = [model.encoder.precompute(slice_stack(c.volume.float(), 1)) for c in cases]
    reused = collect_seed_instances(model, cases, 1, encoder_inputs=cached, **settings)
    torch.testing.assert_close(reused.patches, computed.patches)
    assert reused.scan_index.tolist() == computed.scan_index.tolist()
    with pytest.raises(ValueError, match="3 cached encoder inputs for 4 cases"):
        collect_seed_instances(model, cases, 1, encoder_inputs=cached[:3], **settings)


def test_seeding_needs_a_fixed_feature_encoder():
    model = InsightModel(ModelConfig(encoder_channels=(8, 8, 8), reduce_channels=8, head_widths=(8, 8, 8)), 3)
    with pytest.raises(InputError, match="fixed-feature encoder"):
        collect_seed_instances(model, [_random_case(0, 0), _random_case(1, 1)], 1, 5, 2, 100, 0, progress=False)


def test_neutral_context_suppresses_nothing():
    model = InsightModel(SEEDED_MODEL, in_channels=3).eval()
    neutralise_context(model)
    with torch.no_grad():
        output = model(torch.rand(4, 3, 16, 16))
    detection = torch.sigmoid(output.detection_logits)
    torch.testing.assert_close(output.heatmap, detection * (1 - torch.sigmoid(torch.tensor(-6.0))))


SEED_FLAGS = ["--encoder", "vessel_filters", "--encoder-stride", "1", "--encoder-channels", "8", "8",
              "--context-depth", "1", "--search-region", "filling_defects", "--seed-instances", "20",
              "--seed-components", "2", "--seed-reference", "100"]


@pytest.fixture(scope="module")
def seed_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("seeded")
    return make_weak_label_folder(root / "train", 4, 0), make_weak_label_folder(root / "val", 4, 10)


def _train_seeded(out, data, extra):
    train_dir, val_dir = data
    return cli_main(["train", "--train", str(train_dir), "--val", str(val_dir), "--out", str(out), "--seed", "3",
                     *TINY_FLAGS, *SEED_FLAGS, *extra])


def test_seeded_training_runs_seed_then_weak_epochs_and_resumes_exactly(tmp_path, seed_data):
    assert _train_seeded(tmp_path / "a", seed_data, ["--seed-epochs", "2", "--epochs", "1"]) == 0
    history = json.loads((tmp_path / "a" / "metrics.json").read_text())["history"]
    assert [(h["epoch"], h["stage"]) for h in history] == [(1, "seed"), (2, "seed"), (3, "weak")]
    assert all(np.isfinite(h["train_loss"]) and 0.0 <= h["val_auroc"] <= 1.0 for h in history)
    last = load_checkpoint(tmp_path / "a" / "last.pt", with_training_state=True)
    assert last.config.preprocess.search_region == "filling_defects"
    assert last.training["train_config"]["seed_instances"] == 20
    # stopped after the first seed epoch, then resumed: the same weights as the uninterrupted run
    assert _train_seeded(tmp_path / "b", seed_data, ["--seed-epochs", "2", "--epochs", "0"]) == 0
    interrupted = tmp_path / "c"
    assert _train_seeded(interrupted, seed_data, ["--seed-epochs", "2", "--epochs", "0"]) == 0
    first = load_checkpoint(tmp_path / "b" / "last.pt").model_version
    assert _train_seeded(tmp_path / "a2", seed_data, ["--seed-epochs", "2", "--epochs", "1",
                                                      "--resume", str(tmp_path / "b" / "last.pt")]) == 0
    assert load_checkpoint(tmp_path / "a2" / "last.pt").model_version == last.model_version
    assert load_checkpoint(interrupted / "last.pt").model_version == first
    # the weak epoch after seeding keeps the encoder's BatchNorm statistics (they describe the instances)
    seeded_bn = load_checkpoint(tmp_path / "b" / "last.pt").model.encoder.mix[1]
    after_weak_bn = load_checkpoint(tmp_path / "a" / "last.pt").model.encoder.mix[1]
    torch.testing.assert_close(after_weak_bn.running_mean, seeded_bn.running_mean)
    torch.testing.assert_close(after_weak_bn.running_var, seeded_bn.running_var)


def test_weak_learning_rate_applies_to_the_weak_epochs_only(tmp_path, seed_data):
    assert _train_seeded(tmp_path / "w", seed_data, ["--seed-epochs", "1", "--epochs", "1", "--lr", "0.003",
                                                     "--weak-lr", "0.0002"]) == 0
    history = json.loads((tmp_path / "w" / "metrics.json").read_text())["history"]
    assert [(h["stage"], h["learning_rate"]) for h in history] == [("seed", 0.003), ("weak", 0.0002)]
    stored = load_checkpoint(tmp_path / "w" / "last.pt", with_training_state=True)
    assert stored.training["train_config"]["weak_learning_rate"] == 0.0002


def test_zero_weak_epochs_need_seeding(tmp_path, seed_data, capsys):
    train_dir, val_dir = seed_data
    code = cli_main(["train", "--train", str(train_dir), "--out", str(tmp_path / "x"), "--epochs", "0", *TINY_FLAGS])
    assert code != 0
    assert "epochs must be >= 1" in capsys.readouterr().err
