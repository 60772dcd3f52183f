"""The benchmark's markdown table, from the results JSON (written by :mod:`insight.benchmark.runner`)."""

from __future__ import annotations

from typing import Any

__all__ = ["markdown_report"]


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, float)):
        return f"{value:.{digits}f}"
    return str(value)


def _seconds(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value * 1000:.0f} ms" if value < 1.0 else f"{value:.2f} s"


def _row(method: dict[str, Any], fp_rates: list[float]) -> str:
    cls, loc, cost = method["classification"], method["localization"], method["cost"]
    froc = method["froc"]
    ci = cls.get("auroc_ci95")
    auroc = _fmt(cls["auroc"]) + (f" ({_fmt(ci[0], 2)}-{_fmt(ci[1], 2)})" if ci else "")
    sens_spec = f"{_fmt(cls['sensitivity'], 2)} / {_fmt(cls['specificity'], 2)} @ {cls['operating_threshold']:.3g}"
    val_dice = loc.get("dice_val_threshold")
    oracle = loc.get("dice_oracle_threshold")
    overlap = " / ".join(_fmt(froc["overlap"]["sensitivity_at"].get(f"{r:g}"), 2) for r in fp_rates)
    peak = " / ".join(_fmt(froc["peak"]["sensitivity_at"].get(f"{r:g}"), 2) for r in fp_rates)
    model_s = _seconds(cost["model_s_mean"])
    if cost["backward_s_mean"] > 0:
        model_s += f" ({_seconds(cost['forward_s_mean'])} fwd + {_seconds(cost['backward_s_mean'])} bwd)"
    cells = [
        method["name"], auroc, sens_spec, _fmt(cls["ece"]),
        f"{_fmt(loc['dice_own_mean'])} ({method['threshold_rule']})", _fmt(loc["iou_own_mean"]),
        f"{_fmt(val_dice['dice'])} @ {val_dice['threshold']:.2f}" if val_dice else "n/a",
        f"{_fmt(oracle['dice'])} @ {oracle['threshold']:.2f}" if oracle else "n/a",
        _fmt(loc["pointing_game"], 2), overlap, peak,
        _fmt(loc["flagged_ml_per_scan"], 1), model_s, _fmt(method["training"]["seconds_per_epoch"], 1),
    ]
    return "| " + " | ".join(cells) + " |"


def _budget(train: dict[str, Any]) -> str:
    """The shared training budget in words (anomaly seeding applies to INSIGHT-kind methods only)."""
    if not train.get("seed_instances"):
        return f"{train['epochs']} epochs"
    total = train["seed_epochs"] + train["epochs"]
    return (f"{_epochs(total)}: for INSIGHT-kind methods {_epochs(train['seed_epochs'], 'anomaly-seeded instance')} "
            f"({train['seed_instances']} instances per scan) then {_epochs(train['epochs'], 'weak-label')}; "
            f"baselines (no instance detector to seed) {_epochs(total, 'weak-label')}")


def _epochs(count: int, kind: str = "") -> str:
    """``3 weak-label epochs``, ``1 epoch``."""
    return f"{count} {kind + ' ' if kind else ''}epoch{'' if count == 1 else 's'}"


def _fixed_s(results: dict[str, Any]) -> float | None:
    """Mean seconds of the shared fixed-feature pass (0 when the encoder has none)."""
    methods = results["methods"]
    return methods[0]["cost"].get("fixed_features_s_mean", 0.0) if methods else None


def markdown_report(results: dict[str, Any]) -> str:
    """The results table with the command, hardware, data and the rules it was measured by."""
    fp_rates = results["evaluation"]["fp_rates"]
    data, hw, budget = results["data"], results["hardware"], results["config"]["train"]
    model = results["config"]["model"]
    rates = "/".join(f"{r:g}" for r in fp_rates)
    lines = [
        f"# Benchmark `{results['benchmark']}`: INSIGHT against its baselines",
        "",
        "**Results on synthetic CTPA phantoms, not on patients.** They test the method (scan labels in, "
        "voxel localization out) against known clot masks; they say nothing about real CTPA.",
        "",
        f"- Command: `{results['command']}`",
        f"- Hardware: {hw['description']}; run took {results['seconds_total']:.0f} s "
        f"({results['created_utc']}, insight {results['insight_version']}, torch {hw['torch']})",
        f"- Data (phantom generator, separate seeds): train {data['train']['n']} scans ({data['train']['n_pe']} PE, "
        f"seed {data['train']['seed']}), validation {data['val']['n']} ({data['val']['n_pe']} PE, seed "
        f"{data['val']['seed']}), test {data['test']['n']} ({data['test']['n_pe']} PE, seed {data['test']['seed']}, "
        f"{results['test_emboli']} emboli counted as 26-connected clot components)",
        f"- Every method: encoder `{model['encoder']}` (stride {model['encoder_stride']}), search region "
        f"`{results['config']['preprocess']['search_region']}`, {_budget(budget)}, AdamW lr "
        f"{budget['learning_rate']:g}, seed {budget['seed']}, the epoch with the best validation AUROC kept",
        "",
        f"| Method | AUROC (95% CI) | Sens / Spec @ p | ECE | Dice, own threshold | IoU, own threshold | "
        f"Dice @ val-chosen threshold | Dice @ test-optimal threshold (oracle) | Pointing game | "
        f"Embolus sensitivity @ {rates} FP/scan, overlap rule | Same, peak rule | Flagged mL/scan | "
        f"Model time per volume | Train s/epoch |",
        "|" + " --- |" * 14,
    ]
    lines += [_row(m, fp_rates) for m in results["methods"]]
    lines += [
        "",
        "How to read it:",
        f"- AUROC on the test split with a {results['evaluation']['bootstrap']}-resample bootstrap 95% CI; "
        "sensitivity/specificity at the "
        f"operating threshold ({results['evaluation']['operating_threshold']}: chosen on the validation split, "
        "never on test); ECE over 10 bins.",
        "- Localization on test scans with clot, on each scan's own voxel grid. Own threshold: Otsu over the scan's "
        "heatmap inside the search region (INSIGHT's authors' rule), or a fraction of the scan's maximum (CAM/Grad-CAM "
        "convention). The oracle column picks the threshold on the test split itself: an upper bound, not a result.",
        "- Embolus sensitivity (FROC): candidates are the connected regions above the method's own threshold, ranked "
        "by peak; an embolus is hit when a kept region overlaps it by >= 1 voxel (`insight.metrics.match_regions`), a "
        "region touching no embolus is a false positive, counted over all test scans. That rule is lenient with large "
        "regions: where Flagged mL/scan is in the hundreds, regions covering much of the chest are credited with every "
        "embolus they touch. The peak rule instead needs a region's peak within "
        f"{results['evaluation']['peak_tolerance_voxels']} voxel(s) of the clot.",
        "- Heatmaps of ABMIL and Grad-CAM are the attention / class-activation map divided by its maximum and "
        "multiplied by the scan probability. Model time: forward pass per volume on the listed device "
        "(for Grad-CAM plus its extra backward pass), preprocessing and I/O excluded "
        f"(shared preprocessing: {_seconds(results['preprocess_s_mean'])} per volume). The encoder's "
        "parameter-free part (same for every method) is computed once per volume and its time, "
        f"{_seconds(_fixed_s(results))}, is included in every method's model time.",
    ]
    return "\n".join(lines) + "\n"
