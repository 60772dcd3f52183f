"""The benchmark's phantom splits: written once per (seed, n, phantom settings), reused on reruns.

Each split is an ordinary ``insight phantom`` folder (volumes, ``labels.csv``, ``truth/``), so the
same data can be fed to ``insight train`` and ``insight evaluate``. A ``benchmark_split.json``
manifest beside ``labels.csv`` records what was generated; a folder whose manifest differs from
the config is regenerated.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import multiprocessing
import shutil
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from insight.benchmark.config import SPLIT_NAMES, BenchmarkConfig, SplitSpec
from insight.errors import InputError
from insight.io.atomic import write_json_atomic, write_text_atomic
from insight.phantom import LABEL_COLUMNS, PhantomConfig, generate_case, write_case, write_dataset
from insight.phantom.generator import label_row  # the labels.csv row of a case, as write_dataset writes it

__all__ = ["MANIFEST_FILE", "write_split", "ensure_split", "ensure_splits", "split_summary"]

logger = logging.getLogger(__name__)

MANIFEST_FILE = "benchmark_split.json"


def _manifest(split: SplitSpec, phantom: PhantomConfig) -> dict[str, Any]:
    # through JSON so tuples compare equal to the lists read back from disk
    return json.loads(json.dumps({"seed": split.seed, "n": split.n, "phantom": dataclasses.asdict(phantom)}))


def _write_cases(folder: str, seed: int, indices: list[int], phantom: PhantomConfig) -> list[dict[str, Any]]:
    """Generate and write cases ``indices`` of ``seed`` (one worker's share); their metadata."""
    metas = []
    for index in indices:
        case = generate_case(seed, index, phantom)
        write_case(case, folder)
        metas.append(case.metadata)
    return metas


def write_split(folder: Path, split: SplitSpec, phantom: PhantomConfig, workers: int = 1,
                progress: bool = True) -> None:
    """Write cases ``0 .. n-1`` of ``split.seed`` and ``labels.csv`` into ``folder``, as ``insight phantom``
    does, with ``workers`` processes (cases are independent; the files are the same for any count)."""
    workers = max(1, min(int(workers), split.n))
    if workers == 1:
        write_dataset(folder, split.n, split.seed, phantom, progress=progress)
        return
    folder.mkdir(parents=True, exist_ok=True)
    shares = [list(range(k, split.n, workers)) for k in range(workers)]
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        done = pool.map(_write_cases, [str(folder)] * workers, [split.seed] * workers, shares, [phantom] * workers)
        metas = sorted((meta for share in done for meta in share), key=lambda meta: meta["index"])
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(LABEL_COLUMNS), lineterminator="\n")
    writer.writeheader()
    writer.writerows(label_row(meta) for meta in metas)
    write_text_atomic(folder / "labels.csv", buffer.getvalue())


def ensure_split(folder: Path, split: SplitSpec, phantom: PhantomConfig, progress: bool = True,
                 workers: int = 1) -> Path:
    """Make ``folder`` hold phantom cases ``0 .. n-1`` of ``split.seed``; returns ``folder``.

    Raises:
        InputError: ``folder`` exists, is not empty and was not written by the benchmark.
    """
    wanted = _manifest(split, phantom)
    manifest_path = folder / MANIFEST_FILE
    if manifest_path.is_file():
        try:
            found = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            found = None
        if found == wanted and (folder / "labels.csv").is_file():
            logger.info("reusing %d phantoms of seed %d in %s", split.n, split.seed, folder)
            return folder
        logger.info("%s holds other phantoms: generating again", folder)
        shutil.rmtree(folder)
    elif folder.exists() and any(folder.iterdir()):
        raise InputError(f"{folder} is not empty and was not written by insight benchmark; "
                         "use another --out or empty it")
    logger.info("generating %d phantoms of seed %d in %s (%d processes)", split.n, split.seed, folder, workers)
    write_split(folder, split, phantom, workers, progress)
    write_json_atomic(manifest_path, wanted)
    return folder


def ensure_splits(config: BenchmarkConfig, data_dir: Path, progress: bool = True,
                  workers: int = 1) -> dict[str, Path]:
    """Generate (or reuse) the train, val and test folders under ``data_dir`` (``workers`` processes).

    Raises:
        InputError: the train or test split lacks PE-positive or PE-negative scans.
    """
    folders = {name: ensure_split(data_dir / name, config.splits[name], config.phantom, progress, workers)
               for name in SPLIT_NAMES}
    for name, folder in folders.items():
        summary = split_summary(folder)
        if summary["n_pe"] in (0, summary["n"]):
            message = (f"the {name} split (seed {config.splits[name].seed}, n {summary['n']}) has "
                       f"{summary['n_pe']} PE-positive scans: it needs both classes; change its seed or n")
            if name == "val":
                logger.warning("%s (validation AUROC and thresholds chosen on it are undefined)", message)
            else:
                raise InputError(message)
    return folders


def split_summary(folder: Path) -> dict[str, int]:
    """``{"n": scans, "n_pe": PE-positive scans, "n_emboli": emboli}`` from a split's labels.csv."""
    with (folder / "labels.csv").open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    return {"n": len(rows), "n_pe": sum(int(r["pe"]) for r in rows),
            "n_emboli": sum(int(r.get("n_emboli") or 0) for r in rows)}
