"""Active learning, scoring and pe_insight training over REST, plus the pieces they are built from.

Unit tests run the app's strategies, scores and leases on a real campaign datastore in a temporary
folder. The server tests start one real MONAI Label server (shipped demo model, six small
phantoms, one-epoch training) whose segmentation checkpoint only appears during the tests, so the
``disagreement`` strategy is seen refusing first and working after.
"""

from __future__ import annotations

import json

import sys
import time
from pathlib import Path

import numpy as np
import pytest
import requests
import SimpleITK as sitk
import torch

from insight.errors import InputError
from insight.io import write_image
from insight.models.checkpoint import load_checkpoint
from insight.phantom import PhantomConfig, write_dataset
from tests.conftest import APP_DIR, MonaiLabelServer

sys.path.insert(0, str(APP_DIR))  # the app's own package, imported as ``lib`` (MONAI Label's layout)

from lib.activelearning import (DisagreementStrategy, DiversityStrategy, LeaseBook,  # noqa: E402
                                LeaseFilteredDatastore, StrategyUnavailable, UncertaintyStrategy)
from lib.activelearning.sampling import next_sample_with_lease  # noqa: E402
from lib.datastore import CampaignDatastore  # noqa: E402
from lib.scoring.embedding import pooled_embedding  # noqa: E402
from lib.scoring.methods import binary_entropy, mask_disagreement  # noqa: E402
from lib.scoring.scores import SCORES_KEY  # noqa: E402

TIMEOUT_S = 60
TRAIN_TIMEOUT_S = 240


# ---------------------------------------------------------------------------------------------------
# units, on real files
# ---------------------------------------------------------------------------------------------------
def test_binary_entropy_is_one_at_a_coin_flip_and_zero_when_sure():
    assert binary_entropy(0.5) == pytest.approx(1.0)
    assert binary_entropy(0.0) == 0.0 and binary_entropy(1.0) == 0.0
    assert binary_entropy(0.2) == pytest.approx(binary_entropy(0.8))
    assert binary_entropy(0.1) < binary_entropy(0.3) < binary_entropy(0.45)


def test_mask_disagreement_is_one_minus_dice():
    empty = np.zeros((4, 8, 8), bool)
    block = empty.copy()
    block[1:3, 2:6, 2:6] = True  # 32 voxels
    half = empty.copy()
    half[1:3, 2:6, 4:8] = True  # 32 voxels, 16 shared
    assert mask_disagreement(empty, empty)["value"] == 0.0
    assert mask_disagreement(block, block)["value"] == 0.0
    assert mask_disagreement(block, empty)["value"] == 1.0
    result = mask_disagreement(block, half)
    assert result["dice"] == pytest.approx(0.5) and result["value"] == pytest.approx(0.5)
    assert (result["heatmap_voxels"], result["mask_voxels"]) == (32, 32)
    with pytest.raises(InputError, match="not on one grid"):
        mask_disagreement(block, np.zeros((4, 8, 9), bool))


def test_pooled_embedding_is_unit_length_mean_and_max_per_channel():
    features = torch.zeros(3, 2, 4, 4)
    features[:, 0] = 1.0
    features[0, 1, 0, 0] = 4.0
    vector = pooled_embedding(features)
    assert vector.shape == (4,)
    assert np.linalg.norm(vector) == pytest.approx(1.0)
    raw = np.array([1.0, 4.0 / 48, 1.0, 4.0])
    np.testing.assert_allclose(vector, raw / np.linalg.norm(raw), rtol=1e-6)


def test_leases_one_per_client_exclusive_and_expiring():
    now = [1000.0]
    book = LeaseBook(timeout_s=60, clock=lambda: now[0])
    book.grant("a", "client-1")
    assert book.held_by_others("client-2") == {"a"} and book.held_by_others("client-1") == set()
    with pytest.raises(ValueError, match="leased to another client"):
        book.grant("a", "client-2")
    book.grant("b", "client-1")  # asking again gives "a" back
    assert book.held_by("client-1") == {"b"} and book.held_by_others("client-2") == {"b"}
    assert book.release("b", "client-2") is None and book.release("b", "client-1").image_id == "b"
    book.grant("c", "client-3")
    now[0] += 61
    assert book.active() == []
    book.grant("c", "client-4")  # expired: free again


