"""Case embeddings, the persisted faiss case index, ``insight index|similar`` and ``GET /insight/similar``.

Real files throughout: small phantoms written with ``insight.phantom``, the shipped demo model (weak at
PE, but its encoder gives usable embeddings), and the real MONAI Label server for the route.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import requests
import torch

from insight.cli import main as insight_main
from insight.embeddings import CaseEmbedder, pooled_embedding
from insight.errors import InputError
from insight.io import read_image, write_image
from insight.retrieval import CaseIndex, add_to_index, read_label_table
from tests.conftest import APP_DIR
from tests.helpers import save_tiny_checkpoint
from tests.retrieval_cases import (DEMO_MODEL, SERVER_CONF, demo_embedder, embedding_of, server_studies,
                                   small_phantoms, with_noise)

sys.path.insert(0, str(APP_DIR))  # the app's own package, imported as ``lib`` (MONAI Label's layout)

import lib.scoring.embedding as app_embedding  # noqa: E402


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return small_phantoms(tmp_path_factory.getbasetemp())


def test_embedding_is_deterministic_unit_length_and_of_the_documented_shape(phantoms):
    embedder = demo_embedder()
    first = embedder.embed_file(phantoms[0]).vector
    second = CaseEmbedder.from_checkpoint(DEMO_MODEL, "cpu").embed_file(phantoms[0])
    assert first.dtype == np.float32 and first.shape == (64,) == (2 * embedder.model.encoder.out_channels,)
    assert embedder.dims == 64
    np.testing.assert_array_equal(first, second.vector)  # same volume, same checkpoint: same bits
    assert abs(float(np.linalg.norm(first)) - 1.0) < 1e-5
    assert second.model_version == embedder.model_version and second.name == phantoms[0].name[:-7]
    assert not np.allclose(first, embedding_of(str(phantoms[1])))  # another study, another vector
    # the server's diversity score uses this very implementation
    assert app_embedding.pooled_embedding is pooled_embedding
    features = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).reshape(2, 3, 2, 2)
    pooled = pooled_embedding(features)
    expected = np.concatenate([features.permute(1, 0, 2, 3).reshape(3, -1).mean(1).numpy(),
                               features.permute(1, 0, 2, 3).reshape(3, -1).amax(1).numpy()])
    np.testing.assert_allclose(pooled, expected / np.linalg.norm(expected), rtol=1e-6)
    with pytest.raises(ValueError, match=r"\[N, C, h, w\]"):
        pooled_embedding(torch.zeros(3, 4))


def test_index_cli_builds_persists_updates_and_finds_the_study_itself_then_its_near_duplicate(phantoms, tmp_path,
                                                                                               capsys):
    studies = tmp_path / "studies"
    studies.mkdir()
    for path in phantoms[:4]:
        shutil.copy2(path, studies / path.name)
    shutil.copy2(phantoms[0].parent / "labels.csv", studies / "labels.csv")  # rows of absent images are unused
    index_dir = tmp_path / "index"
    assert insight_main(["index", "build", str(studies), "--index", str(index_dir), "--device", "cpu"]) == 0
    built = json.loads(capsys.readouterr().out)
    ids = [p.name[:-7] for p in phantoms[:4]]
    assert sorted(built["added"]) == ids and built["failed"] == {}

    index = CaseIndex.open(index_dir)  # reloaded from disk
    labels = read_label_table(studies / "labels.csv")
    assert index.case_ids == ids and index.model_version == demo_embedder().model_version
    assert [index.case(i).label for i in ids] == [labels[i] for i in ids]
    np.testing.assert_allclose(index.vector(ids[2]), embedding_of(str(phantoms[2])), atol=1e-6)
    first_vectors = list(index_dir.glob("vectors-*.faiss"))
    assert len(first_vectors) == 1

    query = phantoms[2]
    answer_path = tmp_path / "similar.json"
    assert insight_main(["similar", str(query), "--index", str(index_dir), "-k", "3", "--json", str(answer_path),
                         "--device", "cpu"]) == 0
    answer = json.loads(answer_path.read_text())
    assert answer["similar"][0]["case_id"] == ids[2] and answer["similar"][0]["score"] > 0.9999
    assert [a["rank"] for a in answer["similar"]] == [1, 2, 3]
    assert ids[2] in capsys.readouterr().out

    near_duplicate = tmp_path / "arrivals" / "near_duplicate.nii.gz"
    write_image(with_noise(read_image(query), sd_hu=20.0), near_duplicate)
    assert insight_main(["index", "add", str(near_duplicate), "--index", str(index_dir), "--device", "cpu"]) == 0
    capsys.readouterr()
    updated = CaseIndex.open(index_dir)
    assert len(updated) == 5 and "near_duplicate" in updated and updated.case("near_duplicate").label is None
    vectors = list(index_dir.glob("vectors-*.faiss"))
    assert len(vectors) == 1 and vectors != first_vectors  # a new file, the old one gone
    assert not [p for p in index_dir.iterdir() if p.name.startswith(".")]  # no temporary file left

    results = updated.search(embedding_of(str(query)), k=5)
    assert [r.case_id for r in results[:2]] == [ids[2], "near_duplicate"]
    assert results[0].score > 0.9999
    unrelated = {r.case_id: r.score for r in results[2:]}
    assert set(unrelated) == {ids[0], ids[1], ids[3]}
    assert results[1].score > max(unrelated.values())


def test_index_reload_remove_and_rebuild_for_a_new_model_version(phantoms, tmp_path):
    folder = tmp_path / "index"
    index = CaseIndex(folder, 64, demo_embedder().model_version, str(DEMO_MODEL))
    for path in phantoms[:3]:
        index.add(path.name[:-7], embedding_of(str(path)), label=1, source=str(path))
    index.save()
    reloaded = CaseIndex.open(folder)
    assert reloaded.case_ids == index.case_ids and reloaded.case(index.case_ids[0]).label == 1
    first = index.case_ids[0]
    assert reloaded.remove(first) and not reloaded.remove(first)
    reloaded.save()
    again = CaseIndex.open(folder)
    assert len(again) == 2 and first not in again
    assert [r.case_id for r in again.search(embedding_of(str(phantoms[1])), k=5, exclude={index.case_ids[1]})] == \
        [index.case_ids[2]]
    with pytest.raises(InputError, match="dims"):
        again.add("bad", np.ones(8, dtype=np.float32) / np.sqrt(8))
    with pytest.raises(InputError, match="unit-length"):
        again.add("bad", np.ones(64, dtype=np.float32))
    with pytest.raises(InputError, match="k must be"):
        again.search(embedding_of(str(phantoms[1])), k=0)

    # another model version: every entry is re-embedded from its source, a vanished source is dropped
    moved = tmp_path / "moved.nii.gz"
    shutil.copy2(phantoms[2], moved)
    again.add("vanishing", embedding_of(str(phantoms[2])), source=str(moved))
    again.save()
    moved.unlink()
    tiny = CaseEmbedder.from_checkpoint(save_tiny_checkpoint(tmp_path / "tiny.pt", "tiny-v2"), "cpu")
    update = add_to_index(folder, tiny, [phantoms[3]])
    assert update.rebuilt and update.index.model_version == "tiny-v2" and update.index.dims == tiny.dims == 32
    assert sorted(update.replaced) == sorted(index.case_ids[1:]) and update.added == [phantoms[3].name[:-7]]
    assert set(update.dropped) == {"vanishing"}
    rebuilt = CaseIndex.open(folder)
    assert rebuilt.model_version == "tiny-v2" and len(rebuilt) == 3 and rebuilt.case(index.case_ids[1]).label == 1


def test_index_and_similar_report_bad_input_clearly(phantoms, tmp_path, capsys):
    assert insight_main(["similar", str(phantoms[0]), "--index", str(tmp_path / "none")]) == 2
    assert "no case index" in capsys.readouterr().err
    folder = tmp_path / "index"
    folder.mkdir()
    (folder / "index.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(InputError, match="cannot read case index"):
        CaseIndex.open(folder)
    (folder / "index.json").write_text(json.dumps({"format": "insight-case-index/1", "model_version": "m",
                                                   "embedding": {"dims": 64}, "vectors_file": "vectors-1.faiss",
                                                   "cases": []}), encoding="utf-8")
    with pytest.raises(InputError, match="missing"):
        CaseIndex.open(folder)
    assert insight_main(["index", "add", str(tmp_path / "absent.nii.gz"), "--index", str(folder)]) == 2
    assert "input not found" in capsys.readouterr().err
    assert insight_main(["similar", str(phantoms[0]), "--index", str(folder), "-k", "0"]) == 2
    assert "-k must be at least 1" in capsys.readouterr().err


def test_similar_route_over_the_real_server(monailabel_server_factory, demo_model_path, tmp_path_factory, tmp_path):
    studies = server_studies(tmp_path_factory.getbasetemp())
    server = monailabel_server_factory(studies, demo_model_path, conf=SERVER_CONF)
    images = sorted(requests.get(server.url("/datastore/?output=all"), timeout=30).json()["objects"])
    assert len(images) >= 4
    labels = read_label_table(studies / "labels.csv")
    query = sorted(labels)[0]

    response = requests.get(server.url(f"/insight/similar/{query}?k=2"), timeout=300)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["image"] == query and answer["k"] == 2 and len(answer["similar"]) == 2
    assert answer["model_version"] == demo_embedder().model_version
    assert query not in [s["image"] for s in answer["similar"]]
    for item in answer["similar"]:
        assert item["image"] in images and 0.0 < item["score"] <= 1.0 and item["qa_verdict"] in ("pass", "warn", "fail")
        assert item["label"] == labels.get(item["image"])  # weak labels imported from labels.csv
    assert (server.studies_dir / ".insight" / "retrieval" / "index.json").is_file()
    assert answer["sync"]["failed"] == {}

    again = requests.get(server.url(f"/insight/similar/{query}?k=2"), timeout=300).json()
    assert again["sync"]["analysed"] == [] and again["similar"] == answer["similar"]  # nothing new: nothing re-run

    # a study arrives: it is analysed and indexed on the next request, and found as the near-duplicate it is
    arrival = tmp_path / "arrival_0000.nii.gz"
    write_image(with_noise(read_image(server.studies_dir / f"{query}.nii.gz")), arrival)
    with arrival.open("rb") as handle:
        put = requests.put(server.url("/datastore/image?image=arrival_0000"), files={"file": handle}, timeout=60)
    assert put.status_code == 200, put.text
    updated = requests.get(server.url(f"/insight/similar/{query}?k=1"), timeout=300).json()
    assert updated["sync"]["analysed"] == ["arrival_0000"]
    assert updated["similar"][0]["image"] == "arrival_0000" and updated["similar"][0]["score"] > 0.999

    assert requests.get(server.url("/insight/similar/no_such_image"), timeout=30).status_code == 404
    bad_k = requests.get(server.url(f"/insight/similar/{query}?k=0"), timeout=30)
    assert bad_k.status_code == 422
