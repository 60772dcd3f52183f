"""Synthetic CTPA phantom: determinism, labels, HU ranges, geometry on disk, confounders, CLI."""

from __future__ import annotations

import argparse
import csv
import functools

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from insight.errors import InputError
from insight.phantom import LABEL_COLUMNS, PhantomCase, PhantomConfig, generate_case, render_preview, write_dataset

SMALL = dict(shape_xyz=(64, 64, 32), spacing_xyz=(5.0, 5.0, 8.0))
#: No noise, blur or streaks and no flow artifacts: the painted HU can be checked exactly.
CLEAN = dict(SMALL, add_noise=False, add_blur=False, p_streaks=0.0, p_flow_artifact=0.0)


@functools.lru_cache(maxsize=None)
def _case(seed: int, index: int, **kwargs) -> PhantomCase:
    return generate_case(seed, index, PhantomConfig(**kwargs))


def case(seed: int, index: int, **kwargs) -> PhantomCase:
    return _case(seed, index, **{k: v for k, v in sorted(kwargs.items())})


# ---------------------------------------------------------------------- determinism and labels
def test_same_seed_gives_identical_arrays():
    a = generate_case(7, 3, PhantomConfig(**SMALL))
    b = generate_case(7, 3, PhantomConfig(**SMALL))
    for name in ("image_hu", "clot_mask", "artery_mask", "lung_mask"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert a.metadata["emboli"] == b.metadata["emboli"]
    assert a.name == "phantom_s7_0003"


def test_other_seed_or_index_differs():
    a = case(7, 3, **SMALL)
    assert not np.array_equal(a.image_hu, case(8, 3, **SMALL).image_hu)
    assert not np.array_equal(a.image_hu, case(7, 4, **SMALL).image_hu)


def test_dtypes_and_shapes():
    c = case(1, 0, **SMALL)
    assert c.image_hu.dtype == np.int16 and c.image_hu.shape == (32, 64, 64)  # [z, y, x]
    for m in (c.clot_mask, c.artery_mask, c.lung_mask):
        assert m.dtype == np.uint8 and m.shape == c.image_hu.shape and set(np.unique(m)) <= {0, 1}
    assert c.spacing_xyz == (5.0, 5.0, 8.0)
    assert c.direction == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    # centred on the body in x and y
    assert c.origin_xyz[0] == pytest.approx(-(64 - 1) * 5.0 / 2)
    assert c.origin_xyz[1] == pytest.approx(-(64 - 1) * 5.0 / 2)


@pytest.mark.parametrize("index", range(6))
def test_label_consistency(index):
    c = case(11, index, **SMALL)
    assert c.pe == int(c.clot_mask.any())
    assert c.metadata["pe"] == c.pe
    assert (c.metadata["n_emboli"] > 0) == bool(c.pe)
    assert len(c.metadata["emboli"]) == c.metadata["n_emboli"]
    # every clot voxel lies in the artery lumen
    assert not np.any((c.clot_mask > 0) & (c.artery_mask == 0))
    total = sum(e["n_voxels"] for e in c.metadata["emboli"])
    assert total == int(c.clot_mask.sum())


def test_positive_and_negative_fractions():
    pos = [case(5, i, **dict(SMALL, pe_fraction=1.0)) for i in range(3)]
    neg = [case(5, i, **dict(SMALL, pe_fraction=0.0)) for i in range(3)]
    assert all(c.pe == 1 and 1 <= c.metadata["n_emboli"] <= 6 for c in pos)
    assert all(c.pe == 0 and not c.clot_mask.any() and c.metadata["emboli"] == [] for c in neg)


def test_drawn_spacing_varies_within_ranges():
    spacings = [generate_case(3, i, PhantomConfig(shape_xyz=(32, 32, 16))).spacing_xyz for i in range(4)]
    for sx, sy, sz in spacings:
        assert 2.2 <= sx <= 2.8 and sy == sx and 2.5 <= sz <= 3.5
    assert len({s[0] for s in spacings}) > 1


# ---------------------------------------------------------------------- HU ranges (noise-free)
def test_clot_hu_before_noise_is_20_to_90():
    c = case(2, 1, **dict(CLEAN, pe_fraction=1.0))
    vals = c.image_hu[c.clot_mask > 0]
    assert vals.size > 0
    assert vals.min() >= 20 and vals.max() <= 90
    for e in c.metadata["emboli"]:
        assert e["generation"] in (1, 2, 3) and e["kind"] in ("occlusive", "eccentric", "central")
        assert e["volume_mm3"] > 0 and len(e["centroid_mm"]) == 3


def test_arteries_enhanced_250_to_450_noise_free():
    c = case(2, 2, **dict(CLEAN, pe_fraction=0.0, shape_xyz=(96, 96, 48), spacing_xyz=(3.0, 3.0, 5.0)))
    core = ndimage.binary_erosion(c.artery_mask > 0, ndimage.generate_binary_structure(3, 1))
    vals = c.image_hu[core]
    assert vals.size > 200
    assert 250 <= np.median(vals) <= 450
    assert abs(np.median(vals) - c.metadata["contrast_hu"]) < 25
    assert np.mean((vals >= 250) & (vals <= 450)) > 0.8
    assert vals.max() <= 450


def test_lungs_around_minus_850():
    c = case(2, 2, **dict(CLEAN, pe_fraction=0.0))
    lung = c.image_hu[(c.lung_mask > 0) & (c.artery_mask == 0)]
    assert lung.size > 1000
    assert -900 <= np.median(lung) <= -780
    assert c.lung_mask.mean() > 0.05


def test_noise_level_follows_metadata():
    c = case(4, 0, **SMALL)
    outside = c.image_hu[:, :3, :].astype(float)  # air in front of the body: -1000 + noise
    sd = c.metadata["noise_sd_hu"]
    assert 8.0 <= sd <= 35.0
    assert np.median(outside) == pytest.approx(-1000, abs=5)
    assert 0.5 * sd < outside.std() < 1.5 * sd


def test_same_patient_at_two_resolutions():
    coarse = generate_case(9, 0, PhantomConfig(shape_xyz=(48, 48, 24), spacing_xyz=(6.0, 6.0, 10.0)))
    fine = generate_case(9, 0, PhantomConfig(shape_xyz=(96, 96, 48), spacing_xyz=(3.0, 3.0, 5.0)))
    vol = lambda c, m: m.sum() * np.prod(c.spacing_xyz)  # noqa: E731
    assert vol(coarse, coarse.lung_mask) == pytest.approx(vol(fine, fine.lung_mask), rel=0.1)
    assert coarse.pe == fine.pe and coarse.metadata["contrast_hu"] == fine.metadata["contrast_hu"]


# ---------------------------------------------------------------------- confounders
def test_confounders_occur_in_negatives_too():
    seen = {"flow": 0, "streaks": 0, "nodes": 0}
    for i in range(8):
        c = generate_case(21, i, PhantomConfig(shape_xyz=(40, 40, 24), spacing_xyz=(8.0, 8.0, 10.0), pe_fraction=0.0))
        assert c.pe == 0
        conf = c.metadata["confounders"]
        seen["flow"] += bool(conf["flow_artifacts"])
        seen["streaks"] += bool(conf["streaks"])
        seen["nodes"] += conf["lymph_nodes"] > 0
    assert all(v > 0 for v in seen.values()), seen


def test_flow_artifact_lowers_artery_hu_smoothly():
    kw = dict(CLEAN, pe_fraction=0.0, p_flow_artifact=1.0, shape_xyz=(96, 96, 48), spacing_xyz=(3.0, 3.0, 5.0))
    with_flow = case(2, 2, **kw)
    without = case(2, 2, **dict(kw, p_flow_artifact=0.0))
    assert with_flow.metadata["confounders"]["flow_artifacts"]
    art = with_flow.artery_mask > 0
    np.testing.assert_array_equal(art, without.artery_mask > 0)
    diff = without.image_hu[art].astype(int) - with_flow.image_hu[art].astype(int)
    assert diff.min() >= 0 and diff.max() > 50  # only lowered, clearly somewhere
    lowest = min(f["min_hu"] for f in with_flow.metadata["confounders"]["flow_artifacts"])
    assert 120 <= lowest <= 220


def test_bad_config_raises():
    bad = [dict(shape_xyz=(0, 64, 64)), dict(shape_xyz=(64, 64)), dict(shape_xyz=(64.5, 64, 64)),
           dict(spacing_xyz=(1.0, -1.0, 1.0)), dict(spacing_xyz=(1.0, float("nan"), 1.0)), dict(pe_fraction=1.5),
           dict(max_emboli=0), dict(p_streaks=-0.1), dict(p_lymph_nodes=2), dict(add_noise="yes"),
           dict(max_generation=12)]
    for kwargs in bad:
        with pytest.raises(ValueError):
            PhantomConfig(**kwargs)
    with pytest.raises(ValueError):
        generate_case(-1, 0, PhantomConfig(**SMALL))


# ---------------------------------------------------------------------- writing
@pytest.fixture(scope="module")
def written(tmp_path_factory):
    out = tmp_path_factory.mktemp("phantoms")
    metas = write_dataset(out, 3, 17, PhantomConfig(shape_xyz=(48, 40, 24)), progress=False)
    return out, metas


def test_files_and_geometry_on_disk(written):
    out, metas = written
    for meta in metas:
        name = meta["name"]
        img = sitk.ReadImage(str(out / f"{name}.nii.gz"))
        assert img.GetPixelID() == sitk.sitkInt16
        assert img.GetSize() == (48, 40, 24)
        np.testing.assert_allclose(img.GetSpacing(), meta["spacing_xyz"], atol=1e-4)
        np.testing.assert_allclose(img.GetOrigin(), meta["origin_xyz"], atol=1e-3)
        np.testing.assert_allclose(img.GetDirection(), np.eye(3).ravel(), atol=1e-6)
        case_ = generate_case(17, meta["index"], PhantomConfig(shape_xyz=(48, 40, 24)))
        np.testing.assert_array_equal(sitk.GetArrayFromImage(img), case_.image_hu)
        for part, arr in (("clot", case_.clot_mask), ("artery", case_.artery_mask), ("lung", case_.lung_mask)):
            m = sitk.ReadImage(str(out / "truth" / f"{name}_{part}.nii.gz"))
            assert m.GetPixelID() == sitk.sitkUInt8
            np.testing.assert_allclose(m.GetOrigin(), img.GetOrigin(), atol=1e-4)
            np.testing.assert_array_equal(sitk.GetArrayFromImage(m), arr)
        assert (out / "truth" / f"{name}.json").is_file()


def test_labels_csv(written):
    out, metas = written
    with open(out / "labels.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert tuple(rows[0].keys()) == LABEL_COLUMNS
    assert list(LABEL_COLUMNS[:13]) == ["image", "pe", "n_emboli", "contrast_hu", "noise_sd_hu", "spacing_x",
                                        "spacing_y", "spacing_z", "size_x", "size_y", "size_z", "seed", "index"]
    assert [r["image"] for r in rows] == [m["name"] for m in metas]
    for r, m in zip(rows, metas):
        assert int(r["pe"]) == m["pe"] and int(r["n_emboli"]) == m["n_emboli"]
        assert int(r["size_x"]) == 48 and int(r["seed"]) == 17 and int(r["index"]) == m["index"]


def test_no_temporary_files_left(written):
    out, _ = written
    leftovers = [p for p in out.rglob("*") if p.name.startswith(".") or ".tmp" in p.name]
    assert leftovers == []


def test_preview_from_case_and_from_paths(written, tmp_path):
    out, metas = written
    pos = [m for m in metas if m["pe"]] or metas
    name = pos[0]["name"]
    c = generate_case(17, pos[0]["index"], PhantomConfig(shape_xyz=(48, 40, 24)))
    for target, arg in ((tmp_path / "a.png", c),
                        (tmp_path / "b.png", (out / f"{name}.nii.gz", out / "truth" / f"{name}_clot.nii.gz")),
                        (tmp_path / "c.png", out / f"{name}.nii.gz")):
        render_preview(arg, target)
        assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


# ---------------------------------------------------------------------- CLI
def _cli(argv):
    from insight.cli import phantom_cmd

    parser = argparse.ArgumentParser(prog="insight")
    sub = parser.add_subparsers(dest="command", required=True)
    phantom_cmd.register(sub)
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_writes_expected_files(tmp_path):
    out = tmp_path / "ds"
    rc = _cli(["phantom", "--n", "2", "--seed", "4", "--out", str(out), "--shape", "40", "40", "20",
               "--spacing", "6", "6", "9", "--pe-fraction", "1.0", "--preview", "--no-progress"])
    assert rc == 0
    names = [f"phantom_s4_{i:04d}" for i in range(2)]
    for name in names:
        assert (out / f"{name}.nii.gz").is_file()
        for part in ("clot", "artery", "lung"):
            assert (out / "truth" / f"{name}_{part}.nii.gz").is_file()
        assert (out / "preview" / f"{name}.png").is_file()
    img = sitk.ReadImage(str(out / f"{names[0]}.nii.gz"))
    assert img.GetSize() == (40, 40, 20) and img.GetSpacing() == pytest.approx((6.0, 6.0, 9.0))
    rows = list(csv.DictReader(open(out / "labels.csv", newline="")))
    assert [r["image"] for r in rows] == names and all(r["pe"] == "1" for r in rows)


@pytest.mark.parametrize("argv", [
    ["--n", "0"], ["--n", "2", "--pe-fraction", "2"], ["--n", "1", "--shape", "0", "10", "10"],
    ["--n", "1", "--spacing", "1", "-1", "1"], ["--n", "1", "--seed", "-3"],
])
def test_cli_rejects_bad_input(tmp_path, argv):
    with pytest.raises(InputError):
        _cli(["phantom", "--out", str(tmp_path / "x")] + argv)
