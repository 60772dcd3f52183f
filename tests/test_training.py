"""Weak-label training: outputs, reproducibility, resume, and clear errors (tiny model, tiny data)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from insight.cli import main as cli_main
from insight.errors import InputError
from insight.io import write_image
from insight.models.checkpoint import load_checkpoint
from insight.training import read_label_table
from tests.helpers import make_volume

TINY_FLAGS = ["--encoder-channels", "8", "8", "8", "--reduce-channels", "8", "--head-widths", "8", "8", "8",
              "--device", "cpu", "--no-progress"]


def make_weak_label_folder(folder: Path, n: int = 4, seed: int = 0) -> Path:
    """n small volumes, half with a dark 'clot' inside the bright tube, and labels.csv."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        image = make_volume(size_xyz=(48, 40, 10), spacing=(2.5, 2.5, 3.0), seed=seed + i)
        label = i % 2
        if label:
            arr = sitk.GetArrayFromImage(image)
            arr[3:6, 19:21, 23:25] = 40
            clot = sitk.GetImageFromArray(arr)
            clot.CopyInformation(image)
            image = clot
        write_image(image, folder / f"case_{i}.nii.gz")
        rows.append({"image": f"case_{i}", "pe": label})
    with (folder / "labels.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["image", "pe"])
        writer.writeheader()
        writer.writerows(rows)
    return folder


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("weak")
    return make_weak_label_folder(root / "train", 4, 0), make_weak_label_folder(root / "val", 4, 10)


def train(out: Path, data, epochs: int, extra: list[str] | None = None) -> int:
    train_dir, val_dir = data
    return cli_main(["train", "--train", str(train_dir), "--val", str(val_dir), "--out", str(out),
                     "--epochs", str(epochs), "--seed", "3", *TINY_FLAGS, *(extra or [])])


def test_training_writes_checkpoints_and_per_epoch_validation(tmp_path, data):
    assert train(tmp_path / "run", data, epochs=2) == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert [h["epoch"] for h in metrics["history"]] == [1, 2]
    for record in metrics["history"]:
        assert 0.0 <= record["val_auroc"] <= 1.0 and np.isfinite(record["train_loss"])
    best = load_checkpoint(tmp_path / "run" / "best.pt")
    assert best.model_version.startswith("insight-small_cnn-")
    assert best.config.model.encoder_channels == (8, 8, 8)
    last = load_checkpoint(tmp_path / "run" / "last.pt", with_training_state=True)
    assert last.training["epoch"] == 1 and "optimizer" in last.training
    assert last.model_version == metrics["model_version"]


def test_training_is_reproducible_and_resume_continues_exactly(tmp_path, data):
    assert train(tmp_path / "a", data, epochs=2) == 0
    assert train(tmp_path / "b", data, epochs=2) == 0
    version_a = load_checkpoint(tmp_path / "a" / "last.pt").model_version
    assert version_a == load_checkpoint(tmp_path / "b" / "last.pt").model_version
    assert train(tmp_path / "c", data, epochs=1) == 0
    assert train(tmp_path / "c", data, 2, ["--resume", str(tmp_path / "c" / "last.pt")]) == 0
    resumed = load_checkpoint(tmp_path / "c" / "last.pt", with_training_state=True)
    assert resumed.model_version == version_a
    assert [h["epoch"] for h in resumed.training["history"]] == [1, 2]
    other_seed = train(tmp_path / "d", data, 2, ["--seed", "4"])
    assert other_seed == 0 and load_checkpoint(tmp_path / "d" / "last.pt").model_version != version_a


def test_training_needs_both_classes(tmp_path, data, capsys):
    folder = make_weak_label_folder(tmp_path / "one_class", 2)
    (folder / "labels.csv").write_text("image,pe\ncase_0,0\ncase_1,0\n")
    code = cli_main(["train", "--train", str(folder), "--out", str(tmp_path / "o"), "--epochs", "1", *TINY_FLAGS])
    assert code == 2 and "both PE and no-PE" in capsys.readouterr().err


@pytest.mark.parametrize(
    "content, message",
    [
        ("name,label\ncase_0,1\n", "needs columns 'image' and 'pe'"),
        ("image,pe\ncase_0,yes\n", "pe must be 0 or 1"),
        ("image,pe\nmissing_case,1\n", "no image named 'missing_case'"),
        ("image,pe\n", "lists no images"),
    ],
)
def test_bad_label_tables_are_reported_clearly(tmp_path, content, message):
    folder = make_weak_label_folder(tmp_path / "bad", 1)
    (folder / "labels.csv").write_text(content)
    with pytest.raises(InputError, match=message):
        read_label_table(folder)


def test_training_reads_no_masks(tmp_path, data, monkeypatch):
    """Only the listed images are opened: a truth/ folder beside them is never read."""
    train_dir, _ = data
    (train_dir / "truth").mkdir(exist_ok=True)
    (train_dir / "truth" / "case_1_clot.nii.gz").write_bytes(b"not an image")
    opened: list[str] = []
    import insight.training.dataset as dataset

    real_read = dataset.read_image
    monkeypatch.setattr(dataset, "read_image", lambda p: opened.append(str(p)) or real_read(p))
    assert cli_main(["train", "--train", str(train_dir), "--out", str(tmp_path / "r"), "--epochs", "1", *TINY_FLAGS]) == 0
    assert opened and all("truth" not in p for p in opened)


def test_an_epoch_that_gives_every_scan_the_same_answer_is_flagged(tmp_path, data):
    from insight.training.trainer import SAME_ANSWER_STD, same_answer_warning

    assert same_answer_warning({"val_p_std": SAME_ANSWER_STD / 2}).startswith("validation p(PE) is the same")
    saturated = same_answer_warning({"val_p_std": SAME_ANSWER_STD / 2, "val_mean_p": 0.95})
    assert "saturated" in saturated and "insight calibrate" in saturated
    assert same_answer_warning({"val_p_std": 0.2}) is None and same_answer_warning({"train_loss": 0.7}) is None
    assert train(tmp_path / "run", data, epochs=1) == 0
    (record,) = json.loads((tmp_path / "run" / "metrics.json").read_text())["history"]
    assert record["val_p_std"] >= 0.0
    assert ("warning" in record) == (record["val_p_std"] < SAME_ANSWER_STD)