def test_leases_survive_a_restart_through_their_file(tmp_path: Path):
    now = [1000.0]
    path = tmp_path / ".insight" / "leases.json"
    book = LeaseBook(timeout_s=60, clock=lambda: now[0], path=path)
    book.grant("a", "client-1", strategy="uncertainty")
    book.grant("b", "client-2")
    book.release("b", "client-2")
    saved = json.loads(path.read_text())
    assert [item["image_id"] for item in saved["leases"]] == ["a"]
    assert not [p for p in path.parent.iterdir() if p.name != "leases.json"]  # no temporary file left

    now[0] += 30  # the "restarted server" reads the file
    reopened = LeaseBook(timeout_s=600, clock=lambda: now[0], path=path)
    (lease,) = reopened.active()
    assert (lease.image_id, lease.client_id, lease.strategy, lease.expires_at) == ("a", "client-1", "uncertainty", 1060.0)
    with pytest.raises(ValueError, match="leased to another client"):
        reopened.grant("a", "client-2")

    now[0] += 31  # expired while the server was down: dropped on reading, and from the file
    assert LeaseBook(timeout_s=60, clock=lambda: now[0], path=path).active() == []
    assert json.loads(path.read_text())["leases"] == []


@pytest.mark.parametrize("content", ["{not json", '{"leases": 3}', '{"leases": [{"image_id": 1}]}', "[]"])
def test_an_unreadable_lease_file_is_kept_aside_and_the_book_starts_empty(tmp_path: Path, content: str, caplog):
    path = tmp_path / "leases.json"
    path.write_text(content)
    book = LeaseBook(timeout_s=60, clock=lambda: 1234.0, path=path)
    assert book.active() == []
    assert (tmp_path / "leases.json.unreadable-1234").read_text() == content
    assert "unreadable" in caplog.text
    book.grant("x", "client-1")
    assert json.loads(path.read_text())["leases"][0]["image_id"] == "x"


@pytest.fixture
def scored_datastore(tmp_path: Path) -> CampaignDatastore:
    """A real campaign datastore of five tiny volumes with uncertainty scores and embeddings."""
    for i in range(5):
        write_image(sitk.GetImageFromArray(np.full((4, 8, 8), i, np.int16)), tmp_path / f"case{i}.nii.gz")
    datastore = CampaignDatastore(str(tmp_path), extensions=["*.nii.gz"], auto_reload=False)
    uncertainty = {"case0": 0.1, "case1": 0.9, "case2": 0.95, "case3": 0.3}  # case4 unscored
    embeddings = {"case0": [1, 0], "case1": [0.9, 0.1], "case2": [0.95, 0.05], "case3": [0, 1], "case4": [-1, 0]}

    def write(infos):
        for image, info in infos.items():
            info[SCORES_KEY] = {"diversity": {"embedding": embeddings[image], "model_version": "m1"}}
            if image in uncertainty:
                info[SCORES_KEY]["uncertainty"] = {"value": uncertainty[image], "model_version": "m1"}
        return True

    datastore.update_image_infos(write)
    return datastore


def test_uncertainty_strategy_picks_the_most_uncertain_free_image(scored_datastore):
    strategy = UncertaintyStrategy()
    assert strategy({"strategy": "uncertainty"}, scored_datastore)["id"] == "case2"
    view = LeaseFilteredDatastore(scored_datastore, excluded={"case2"})
    pick = strategy({"strategy": "uncertainty"}, view)
    assert pick["id"] == "case1" and pick["score"] == 0.9 and pick["unscored_candidates"] == 1
    only_unscored = LeaseFilteredDatastore(scored_datastore, excluded={"case0", "case1", "case2", "case3"})
    with pytest.raises(StrategyUnavailable, match="POST /scoring/uncertainty"):
        strategy({"strategy": "uncertainty"}, only_unscored)


def test_diversity_strategy_picks_the_image_farthest_from_labeled_and_leased_ones(scored_datastore, tmp_path):
    strategy = DiversityStrategy()
    first = strategy({"strategy": "diversity"}, scored_datastore)  # nothing labeled: farthest from the centroid
    assert first["id"] == "case4" and "centroid" in first["score_basis"]
    mask = write_image(sitk.GetImageFromArray(np.zeros((4, 8, 8), np.uint8)), tmp_path / "mask.nii.gz")
    scored_datastore.save_label("case4", str(mask), "final", {})
    view = LeaseFilteredDatastore(scored_datastore, excluded={"case3"})
    pick = strategy({"strategy": "diversity"}, view)  # references: case4 (labeled) and case3 (leased)
    assert pick["id"] == "case0", pick  # [1, 0] is the farthest from both [-1, 0] and [0, 1]


