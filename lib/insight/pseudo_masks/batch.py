"""Pseudo-masks for many volumes: find inputs and heatmaps, write label volumes and a JSON summary.

Output folder layout (every file written atomically):

- ``<out>/<name>.nii.gz``: uint8 label volume on the image's exact grid (1 = PE), named like the
  image so the folder can be imported as a label folder (e.g. a MONAI Label tag ``pseudo``);
- ``<out>/pseudo_masks.json``: settings, per-case rounds and, with truth masks, Dice, per-embolus
  sensitivity and false positives per scan.
"""

from __future__ import annotations

import csv
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import SimpleITK as sitk

from insight import __version__
from insight.errors import InputError, InsightError
from insight.io import case_name, find_images, read_image, write_image, write_json_atomic
from insight.io.image_io import IMAGE_SUFFIXES
from insight.pseudo_masks.generator import PseudoMaskGenerator
from insight.pseudo_masks.measure import MaskScore, read_truth_mask, score_mask, summarize_scores

__all__ = ["SUMMARY_FILE", "check_output_folder", "expand_inputs", "find_heatmap", "read_scan_labels",
           "write_pseudo_masks"]

logger = logging.getLogger(__name__)

SUMMARY_FILE = "pseudo_masks.json"
#: Heatmap file names tried for a case, in order (``insight predict`` writes the first).
_HEATMAP_PATTERNS = ("{name}_heatmap{suffix}", "{name}{suffix}")


def expand_inputs(inputs: Sequence[str | os.PathLike]) -> list[Path]:
    """Files, DICOM series folders, and folders of volumes (their volumes, sorted) -> volume paths.

    Raises:
        InputError: an input does not exist, or nothing is left.
    """
    paths: list[Path] = []
    for item in inputs:
        path = Path(item)
        if not path.exists():
            raise InputError(f"input not found: {path}")
        volumes = find_images(path) if path.is_dir() else []
        paths.extend(volumes if volumes else [path])
    if not paths:
        raise InputError("no input volumes")
    names = [case_name(p) for p in paths]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise InputError(f"several inputs share a case name (outputs would collide): {', '.join(duplicates)}")
    return paths


def find_heatmap(heatmaps_dir: str | os.PathLike, name: str) -> Path | None:
    """``<dir>/<name>_heatmap.<ext>`` or ``<dir>/<name>.<ext>`` (first found), else None."""
    root = Path(heatmaps_dir)
    for pattern in _HEATMAP_PATTERNS:
        for suffix in IMAGE_SUFFIXES:
            candidate = root / pattern.format(name=name, suffix=suffix)
            if candidate.is_file():
                return candidate
    return None


def read_scan_labels(path: str | os.PathLike) -> dict[str, int]:
    """Weak labels from a CSV with columns ``image`` and ``pe`` (0/1): case name -> label.

    Raises:
        InputError: missing file or columns, or a label other than 0/1.
    """
    table = Path(path)
    if not table.is_file():
        raise InputError(f"label table not found: {table}")
    with table.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if not {"image", "pe"} <= set(reader.fieldnames or []):
            raise InputError(f"{table}: needs columns 'image' and 'pe', found {reader.fieldnames}")
        labels: dict[str, int] = {}
        for line, row in enumerate(reader, start=2):
            raw = (row.get("pe") or "").strip()
            if raw not in ("0", "1"):
                raise InputError(f"{table} line {line}: pe must be 0 or 1, got {raw!r}")
            labels[case_name((row.get("image") or "").strip())] = int(raw)
    return labels


def check_output_folder(out_dir: str | os.PathLike, inputs: Sequence[Path]) -> None:
    """Refuse an output folder that holds an input: outputs are named like their images.

    Raises:
        InputError: ``out_dir`` is the folder of one of ``inputs`` (symbolic links are not followed
            for the input itself, so a linked image is recognised by where the link lies).
    """
    out = Path(out_dir).resolve()
    for path in inputs:
        if out == Path(path).parent.resolve():
            raise InputError(f"--out {out_dir} holds the input {Path(path).name}: outputs are named like their "
                             "images, so write them to another folder")


