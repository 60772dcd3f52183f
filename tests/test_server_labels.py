"""Weak labels, versioned labels with provenance and the fixed error paths, against a real MONAI Label server.

One server (shipped demo model) serves a temporary copy of six small phantoms whose ``labels.csv``
also holds an ``uncertain`` scan, an unknown image and a bad row.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import requests
import SimpleITK as sitk

from insight.io import write_image
from insight.phantom import PhantomConfig, write_dataset
from tests.conftest import MonaiLabelServer

TIMEOUT_S = 60
N_CASES = 6
SEED = 7  # six 64x64x32 phantoms with three PE-positive scans


@pytest.fixture(scope="module")
def studies(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("label_phantoms") / "studies"
    metas = write_dataset(folder, n=N_CASES, seed=SEED, config=PhantomConfig(shape_xyz=(64, 64, 32)), progress=False)
    rows = [f"{m['name']},{m['pe']}" for m in metas[:-1]]
    rows += [f"{metas[-1]['name']},uncertain", "no_such_scan,1", f"{metas[0]['name']},maybe"]
    (folder / "labels.csv").write_text("image,pe\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def truth(studies: Path) -> dict[str, int]:
    """Image id -> the phantom's true scan label."""
    return {json.loads(p.read_text())["name"]: int(json.loads(p.read_text())["pe"])
            for p in sorted((studies / "truth").glob("*.json"))}


@pytest.fixture(scope="module")
def server(monailabel_server_factory, studies: Path, demo_model_path: Path) -> MonaiLabelServer:
    return monailabel_server_factory(studies, demo_model_path, conf={"auto_scoring": "false"})  # no scoring needed


def put_weak_label(server: MonaiLabelServer, image: str, body) -> requests.Response:
    data = body if isinstance(body, (str, bytes)) else json.dumps(body)
    return requests.put(server.url(f"/insight/weak-labels/{image}"), data=data,
                        headers={"content-type": "application/json"}, timeout=TIMEOUT_S)


def put_label(server: MonaiLabelServer, image: str, path: Path, params=None, tag: str = "final",
              filename: str | None = None) -> requests.Response:
    files = {"label": (filename or path.name, path.read_bytes(), "application/octet-stream")}
    data = {"params": params if isinstance(params, str) else json.dumps(params or {})}
    return requests.put(server.url("/datastore/label"), params={"image": image, "tag": tag}, files=files, data=data,
                        timeout=TIMEOUT_S)


def detail(response: requests.Response) -> str:
    value = response.json()["detail"]
    assert isinstance(value, str) and "Traceback" not in value
    return value


def test_labels_csv_is_imported_at_start_and_problems_are_reported(server, truth):
    answer = requests.get(server.url("/insight/weak-labels"), timeout=TIMEOUT_S).json()
    names = sorted(truth)
    for name in names[:-1]:
        record = answer["labels"][name]
        assert record["pe"] == truth[name] and record["source"] == "labels.csv", name
    assert answer["labels"][names[-1]]["pe"] == "uncertain"
    assert answer["counts"]["uncertain"] == 1 and answer["counts"]["none"] == 0
    report = server.info()["campaign"]["weak_label_import"]
    assert report["imported"] == N_CASES
    assert report["unknown_images"] == ["no_such_scan"]
    assert len(report["problems"]) == 1 and "maybe" in report["problems"][0]


def test_set_get_and_remove_a_weak_label(server, truth):
    image = sorted(truth)[1]
    flipped = 1 - truth[image]
    response = put_weak_label(server, image, {"pe": flipped, "note": "filling defect, segmental", "annotator": "dr a"})
    assert response.status_code == 200, response.text
    assert response.json()["pe"] == flipped and response.json()["source"] == "rest"
    got = requests.get(server.url(f"/insight/weak-labels/{image}"), timeout=TIMEOUT_S).json()
    assert got == {"image": image, **{k: v for k, v in response.json().items() if k != "image"}}
    assert got["set_by"] == "dr a" and got["note"] == "filling defect, segmental"
    info = requests.get(server.url("/datastore/image/info"), params={"image": image}, timeout=TIMEOUT_S).json()
    assert info["weak_label"]["pe"] == flipped

    assert put_weak_label(server, image, {"pe": "uncertain"}).json()["pe"] == "uncertain"
    removed = requests.delete(server.url(f"/insight/weak-labels/{image}"), timeout=TIMEOUT_S).json()
    assert removed["removed"] is True
    assert requests.get(server.url(f"/insight/weak-labels/{image}"), timeout=TIMEOUT_S).json()["pe"] is None
    assert put_weak_label(server, image, {"pe": str(truth[image])}).json()["pe"] == truth[image]