def test_disagreement_strategy_refuses_without_a_segmentation_model(scored_datastore):
    strategy = DisagreementStrategy(lambda: "this server does not serve it")
    with pytest.raises(StrategyUnavailable, match="pe_segmentation model: this server does not serve it"):
        strategy({"strategy": "disagreement"}, scored_datastore)


def test_two_clients_never_get_the_same_image(scored_datastore):
    book = LeaseBook(timeout_s=600)
    strategy = UncertaintyStrategy()
    picks = [next_sample_with_lease(strategy, {"strategy": "uncertainty", "client_id": c}, scored_datastore, book)
             for c in ("a", "b", "c")]
    assert [p["id"] for p in picks] == ["case2", "case1", "case3"]
    assert picks[0]["lease"]["client_id"] == "a"
    again = next_sample_with_lease(strategy, {"strategy": "uncertainty", "client_id": "a"}, scored_datastore, book)
    assert again["id"] == "case0"  # "next" for client a: not its current image, not b's or c's


# ---------------------------------------------------------------------------------------------------
# the real server
# ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("active_learning")
    write_dataset(folder / "studies", n=6, seed=7, config=PhantomConfig(shape_xyz=(64, 64, 32)), progress=False)
    return folder


@pytest.fixture(scope="module")
def seg_checkpoint_path(workdir: Path) -> Path:
    """Where the server looks for the segmentation checkpoint (written during the tests)."""
    return workdir / "seg" / "pe_segmentation.pt"


@pytest.fixture(scope="module")
def server(monailabel_server_factory, workdir: Path, demo_model_path: Path, seg_checkpoint_path: Path):
    return monailabel_server_factory(workdir / "studies", demo_model_path,
                                     conf={"train_epochs": "1", "model_watch_s": "0.5",
                                           "seg_model_path": str(seg_checkpoint_path)})


@pytest.fixture(autouse=True)
def no_leases_left(request):
    """Every server test starts with no image leased."""
    yield
    if "server" in request.fixturenames:
        server = request.getfixturevalue("server")
        for lease in requests.get(server.url("/insight/leases"), timeout=TIMEOUT_S).json()["leases"]:
            requests.delete(server.url(f"/insight/leases/{lease['image_id']}"), timeout=TIMEOUT_S)


def next_sample(server: MonaiLabelServer, strategy: str, client_id: str) -> requests.Response:
    return requests.post(server.url(f"/activelearning/{strategy}"), json={"client_id": client_id}, timeout=TIMEOUT_S)


def run_scoring(server: MonaiLabelServer, method: str) -> dict:
    response = requests.post(server.url(f"/scoring/{method}"), params={"run_sync": "true"}, json={},
                             timeout=TRAIN_TIMEOUT_S)
    assert response.status_code == 200, response.text
    return response.json()


def image_scores(server: MonaiLabelServer, image: str) -> dict:
    info = requests.get(server.url("/datastore/image/info"), params={"image": image}, timeout=TIMEOUT_S).json()
    return info.get(SCORES_KEY, {})


def images(server: MonaiLabelServer) -> list[str]:
    return sorted(requests.get(server.url("/datastore/"), params={"output": "all"}, timeout=TIMEOUT_S)
                  .json()["objects"])


def test_next_sample_from_two_clients_gives_different_images(server):
    for _ in range(3):
        first, second = next_sample(server, "random", "annotator-1"), next_sample(server, "random", "annotator-2")
        assert first.status_code == 200 and second.status_code == 200, (first.text, second.text)
        assert first.json()["id"] != second.json()["id"]
        assert first.json()["lease"]["client_id"] == "annotator-1"
    leases = requests.get(server.url("/insight/leases"), timeout=TIMEOUT_S).json()["leases"]
    assert sorted(lease["client_id"] for lease in leases) == ["annotator-1", "annotator-2"]  # one each


