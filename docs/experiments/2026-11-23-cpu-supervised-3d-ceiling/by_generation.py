"""Per-embolus sensitivity of a segmentation by artery generation and clot kind (uses the truth masks).

Usage: python by_generation.py SEGMENT_OUT PHANTOM_DIR [PHANTOM_DIR ...]

SEGMENT_OUT is an ``insight segment --truth`` output folder (``<name>.nii.gz`` masks and ``segment.json``);
each PHANTOM_DIR is an ``insight phantom`` folder whose ``truth/`` holds ``<name>_clot.nii.gz`` and
``<name>.json`` (emboli with generation, kind and centroid in mm). Each embolus of the metadata is
matched to the truth component (26-connected) whose centroid is nearest its own; it is hit when the
predicted mask overlaps that component by at least one voxel, the rule of ``insight.metrics.embolus_hits``.
Prints a table and writes ``by_generation.json`` into SEGMENT_OUT. Results on phantoms.
"""

from __future__ import annotations

import json
import logging
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from insight.metrics import label_components

logger = logging.getLogger("by_generation")


def component_centroids_mm(labels: np.ndarray, n: int, image: sitk.Image) -> np.ndarray:
    """Centroid (mm, LPS x, y, z) of each component 1..n of ``labels`` [z, y, x] -> [n, 3]."""
    centres_zyx = ndimage.center_of_mass(labels > 0, labels, range(1, n + 1))
    return np.array([image.TransformContinuousIndexToPhysicalPoint(tuple(float(v) for v in c[::-1]))
                     for c in centres_zyx]).reshape(n, 3)


def case_emboli(pred_path: Path, truth_dir: Path, name: str) -> list[dict]:
    """One record per embolus of case ``name``: generation, kind, n_voxels, hit."""
    meta = json.loads((truth_dir / f"{name}.json").read_text())
    if not meta["emboli"]:
        return []
    truth_image = sitk.ReadImage(str(truth_dir / f"{name}_clot.nii.gz"))
    labels, n = label_components(sitk.GetArrayFromImage(truth_image) != 0)
    predicted = sitk.GetArrayFromImage(sitk.ReadImage(str(pred_path))) != 0
    centres = component_centroids_mm(labels, n, truth_image)
    hit_labels = set(np.unique(labels[predicted & (labels > 0)]).tolist())
    records = []
    for embolus in meta["emboli"]:
        nearest = int(np.argmin(np.linalg.norm(centres - np.asarray(embolus["centroid_mm"]), axis=1))) + 1
        records.append({"case": name, "generation": embolus["generation"], "kind": embolus["kind"],
                        "n_voxels": embolus.get("n_voxels"), "hit": nearest in hit_labels})
    return records


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    seg_out, phantom_dirs = Path(argv[0]), [Path(p) for p in argv[1:]]
    names = {json_case["name"] for json_case in json.loads((seg_out / "segment.json").read_text())["cases"]}
    records = []
    for folder in phantom_dirs:
        for meta_path in sorted((folder / "truth").glob("*.json")):
            name = meta_path.stem
            if name in names:
                records += case_emboli(seg_out / f"{name}.nii.gz", folder / "truth", name)
    table = defaultdict(lambda: [0, 0])
    for r in records:
        for key in (f"generation {r['generation']}", f"kind {r['kind']}", "all"):
            table[key][0] += r["hit"]
            table[key][1] += 1
    summary = {key: {"hit": h, "n": n, "sensitivity": round(h / n, 4)} for key, (h, n) in sorted(table.items())}
    for key, row in summary.items():
        logger.info("%-20s %3d / %3d  %.2f", key, row["hit"], row["n"], row["sensitivity"])
    (seg_out / "by_generation.json").write_text(json.dumps({"summary": summary, "emboli": records}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