@pytest.mark.parametrize("body", [{"pe": 2}, {"pe": "yes"}, {"pe": True}, {"pe": None}, {"pe": 0.5}, {"pe": -1},
                                  {"note": "no pe key"}, {"pe": 1, "note": 5}, "[1]", "not json"])
def test_bad_weak_label_is_422_and_changes_nothing(server, truth, body):
    image = sorted(truth)[2]
    response = put_weak_label(server, image, body)
    assert response.status_code == 422, response.text
    assert any(word in detail(response) for word in ("pe must be", "needs 'pe'", "note", "JSON"))
    assert requests.get(server.url(f"/insight/weak-labels/{image}"), timeout=TIMEOUT_S).json()["pe"] == truth[image]


def test_weak_label_for_unknown_image_is_404(server):
    for response in (put_weak_label(server, "no_such_scan", {"pe": 1}),
                     requests.get(server.url("/insight/weak-labels/no_such_scan"), timeout=TIMEOUT_S)):
        assert response.status_code == 404 and "no_such_scan" in detail(response)


def test_saving_a_label_twice_keeps_both_versions_with_provenance(server, studies, truth):
    image = sorted(truth)[0]
    first, second = studies / "truth" / f"{image}_clot.nii.gz", studies / "truth" / f"{image}_lung.nii.gz"
    one = put_label(server, image, first, {"annotator": "dr a", "model_version": "seg-unet-0123456789",
                                           "model": "pe_segmentation", "method": "edited",
                                           "uncertainty": "distal branch unsure", "client_id": "client-a"})
    assert one.status_code == 200, one.text
    two = put_label(server, image, second, {"annotator": "dr b"})
    assert two.status_code == 200, two.text
    assert (one.json()["version"], two.json()["version"]) == (1, 2)

    versions = requests.get(server.url(f"/insight/labels/{image}/versions"), timeout=TIMEOUT_S).json()["versions"]
    assert [v["version"] for v in versions] == [1, 2] and [v["current"] for v in versions] == [False, True]
    p1, p2 = versions[0]["provenance"], versions[1]["provenance"]
    assert (p1["saved_by"], p1["method"], p1["model_version"], p1["model"], p1["uncertainty"]) == (
        "dr a", "edited", "seg-unet-0123456789", "pe_segmentation", "distal branch unsure")
    assert (p2["saved_by"], p2["method"], p2["model_version"]) == ("dr b", "manual", None)
    assert p1["saved_at"].endswith("Z") and p2["saved_at"] >= p1["saved_at"]

    old = requests.get(server.url(f"/insight/labels/{image}/versions/1"), timeout=TIMEOUT_S)
    assert old.status_code == 200 and old.content == first.read_bytes()
    current = requests.get(server.url("/datastore/label"), params={"label": image, "tag": "final"}, timeout=TIMEOUT_S)
    assert current.status_code == 200 and current.content == second.read_bytes()
    info = requests.get(server.url("/datastore/label/info"), params={"label": image, "tag": "final"},
                        timeout=TIMEOUT_S).json()
    assert info["version"] == 2 and info["provenance"]["saved_by"] == "dr b"
    assert (server.studies_dir / versions[0]["file"]).is_file()
    missing = requests.get(server.url(f"/insight/labels/{image}/versions/3"), timeout=TIMEOUT_S)
    assert missing.status_code == 404