def test_scoring_writes_scores_and_each_strategy_returns_an_image(server):
    for method in ("uncertainty", "diversity"):
        task = run_scoring(server, method)
        assert task["status"] == "DONE", task
    for image in images(server):
        scores = image_scores(server, image)
        assert 0.0 <= scores["uncertainty"]["value"] <= 1.0
        assert 0.0 <= scores["uncertainty"]["pe_probability"] <= 1.0
        assert len(scores["diversity"]["embedding"]) == scores["diversity"]["dims"] > 0
    picks = {}
    for client, strategy in enumerate(("uncertainty", "diversity", "random")):
        response = next_sample(server, strategy, f"client-{client}")
        assert response.status_code == 200, response.text
        picks[strategy] = response.json()["id"]
        assert picks[strategy] in images(server)
        assert "embedding" not in str(response.json().get(SCORES_KEY, {}))
    assert len(set(picks.values())) == 3
    best = max(images(server), key=lambda i: image_scores(server, i)["uncertainty"]["value"])
    assert picks["uncertainty"] == best


def test_unknown_strategy_or_scoring_method_is_404(server):
    assert next_sample(server, "no_such_strategy", "x").status_code == 404
    response = requests.post(server.url("/scoring/no_such_method"), json={}, timeout=TIMEOUT_S)
    assert response.status_code == 404 and "uncertainty" in response.json()["detail"]


def test_disagreement_refuses_until_a_segmentation_model_exists_then_ranks(server, seg_checkpoint_path):
    from insight.segmentation import SegmentationConfig, SegNetworkConfig, build_network, save_segmentation_checkpoint

    refused = next_sample(server, "disagreement", "client-d")
    assert refused.status_code == 409, refused.text
    assert "pe_segmentation" in refused.json()["detail"] and "not ready" in refused.json()["detail"]
    assert requests.post(server.url("/scoring/disagreement"), json={}, timeout=TIMEOUT_S).status_code == 409

    torch.manual_seed(0)  # a small untrained UNet: its masks are arbitrary, the scores are real
    config = SegmentationConfig(network=SegNetworkConfig(channels=(4, 8), num_res_units=0), patch_size_zyx=(32, 64, 64))
    save_segmentation_checkpoint(seg_checkpoint_path, build_network(config.network), config)
    task = run_scoring(server, "disagreement")
    assert task["status"] == "DONE" and not task["result"]["failed"], task
    for image in images(server):
        record = image_scores(server, image)["disagreement"]
        assert 0.0 <= record["value"] <= 1.0 and record["model_version"].count("|") == 1
    response = next_sample(server, "disagreement", "client-d")
    assert response.status_code == 200, response.text
    best = max(images(server), key=lambda i: (image_scores(server, i)["disagreement"]["value"], i))
    assert response.json()["score"] == image_scores(server, best)["disagreement"]["value"]


def test_saving_a_final_label_releases_the_lease(server, workdir):
    picked = next_sample(server, "random", "client-l").json()["id"]
    leases = requests.get(server.url("/insight/leases"), timeout=TIMEOUT_S).json()["leases"]
    leased = [lease["image_id"] for lease in leases]
    assert leased == [picked]
    mask = workdir / "studies" / "truth" / f"{picked}_clot.nii.gz"
    saved = requests.put(server.url("/datastore/label"), params={"image": picked, "tag": "final"},
                         files={"label": (mask.name, mask.read_bytes())},
                         data={"params": '{"method": "manual", "client_id": "client-l"}'}, timeout=TIMEOUT_S)
    assert saved.status_code == 200, saved.text
    assert requests.get(server.url("/insight/leases"), timeout=TIMEOUT_S).json()["leases"] == []
    for client in ("x1", "x2", "x3", "x4", "x5"):
        response = next_sample(server, "random", client)
        assert response.json().get("id") != picked  # labeled: not offered again


