"""The benchmark's figures: ROC, FROC and a montage of overlays.

Rendered with matplotlib's ``Figure`` directly (the Agg canvas; no pyplot state, no display), each
written atomically as PNG.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from sklearn.metrics import roc_curve

from insight.benchmark.evaluation import MontageCase
from insight.io.atomic import atomic_output

__all__ = ["plot_roc", "plot_froc", "plot_montage"]

logger = logging.getLogger(__name__)

_PHANTOM_NOTE = "synthetic phantoms"


def _save(fig: Figure, path: Path) -> Path:
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    return path


def plot_roc(methods: list[dict[str, Any]], path: Path) -> Path:
    """Test-split ROC curve of every method (from its per-case labels and probabilities)."""
    fig = Figure(figsize=(5.5, 5))
    ax = fig.subplots()
    for method in methods:
        labels = np.array([c["label"] for c in method["cases"]])
        probs = np.array([c["probability"] for c in method["cases"]])
        if np.unique(labels).size < 2:
            continue
        fpr, tpr, _ = roc_curve(labels, probs)
        auroc = method["classification"]["auroc"]
        ax.plot(fpr, tpr, label=f"{method['name']} (AUROC {auroc:.3f})")
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1, label="chance")
    ax.set(xlabel="1 - specificity", ylabel="sensitivity", xlim=(0, 1), ylim=(0, 1.01),
           title=f"ROC, test split ({_PHANTOM_NOTE})")
    ax.legend(loc="lower right", fontsize=8)
    return _save(fig, path)


def plot_froc(methods: list[dict[str, Any]], fp_rates: list[float], path: Path) -> Path:
    """Per-embolus sensitivity against false-positive regions per scan (overlap rule), log x axis."""
    fig = Figure(figsize=(6, 5))
    ax = fig.subplots()
    low, high = min(fp_rates) / 4, max(fp_rates) * 4
    for method in methods:
        curve = method["froc"]["overlap"]["curve"]
        fp = np.maximum(np.asarray(curve["fp_per_scan"], dtype=float), low)
        sens = np.asarray([np.nan if s is None else s for s in curve["sensitivity"]], dtype=float)
        ax.plot(np.append(fp, high), np.append(sens, sens[-1]), drawstyle="steps-post", label=method["name"])
    for rate in fp_rates:
        ax.axvline(rate, color="grey", linestyle=":", linewidth=0.8)
    ax.set_xscale("log")
    ax.set(xlabel="false-positive regions per scan", ylabel="per-embolus sensitivity", xlim=(low, high),
           ylim=(0, 1.01), title=f"FROC, test split ({_PHANTOM_NOTE})")
    ax.legend(loc="upper left", fontsize=8)
    return _save(fig, path)


def plot_montage(cases: list[MontageCase], methods: list[dict[str, Any]], path: Path) -> Path:
    """Rows: PE-positive test scans (their slice with most clot); columns: the CT, then each method's
    heatmap (0 to 1, hidden below 0.02) with the clot outlined in cyan."""
    names = [m["name"] for m in methods]
    probability = {m["name"]: {c["name"]: c["probability"] for c in m["cases"]} for m in methods}
    rows = max(1, len(cases))
    fig = Figure(figsize=(2.4 * (len(names) + 1), 2.5 * rows))
    axes = fig.subplots(rows, len(names) + 1, squeeze=False)
    image = None
    for r, case in enumerate(cases):
        aspect = case.spacing_yx[0] / case.spacing_yx[1]
        for c, name in enumerate([None, *names]):
            ax = axes[r][c]
            ax.imshow(case.ct, cmap="gray", vmin=0, vmax=1, aspect=aspect, interpolation="nearest")
            if name is not None:
                heat = np.ma.masked_less(case.heatmaps[name], 0.02)
                image = ax.imshow(heat, cmap="inferno", vmin=0, vmax=1, alpha=0.65, aspect=aspect,
                                  interpolation="nearest")
                ax.set_title(f"{name}\np(PE) {probability[name].get(case.name, float('nan')):.2f}", fontsize=8)
            else:
                ax.set_title(f"{case.name}\nslice {case.slice_index}", fontsize=8)
            if case.clot.any():
                ax.contour(case.clot.astype(float), levels=[0.5], colors="cyan", linewidths=0.8)
            ax.set_axis_off()
    if not cases:
        axes[0][0].text(0.5, 0.5, "no PE-positive test scans", ha="center", va="center")
        for ax in axes[0]:
            ax.set_axis_off()
    if image is not None:
        fig.colorbar(image, ax=axes, shrink=0.6, label="heatmap")
    fig.suptitle(f"Heatmaps on test scans, clot outlined ({_PHANTOM_NOTE})", fontsize=10)
    return _save(fig, path)
