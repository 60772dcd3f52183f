"""What the false-positive regions of a segmentation lie on (uses the phantom truth; results on phantoms).

Usage: python false_positives.py SEGMENT_OUT PHANTOM_DIR [PHANTOM_DIR ...]

For every predicted region (26-connected) of ``insight segment`` masks that overlaps no clot, reports the
share of its voxels inside the artery mask, and the distance (mm) from its centroid to the nearest lymph
node centre and to the nearest flow-artifact centre of the phantom metadata. A region is called:
``lymph node`` (centroid within 12 mm of a node centre), ``flow artifact`` (within 15 mm of an artifact
centre), ``artery`` (at least half its voxels in the artery mask), else ``other``; the first that applies.
Writes ``false_positives.json`` into SEGMENT_OUT and prints the counts.
"""

from __future__ import annotations

import json
import logging
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from insight.metrics import label_components

logger = logging.getLogger("false_positives")
NODE_MM, FLOW_MM = 12.0, 15.0


def nearest_mm(point: np.ndarray, centres: list) -> float | None:
    return float(np.min(np.linalg.norm(np.asarray(centres) - point, axis=1))) if centres else None


def case_regions(pred_path: Path, truth_dir: Path, name: str) -> list[dict]:
    meta = json.loads((truth_dir / f"{name}.json").read_text())
    predicted_image = sitk.ReadImage(str(pred_path))
    predicted = sitk.GetArrayFromImage(predicted_image) != 0
    clot = sitk.GetArrayFromImage(sitk.ReadImage(str(truth_dir / f"{name}_clot.nii.gz"))) != 0
    artery = sitk.GetArrayFromImage(sitk.ReadImage(str(truth_dir / f"{name}_artery.nii.gz"))) != 0
    labels, n = label_components(predicted)
    nodes = meta["confounders"].get("lymph_node_centers_mm", [])
    flows = [f["center_mm"] for f in meta["confounders"]["flow_artifacts"] if "center_mm" in f]
    records = []
    for index in range(1, n + 1):
        region = labels == index
        if (region & clot).any():
            continue
        centre_zyx = ndimage.center_of_mass(region)
        centre = np.asarray(predicted_image.TransformContinuousIndexToPhysicalPoint(tuple(float(v) for v in centre_zyx[::-1])))
        in_artery = float((region & artery).sum() / region.sum())
        d_node, d_flow = nearest_mm(centre, nodes), nearest_mm(centre, flows)
        kind = ("lymph node" if d_node is not None and d_node <= NODE_MM else
                "flow artifact" if d_flow is not None and d_flow <= FLOW_MM else
                "artery" if in_artery >= 0.5 else "other")
        records.append({"case": name, "pe_scan": bool(clot.any()), "voxels": int(region.sum()), "in_artery": round(in_artery, 3),
                        "nearest_node_mm": d_node, "nearest_flow_mm": d_flow, "kind": kind})
    return records


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    seg_out = Path(argv[0])
    names = {case["name"] for case in json.loads((seg_out / "segment.json").read_text())["cases"]}
    records = []
    for folder in map(Path, argv[1:]):
        for meta_path in sorted((folder / "truth").glob("*.json")):
            if meta_path.stem in names:
                records += case_regions(seg_out / f"{meta_path.stem}.nii.gz", folder / "truth", meta_path.stem)
    counts = Counter(r["kind"] for r in records)
    logger.info("%d false-positive regions: %s", len(records), dict(counts))
    logger.info("in no-PE scans: %s", dict(Counter(r["kind"] for r in records if not r["pe_scan"])))
    (seg_out / "false_positives.json").write_text(json.dumps({"counts": dict(counts), "regions": records}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
