"""The measured active-learning loop: a simulated annotation campaign on phantoms.

Scan labels -> INSIGHT heatmaps -> pseudo-masks -> segmentation (round 0), then rounds in which a
strategy picks ``k`` cases, a simulated clinician replaces their masks with the truth, and the model is
retrained; test Dice, per-embolus sensitivity and false positives per scan are recorded per round and
strategy, against random selection. Results on phantoms are results on phantoms.

Public API (imported lazily: ``import insight.campaign.config`` stays cheap)::

    from insight.campaign import load_campaign_config, run_campaign, write_campaign_outputs
    config = load_campaign_config("benchmarks/configs/campaign_small.json")
    results = run_campaign(config)
    write_campaign_outputs(results, "out/campaign")   # campaign.json, campaign_curves.png, campaign_summary.md
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "CampaignConfig": "config", "load_campaign_config": "config", "parse_campaign_config": "config",
    "run_campaign": "runner", "arm_names": "runner",
    "select_cases": "selection", "Selection": "selection",
    "write_campaign_outputs": "report", "strategy_curves": "report", "compare_with_random": "report",
    "RESULTS_FILE": "report", "PLOT_FILE": "report", "SUMMARY_FILE": "report",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