def write_pseudo_masks(inputs: Sequence[Path], out_dir: str | os.PathLike, generator: PseudoMaskGenerator,
                       heatmaps_dir: str | os.PathLike | None = None, truth_dir: str | os.PathLike | None = None,
                       scan_labels: dict[str, int] | None = None,
                       extra_summary: dict[str, Any] | None = None) -> dict[str, Any]:
    """Make, write and (with ``truth_dir``) score a pseudo-mask for every input.

    A case whose heatmap file is missing uses the generator's model, if it has one. A case that fails
    (unreadable image, missing heatmap without a model, ...) is logged and listed under ``failures``;
    the others are still written.

    Returns:
        The summary written to ``<out_dir>/pseudo_masks.json``.

    Raises:
        InputError: ``out_dir`` is the folder of an input (see :func:`check_output_folder`).
    """
    out = Path(out_dir)
    check_output_folder(out, inputs)
    scan_labels = scan_labels or {}
    cases: list[dict[str, Any]] = []
    failures: list[dict[str, str]] = []
    scores: list[MaskScore] = []
    started = time.perf_counter()
    for path in inputs:
        name = case_name(path)
        try:
            record, score = _one_case(path, name, out, generator, heatmaps_dir, truth_dir, scan_labels.get(name))
        except InsightError as err:
            logger.error("%s: %s", name, err)
            failures.append({"name": name, "source": str(path), "error": str(err)})
            continue
        cases.append(record)
        if score is not None:
            scores.append(score)
    summary: dict[str, Any] = {
        "insight_version": __version__,
        "config": generator.config.to_dict(),
        "heatmaps_dir": str(heatmaps_dir) if heatmaps_dir else None,
        "truth_dir": str(truth_dir) if truth_dir else None,
        **(extra_summary or {}),
        "n_cases": len(cases),
        "seconds": round(time.perf_counter() - started, 2),
        "metrics": summarize_scores(scores) if scores else None,
        "cases": cases,
        "failures": failures,
    }
    write_json_atomic(out / SUMMARY_FILE, summary)
    return summary


def _one_case(path: Path, name: str, out: Path, generator: PseudoMaskGenerator, heatmaps_dir: str | os.PathLike | None,
              truth_dir: str | os.PathLike | None, scan_label: int | None) -> tuple[dict[str, Any], MaskScore | None]:
    image = read_image(path)
    heatmap, heatmap_source = None, "model"
    if scan_label != 0:
        heatmap_path = find_heatmap(heatmaps_dir, name) if heatmaps_dir else None
        if heatmap_path is not None:
            heatmap, heatmap_source = read_image(heatmap_path), str(heatmap_path)
        elif generator.heatmap_source is None:
            raise InputError(f"no heatmap for {name} in {heatmaps_dir} (expected {name}_heatmap.nii.gz) and no "
                             "--model to compute one")
    else:
        heatmap_source = None
    result = generator.generate(image, heatmap, scan_label=scan_label)
    mask_path = write_image(result.mask, out / f"{name}.nii.gz")
    record = {"name": name, "source": str(path), "mask": mask_path.name, "heatmap": heatmap_source,
              **result.to_json()}
    score = None
    if truth_dir is not None:
        truth = read_truth_mask(truth_dir, name, image)
        score = score_mask(sitk.GetArrayViewFromImage(result.mask), truth, name)
        record["score"] = score.to_dict()
    logger.info("%s: %d region(s), %.0f mm3%s", name, result.n_regions, result.volume_mm3,
                f", Dice {score.dice:.3f}, emboli hit {score.n_hit}/{score.n_emboli}, "
                f"false positives {score.n_false_positive_regions}" if score else "")
    return record, score