def test_removing_a_label_archives_it(server, studies, truth):
    image = sorted(truth)[5]
    mask = studies / "truth" / f"{image}_clot.nii.gz"
    assert put_label(server, image, mask, {"annotator": "dr c"}).status_code == 200
    removed = requests.delete(server.url("/datastore/label"), params={"id": image, "tag": "final"}, timeout=TIMEOUT_S)
    assert removed.status_code == 200, removed.text
    assert requests.get(server.url("/datastore/label"), params={"label": image, "tag": "final"},
                        timeout=TIMEOUT_S).status_code == 404
    versions = requests.get(server.url(f"/insight/labels/{image}/versions"), timeout=TIMEOUT_S).json()["versions"]
    assert [(v["version"], v["current"]) for v in versions] == [(1, False)]
    kept = requests.get(server.url(f"/insight/labels/{image}/versions/1"), timeout=TIMEOUT_S)
    assert kept.status_code == 200 and kept.content == mask.read_bytes()


@pytest.mark.parametrize("params, words", [
    ({"method": "guess"}, ["method must be one of"]),
    ({"method": "pseudo"}, ["needs model_version"]),
    ({"annotator": 5}, ["annotator", "string"]),
    ("{not json", ["params is not valid JSON"]),
    ("[1, 2]", ["params must be a JSON object"]),
])
def test_bad_provenance_is_422_and_saves_nothing(server, studies, truth, params, words):
    image = sorted(truth)[3]
    response = put_label(server, image, studies / "truth" / f"{image}_clot.nii.gz", params)
    assert response.status_code == 422, response.text
    for word in words:
        assert word in detail(response)
    assert requests.get(server.url(f"/insight/labels/{image}/versions"), timeout=TIMEOUT_S).json()["versions"] == []


def test_bad_label_uploads_are_4xx_and_leave_no_temp_file(server, studies, truth, tmp_path):
    image = sorted(truth)[4]
    mask = studies / "truth" / f"{image}_clot.nii.gz"
    unknown = put_label(server, "no_such_scan", mask)
    assert unknown.status_code == 404 and "no_such_scan" in detail(unknown)
    traversal = put_label(server, image, mask, tag="../escape")
    assert traversal.status_code == 422 and "plain name" in detail(traversal)
    garbage = tmp_path / "garbage.nii.gz"
    garbage.write_bytes(b"not an image at all" * 50)
    unreadable = put_label(server, image, garbage)
    assert unreadable.status_code == 422 and "garbage.nii.gz" in detail(unreadable)
    assert "label_upload_" not in detail(unreadable)  # no server path in the message
    wrong_grid = write_image(sitk.GetImageFromArray(np.zeros((8, 16, 16), np.uint8)), tmp_path / "small.nii.gz")
    small = put_label(server, image, wrong_grid)
    assert small.status_code == 422 and "grid" in detail(small)
    not_image = put_label(server, image, mask, filename="mask.txt")
    assert not_image.status_code == 422 and "unsupported file type" in detail(not_image)
    assert not (server.studies_dir / "labels" / "final" / f"{image}.nii.gz").exists()
    assert not list(server.studies_dir.parent.rglob("*escape*"))
    leftovers = server.leftover_temp_files()
    assert not leftovers, f"files left in the server's TMPDIR: {[p.name for p in leftovers]}"


def test_train_on_a_model_without_trainer_is_404_and_starts_nothing(server):
    response = requests.post(server.url("/train/no_such_model"), json={}, timeout=TIMEOUT_S)
    assert response.status_code == 404
    assert "no_such_model" in detail(response) and "pe_insight" in detail(response)
    bad = requests.post(server.url("/train/pe_insight"), json={"epochs": 0}, timeout=TIMEOUT_S)
    assert bad.status_code == 422 and "epochs" in detail(bad)
    status = requests.get(server.url("/train/"), timeout=TIMEOUT_S)
    assert status.status_code == 404, f"a training task was started: {status.text[:300]}"


def test_train_without_both_classes_is_422(server, truth):
    for image in truth:
        assert put_weak_label(server, image, {"pe": 1}).status_code == 200
    response = requests.post(server.url("/train/pe_insight"), json={"epochs": 1}, timeout=TIMEOUT_S)
    assert response.status_code == 422, response.text
    assert "weak label 1 and scans with weak label 0" in detail(response)
    assert requests.get(server.url("/train/"), timeout=TIMEOUT_S).status_code == 404
    for image, value in truth.items():
        assert put_weak_label(server, image, {"pe": value}).status_code == 200
