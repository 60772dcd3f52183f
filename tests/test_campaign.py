"""The simulated annotation campaign (``insight simulate-campaign``) and the selection functions it shares
with the MONAI Label app (``insight.active_learning``).

One real run of ``benchmarks/configs/campaign_small.json`` (tiny phantoms, the shipped INSIGHT demo model,
a tiny UNet) through the CLI checks the files and the structure and sanity of every round's numbers; the
strategies are checked on constructed pools with a planted signal.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from insight.active_learning import (binary_entropy, farthest_point_selection, mask_disagreement, random_selection,
                                     top_k_by_score)
from insight.campaign import (compare_with_random, load_campaign_config, parse_campaign_config, run_campaign,
                              select_cases)
from insight.campaign.data import PoolCase
from insight.cli import main as insight_main
from insight.errors import InputError

REPO = Path(__file__).resolve().parents[1]
SMALL_CONFIG = REPO / "benchmarks" / "configs" / "campaign_small.json"
FULL_CONFIG = REPO / "benchmarks" / "configs" / "campaign_full.json"


@pytest.fixture(scope="module")
def small_run(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("campaign") / "small"
    assert insight_main(["simulate-campaign", "--config", str(SMALL_CONFIG), "--out", str(out)]) == 0
    return out, json.loads((out / "campaign.json").read_text(encoding="utf-8"))


# -- the small campaign, end to end ------------------------------------------------------------------

def test_small_campaign_writes_json_plot_and_summary(small_run):
    out, results = small_run
    assert (out / "campaign_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = (out / "campaign_summary.md").read_text(encoding="utf-8")
    assert "synthetic CTPA phantoms" in summary
    assert "Corrections needed by the best strategy to reach random's final Dice" in summary
    comparison = results["comparison"]
    assert ("**not reached**" in summary) == (not comparison["reached"])
    assert ("**not measurable**" in summary) == (comparison["reached"] and not comparison["informative"])
    assert not list(out.glob(".*.tmp*")), "no temporary files left behind"


def test_every_strategy_and_random_seed_has_every_round_with_sane_numbers(small_run):
    _, results = small_run
    spec = results["config"]["campaign"]
    rounds, k = spec["rounds"], spec["k"]
    expected = list(spec["strategies"]) + [f"random_seed{s}" for s in spec["random_seeds"]]
    assert [arm["arm"] for arm in results["arms"]] == expected
    candidates = {c["name"] for c in results["pool"]["cases"] if c["candidate"]}
    assert candidates == {c["name"] for c in results["pool"]["cases"] if c["pe"] == 1}  # positive_scans rule
    round0 = results["arms"][0]["rounds"][0]
    for arm in results["arms"]:
        records = arm["rounds"]
        assert [r["round"] for r in records] == list(range(rounds + 1))
        assert records[0]["dice"] == round0["dice"] and records[0]["picked"] == []  # one shared round 0
        for index, record in enumerate(records):
            assert record["n_corrected"] == index * k == len(record["corrected"])
            assert 0.0 <= record["dice"] <= 1.0
            assert 0.0 <= record["embolus_sensitivity"] <= 1.0
            assert record["false_positives_per_scan"] >= 0.0
            assert record["metrics"]["n_emboli"] == results["test"]["n_emboli"] > 0
            if index:
                assert len(record["picked"]) == k
                assert record["corrected"] == records[index - 1]["corrected"] + record["picked"]
        final = records[-1]["corrected"]
        assert len(set(final)) == len(final), f"{arm['arm']} picked a case twice"
        assert set(final) <= candidates
    random_picks = [tuple(arm["rounds"][1]["picked"]) for arm in results["arms"] if arm["strategy"] == "random"]
    assert len(set(random_picks)) == len(random_picks), "random selection gave the same picks for two seeds"


def test_reference_model_has_every_candidate_corrected_and_gives_the_headroom(small_run):
    out, results = small_run
    candidates = [c["name"] for c in results["pool"]["cases"] if c["candidate"]]
    reference = results["all_corrected"]
    assert reference["round"] is None and reference["corrected"] == candidates
    assert reference["n_corrected"] == len(candidates) and reference["picked"] == []
    assert 0.0 <= reference["dice"] <= 1.0 and reference["metrics"]["n_emboli"] == results["test"]["n_emboli"]
    assert reference["training"]["iterations"] > 0
    comparison = results["comparison"]
    assert comparison["all_corrected_dice"] == reference["dice"]
    assert comparison["headroom"] == pytest.approx(reference["dice"] - comparison["pseudo_only_dice"], abs=1e-4)
    summary = (out / "campaign_summary.md").read_text(encoding="utf-8")
    assert f"Every candidate corrected ({len(candidates)} scans" in summary


def test_curves_and_comparison_follow_the_arms(small_run):
    _, results = small_run
    curves = results["curves"]
    assert set(curves) == set(results["config"]["campaign"]["strategies"]) | {"random"}
    random_arms = [arm for arm in results["arms"] if arm["strategy"] == "random"]
    final_dice = [arm["rounds"][-1]["dice"] for arm in random_arms]
    assert curves["random"][-1]["dice"] == pytest.approx(np.mean(final_dice), abs=1e-4)
    assert curves["random"][-1]["dice_min"] <= curves["random"][-1]["dice"] <= curves["random"][-1]["dice_max"]
    comparison = results["comparison"]
    assert comparison["random_final_dice"] == curves["random"][-1]["dice"]
    assert comparison["pseudo_only_dice"] == results["arms"][0]["rounds"][0]["dice"]
    for name, record in comparison["per_strategy"].items():
        if record["reached"]:
            point = next(p for p in curves[name] if p["n_corrected"] == record["corrections_needed"])
            assert point["dice"] >= comparison["random_final_dice"]
            assert all(p["dice"] < comparison["random_final_dice"] for p in curves[name]
                       if p["n_corrected"] < record["corrections_needed"])
        else:
            assert all(p["dice"] < comparison["random_final_dice"] for p in curves[name])


def test_comparison_reports_not_reached_honestly():
    curves = {"uncertainty": [{"n_corrected": 0, "dice": 0.2}, {"n_corrected": 2, "dice": 0.3}],
              "diversity": [{"n_corrected": 0, "dice": 0.2}, {"n_corrected": 2, "dice": 0.5}],
              "random": [{"n_corrected": 0, "dice": 0.2}, {"n_corrected": 2, "dice": 0.6}]}
    comparison = compare_with_random(curves, k=2, rounds=1)
    assert not comparison["reached"] and comparison["best_corrections_needed"] is None
    assert comparison["best_strategy"] == "diversity"  # the highest final Dice
    assert comparison["statement"].startswith("not reached")
    curves["diversity"][1]["dice"] = 0.61
    comparison = compare_with_random(curves, k=2, rounds=1)
    assert comparison["reached"] and comparison["best_strategy"] == "diversity"
    assert comparison["best_corrections_needed"] == 2 and comparison["best_fraction_of_random"] == 1.0
    assert not comparison["meets_target"]  # 100% of random's corrections > 60%
    assert comparison["informative"] and comparison["random_gain_over_round0"] == pytest.approx(0.4)
    flat = {"uncertainty": curves["uncertainty"], "random": [{"n_corrected": 0, "dice": 0.2},
                                                             {"n_corrected": 2, "dice": 0.1}]}
    comparison = compare_with_random(flat, k=2, rounds=1)  # corrections made random worse: nothing to judge
    assert comparison["reached"] and comparison["best_corrections_needed"] == 0
    assert not comparison["informative"] and not comparison["meets_target"]
    assert comparison["statement"].startswith("not measurable")


# -- strategies with a planted signal ------------------------------------------------------------------

def _pool(**cases: dict) -> dict[str, PoolCase]:
    image = sitk.Image(4, 4, 2, sitk.sitkInt16)
    empty = np.zeros((2, 4, 4), dtype=bool)
    pool = {}
    for name, fields in cases.items():
        pool[name] = PoolCase(name, image, empty, 1, 1, pe_probability=fields.get("p", 0.9),
                              heatmap_mask=fields.get("heatmap", empty), embedding=fields.get("embedding"),
                              pseudo_mask=fields.get("pseudo", empty))
    return pool


def test_uncertainty_picks_the_case_whose_probability_is_nearest_one_half():
    pool = _pool(a={"p": 0.95}, b={"p": 0.47}, c={"p": 0.05}, d={"p": 0.7})
    selection = select_cases("uncertainty", 1, list(pool), pool)
    assert selection.picked == ["b"]
    assert select_cases("uncertainty", 2, list(pool), pool).picked == ["b", "d"]
    assert select_cases("uncertainty", 1, ["a", "c", "d"], pool).picked == ["d"]  # only among candidates
    assert selection.scores["b"] == pytest.approx(binary_entropy(0.47))


def test_disagreement_picks_the_case_where_segmentation_and_heatmap_disagree():
    blob = np.zeros((2, 4, 4), dtype=bool)
    blob[0, :2, :2] = True
    other = np.zeros((2, 4, 4), dtype=bool)
    other[1, 2:, 2:] = True
    pool = _pool(agree={"heatmap": blob}, disagree={"heatmap": blob, "pseudo": other}, empty={})
    masks = {"agree": blob, "disagree": other, "empty": np.zeros_like(blob)}
    selection = select_cases("disagreement", 1, list(pool), pool, segment=masks.__getitem__)
    assert selection.picked == ["disagree"] and selection.scores == {"agree": 0.0, "disagree": 1.0, "empty": 0.0}
    # against the pseudo-mask instead, "disagree" agrees and "agree" does not
    by_pseudo = select_cases("disagreement", 1, list(pool), pool, segment=masks.__getitem__,
                             disagreement_mask="pseudo_mask")
    assert by_pseudo.picked == ["agree"]
    with pytest.raises(ValueError, match="segmentation model"):
        select_cases("disagreement", 1, list(pool), pool)


def test_diversity_picks_the_outlier_then_covers_the_space():
    pool = _pool(a={"embedding": np.array([0.0, 0.0])}, b={"embedding": np.array([0.1, 0.0])},
                 c={"embedding": np.array([0.0, 0.1])}, far={"embedding": np.array([5.0, 5.0])},
                 other={"embedding": np.array([-3.0, 0.0])})
    assert select_cases("diversity", 1, list(pool), pool).picked == ["far"]
    assert select_cases("diversity", 2, list(pool), pool).picked == ["far", "other"]
    # once "far" and "other" are corrected, the next pick is the candidate farthest from both
    picks = farthest_point_selection(["a", "b", "c"], {n: c.embedding for n, c in pool.items()}, 1,
                                     references=["far", "other"])
    assert picks[0].name == "b" and picks[0].distance == pytest.approx(3.1)


def test_random_is_a_function_of_its_seed_and_never_repeats_a_case():
    names = [f"case{i}" for i in range(10)]
    first = random_selection(names, 4, (0, 1))
    assert first == random_selection(list(reversed(names)), 4, (0, 1))
    assert len(set(first)) == 4 and set(first) <= set(names)
    assert len({tuple(random_selection(names, 4, (seed, 1))) for seed in range(5)}) > 1
    assert sorted(random_selection(names[:3], 5, 0)) == names[:3]
    pool = _pool(**{n: {} for n in names})
    assert select_cases("random", 4, names, pool, random_seed=0, round_index=1).picked == first


def test_selection_functions_check_their_inputs():
    assert top_k_by_score({"b": 0.5, "a": 0.5, "c": 0.1}, 2) == ["a", "b"]  # ties: lowest name
    with pytest.raises(ValueError, match="finite"):
        top_k_by_score({"a": float("nan")}, 1)
    with pytest.raises(ValueError, match="positive integer"):
        random_selection(["a"], 0, 0)
    with pytest.raises(ValueError, match="no embedding"):
        farthest_point_selection(["a"], {}, 1)
    with pytest.raises(InputError, match="one grid"):
        mask_disagreement(np.zeros((2, 2)), np.zeros((3, 2)))
    assert mask_disagreement(np.zeros((2, 2)), np.zeros((2, 2)))["value"] == 0.0
    with pytest.raises(ValueError, match="unknown strategy"):
        select_cases("magic", 1, ["a"], _pool(a={}))


# -- configuration and CLI errors ---------------------------------------------------------------------

def test_configs_parse_and_bad_settings_are_clear_errors(tmp_path, capsys):
    small, full = load_campaign_config(SMALL_CONFIG), load_campaign_config(FULL_CONFIG)
    assert small.rounds.corrections == 4 and full.rounds.corrections > small.rounds.corrections
    assert full.insight.grid_spacing_xyz is None  # the full campaign runs INSIGHT on its own grid
    payload = json.loads(SMALL_CONFIG.read_text(encoding="utf-8"))
    for change, message in (({"extra": 1}, "unknown keys"), ({"test": payload["pool"]}, "different phantom seeds"),
                            ({"campaign": {**payload["campaign"], "strategies": ["random"]}}, "strategies"),
                            ({"campaign": {**payload["campaign"], "random_seeds": []}}, "random_seeds"),
                            ({"campaign": {**payload["campaign"], "reference_all_corrected": "yes"}},
                             "reference_all_corrected"),
                            ({"train": {"epochs": 0}}, "epochs")):
        with pytest.raises(InputError, match=message):
            parse_campaign_config({**payload, **change})
    too_few = parse_campaign_config({**payload, "pool": {"seed": 2100, "n": 2}, "test": {"seed": 2200, "n": 1}})
    with pytest.raises(InputError, match="candidate scan"):  # refused before any model runs
        run_campaign(too_few)
    assert insight_main(["simulate-campaign", "--config", str(tmp_path / "missing.json"), "--out",
                         str(tmp_path / "out")]) == 2
    assert "campaign config not found" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
