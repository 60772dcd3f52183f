"""The triage worklist: order by QA state and PE probability, ``insight triage``, ``GET /insight/worklist``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import requests

from insight.cli import main as insight_main
from insight.io import read_image, write_image
from insight.retrieval import read_label_table
from insight.triage import PRIORITY_ORDER, build_worklist, read_prediction_folder
from tests.retrieval_cases import NON_CONTRAST_ID, SERVER_CONF, server_studies, small_phantoms, without_contrast


def _prediction(name: str, p: float, verdict: str, codes: tuple[str, ...] = ()) -> dict:
    severity = {"pass": "info", "warn": "warn", "fail": "fail"}[verdict]
    flags = [{"code": c, "message": f"{c} found", "severity": severity, "check": "qa"} for c in codes]
    flags.append({"code": "noted", "message": "an info flag", "severity": "info", "check": "qa"})
    return {"name": name, "pe_probability": p, "model_version": "m1", "findings": [],
            "qa": {"verdict": verdict, "summary": "" if verdict == "pass" else f"QA {verdict}", "flags": flags,
                   "measurements": {}}}


@pytest.fixture()
def prediction_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "predictions"
    folder.mkdir()
    studies = [
        _prediction("a_clear_positive", 0.91, "pass"),
        _prediction("b_positive_warned", 0.70, "warn", ("lungs_truncated",)),
        _prediction("c_not_ctpa_high_p", 0.95, "fail", ("not_ctpa",)),
        _prediction("d_negative", 0.20, "pass"),
        {"name": "e_unreadable_image", "error": "cannot read image", "model_version": "m1"},
        _prediction("f_corrupted_low_p", 0.10, "fail", ("corrupted_slices", "out_of_distribution")),
        _prediction("g_at_threshold", 0.50, "pass"),
        _prediction("h_negative_ood", 0.05, "warn", ("out_of_distribution",)),
    ]
    for study in studies:
        (folder / f"{study['name']}.json").write_text(json.dumps(study), encoding="utf-8")
    (folder / "broken.json").write_text('{"name": "broken", "pe_prob', encoding="utf-8")
    (folder / "summary.evaluation.json").write_text(json.dumps({"auroc": 0.5}), encoding="utf-8")
    return folder


def test_worklist_orders_by_qa_state_then_probability_and_drops_nothing(prediction_folder):
    entries, skipped = read_prediction_folder(prediction_folder)
    worklist = build_worklist(entries, 0.5, skipped)
    assert [e.name for e in worklist.entries] == [
        "a_clear_positive", "b_positive_warned", "g_at_threshold",   # suspected PE, p descending
        "c_not_ctpa_high_p", "f_corrupted_low_p",                     # QA failed: read without the model
        "broken", "e_unreadable_image",                               # not analysed
        "d_negative", "h_negative_ood"]                               # routine, p descending
    assert [e.rank for e in worklist.entries] == list(range(1, 10))
    by_name = {e.name: e for e in worklist.entries}
    assert by_name["c_not_ctpa_high_p"].priority == "qa_failed" and by_name["c_not_ctpa_high_p"].qa_codes == ["not_ctpa"]
    assert "QA failed (not_ctpa)" in by_name["c_not_ctpa_high_p"].state
    assert by_name["b_positive_warned"].state == "PE suspected (p=0.700); QA warning (lungs_truncated)"
    assert "out_of_distribution" in by_name["h_negative_ood"].state
    assert by_name["broken"].error and "cannot read broken.json" in by_name["broken"].state
    assert by_name["e_unreadable_image"].pe_probability is None
    assert worklist.counts == {"suspected_pe": 3, "qa_failed": 2, "not_analysed": 2, "routine": 2}
    assert list(worklist.skipped) == [str(prediction_folder / "summary.evaluation.json")]
    strict = build_worklist(read_prediction_folder(prediction_folder, 0.8)[0], 0.8)
    assert [e.name for e in strict.entries if e.priority == "suspected_pe"] == ["a_clear_positive"]


def test_triage_cli_on_prediction_jsons_and_an_image(prediction_folder, tmp_path_factory, tmp_path, capsys):
    phantom = small_phantoms(tmp_path_factory.getbasetemp())[4]
    image = tmp_path / "contrast_free.nii.gz"
    write_image(without_contrast(read_image(phantom)), image)
    out = tmp_path / "worklist.json"
    assert insight_main(["triage", str(prediction_folder), str(image), "--json", str(out), "--device", "cpu"]) == 0
    table = capsys.readouterr().out
    worklist = json.loads(out.read_text())
    names = [e["name"] for e in worklist["worklist"]]
    assert len(names) == 10 and "contrast_free" in names
    predicted = worklist["worklist"][names.index("contrast_free")]
    assert predicted["priority"] == "qa_failed" and "not_ctpa" in predicted["qa_codes"]
    assert predicted["pe_probability"] is not None and predicted["model_version"]
    assert names.index("contrast_free") < names.index("broken") < names.index("d_negative")
    assert "contrast_free" in table and "qa_failed" in table
    assert insight_main(["triage", str(prediction_folder), "--threshold", "1.5"]) == 2
    assert "--threshold must be a probability" in capsys.readouterr().err
    assert insight_main(["triage", str(tmp_path / "nowhere")]) == 2


def test_worklist_route_over_the_real_server(monailabel_server_factory, demo_model_path, tmp_path_factory):
    studies = server_studies(tmp_path_factory.getbasetemp())
    server = monailabel_server_factory(studies, demo_model_path, conf=SERVER_CONF)
    images = set(requests.get(server.url("/datastore/?output=all"), timeout=30).json()["objects"])
    response = requests.get(server.url("/insight/worklist"), timeout=300)
    assert response.status_code == 200, response.text
    answer = response.json()
    names = [e["name"] for e in answer["worklist"]]
    assert sorted(names) == sorted(images)  # every image, exactly once
    assert answer["sync"]["failed"] == {} and answer["model_version"]
    non_contrast = answer["worklist"][names.index(NON_CONTRAST_ID)]
    assert non_contrast["priority"] == "qa_failed" and "not_ctpa" in non_contrast["qa_codes"]
    assert non_contrast["state"].startswith("QA failed") and non_contrast["pe_probability"] is not None
    groups = [PRIORITY_ORDER.index(e["priority"]) for e in answer["worklist"]]
    assert groups == sorted(groups)
    for group in set(groups):
        probabilities = [e["pe_probability"] for e in answer["worklist"] if PRIORITY_ORDER.index(e["priority"]) == group]
        assert probabilities == sorted(probabilities, reverse=True)
    labels = read_label_table(studies / "labels.csv")
    assert all(e["label"] == labels.get(e["name"]) for e in answer["worklist"])
    assert [e["rank"] for e in answer["worklist"]] == list(range(1, len(names) + 1))

    everyone = requests.get(server.url("/insight/worklist?threshold=0&sync=false"), timeout=60).json()
    assert everyone["sync"] is None
    readable = [e for e in everyone["worklist"] if e["qa_verdict"] != "fail"]
    assert readable and all(e["priority"] == "suspected_pe" for e in readable)
    assert requests.get(server.url("/insight/worklist?threshold=1.5"), timeout=30).status_code == 422