def test_tiny_training_over_rest_is_served_without_restart(server, demo_model_path):
    old_version = load_checkpoint(demo_model_path).model_version
    started = requests.post(server.url("/train/pe_insight"), json={"epochs": 1}, timeout=TIMEOUT_S)
    assert started.status_code == 200, started.text
    deadline = time.monotonic() + TRAIN_TIMEOUT_S
    status = {}
    while time.monotonic() < deadline:
        status = requests.get(server.url("/train/"), timeout=TIMEOUT_S).json()
        if status["status"] in ("DONE", "ERROR"):
            break
        time.sleep(1.0)
    assert status.get("status") == "DONE", f"training did not finish: {status}\n{server.log_tail(40)}"

    stats = server.info()["train_stats"]["pe_insight"]
    new_version = stats["model_version"]
    assert stats["status"] == "done" and new_version != old_version
    assert stats["previous_model_version"] == old_version and stats["epochs"] == 1
    assert np.isfinite(stats["train_loss"]) and "val_auroc" in stats
    spread = stats["history"][0].get("val_p_std")  # a tiny one-epoch model: said whether it answers by scan
    assert spread is None or (stats["warning"] is not None) == (spread < 0.005)
    assert stats["train_images"] + stats["val_images"] == 6 and stats["positives"] == 3
    published = Path(stats["checkpoint"])
    assert published.parent.parent == server.studies_dir / ".insight"
    assert load_checkpoint(published).model_version == new_version

    served = None
    while time.monotonic() < deadline:  # the server's watcher loads it within a second or so
        served = server.info()["models"]["pe_insight"]
        if served["model_version"] == new_version:
            break
        time.sleep(0.5)
    assert served["model_version"] == new_version and served["model_source"] == "trained", served
    answer = requests.post(server.url("/infer/pe_insight"), params={"image": images(server)[0], "output": "json"},
                           timeout=TIMEOUT_S)
    assert answer.status_code == 200 and answer.json()["model_version"] == new_version


def test_leases_survive_a_server_restart(monailabel_server_factory, workdir: Path, demo_model_path: Path):
    """A site restarts its server mid-campaign: the cases annotators hold stay theirs."""
    server = monailabel_server_factory(workdir / "studies", demo_model_path, conf={"lease_timeout_s": "900"})
    first = next_sample(server, "random", "annotator-1")
    assert first.status_code == 200, first.text
    held = first.json()["id"]
    assert (server.studies_dir / ".insight" / "leases.json").is_file()

    monailabel_server_factory.restart(server)
    leases = requests.get(server.url("/insight/leases"), timeout=TIMEOUT_S).json()["leases"]
    assert [(lease["image_id"], lease["client_id"]) for lease in leases] == [(held, "annotator-1")]
    others = [next_sample(server, "random", f"annotator-{i}") for i in range(2, 7)]  # the 5 other images
    assert all(response.status_code == 200 for response in others), [r.text for r in others]
    assert held not in {response.json()["id"] for response in others}
    assert requests.delete(server.url(f"/insight/leases/{held}"), params={"client_id": "annotator-1"},
                           timeout=TIMEOUT_S).status_code == 200


def test_a_failed_training_adds_last_error_and_keeps_the_last_good_run(tmp_path: Path):
    from lib.trainers.train_stats import read_stats_file, record_training_error

    path = tmp_path / "pe_insight.train_stats.json"
    assert read_stats_file(path) == {}
    path.write_text("{broken")
    assert read_stats_file(path)["error"].startswith(f"cannot read {path}")
    record_training_error(path, "pe_insight", "no PE scans", "2026-11-23T06:00:00Z", "2026-11-23T06:00:05Z")
    assert read_stats_file(path) == {"status": "error", "last_error": {
        "error": "no PE scans", "started": "2026-11-23T06:00:00Z", "finished": "2026-11-23T06:00:05Z"}}
    path.write_text(json.dumps({"status": "done", "model_version": "v1"}))
    record_training_error(path, "pe_insight", "disk full", "a", "b")
    stats = read_stats_file(path)
    assert stats["status"] == "done" and stats["model_version"] == "v1" and stats["last_error"]["error"] == "disk full"


def test_a_seeded_checkpoint_is_fine_tuned_without_seeding_again():
    """Fine-tuning the served (seeded) model keeps its BatchNorm statistics and does not re-seed; training
    from scratch keeps the recipe's seeding, without which weak labels teach nothing (model card)."""
    from lib.trainers.pe_insight import PEInsightTrain, TrainSettings

    stored = {"seed_instances": 200, "seed_epochs": 10, "learning_rate": 0.003, "encoder": "not a TrainConfig field"}
    tuned = PEInsightTrain._train_config(stored, TrainSettings(epochs=2, init="current"))
    assert (tuned.seed_instances, tuned.freeze_batch_norm, tuned.epochs) == (0, True, 2)
    fresh = PEInsightTrain._train_config(stored, TrainSettings(epochs=2, init="scratch"))
    assert (fresh.seed_instances, fresh.seed_epochs, fresh.freeze_batch_norm) == (200, 10, False)
