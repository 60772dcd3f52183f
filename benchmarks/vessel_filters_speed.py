"""Speed of the fixed-feature encoders' parameter-free part, and of the two shortcuts inside vessel_filters.

Everything is timed in one run, on one input, with the same torch thread count, so compare the
ratios and not the seconds across machines. Prints a table and writes JSON (``--json``).

    python benchmarks/vessel_filters_speed.py --shape 80 100 116 --threads 1 --repeats 3

Measured variants:
- 3x3 symmetric eigenvalues of every voxel's Hessian: ``torch.linalg.eigvalsh`` against the closed
  form in :func:`insight.models.vessel_filters.symmetric_eigenvalues`;
- a 3 x 7 x 7 grey dilation: one ``max_pool3d`` box against three 1D passes (``_box_max``);
- the whole parameter-free part (``precompute``) of ``filter_bank`` and of ``vessel_filters``.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from insight.models.filter_bank import FilterBankEncoder
from insight.models.vessel_filters import VesselFilterEncoder, _box_max, symmetric_eigenvalues

logger = logging.getLogger("vessel_filters_speed")


def best_seconds(fn, repeats: int) -> float:
    """Fastest of ``repeats`` calls (seconds)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=(80, 100, 116), metavar=("Z", "Y", "X"),
                        help="model-grid volume size in voxels (default: a cropped 128x128x80 phantom)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(0)
    z, y, x = args.shape
    volume = torch.rand(1, 1, z, y, x, generator=generator)
    slices = torch.rand(z, 3, y, x, generator=generator)
    entries = [torch.randn(z, y, x, generator=generator) for _ in range(6)]
    matrices = torch.stack([torch.stack(row, -1) for row in (
        (entries[0], entries[3], entries[4]), (entries[3], entries[1], entries[5]), (entries[4], entries[5], entries[2]))], -2)

    figures = {
        "eigvalsh_s": best_seconds(lambda: torch.linalg.eigvalsh(matrices), args.repeats),
        "closed_form_eigenvalues_s": best_seconds(lambda: symmetric_eigenvalues(*entries), args.repeats),
        "box_max_3d_s": best_seconds(
            lambda: F.max_pool3d(F.pad(volume, (3, 3, 3, 3, 1, 1), mode="replicate"), (3, 7, 7), stride=1), args.repeats),
        "box_max_separable_s": best_seconds(lambda: _box_max(volume, (3, 7, 7)), args.repeats),
        "filter_bank_precompute_s": best_seconds(lambda: FilterBankEncoder(3, 8, 4).precompute(slices), args.repeats),
        "vessel_filters_precompute_s": best_seconds(lambda: VesselFilterEncoder(3, 8, 4).precompute(slices), args.repeats),
    }
    figures["eigenvalue_speedup"] = figures["eigvalsh_s"] / figures["closed_form_eigenvalues_s"]
    figures["box_max_speedup"] = figures["box_max_3d_s"] / figures["box_max_separable_s"]
    figures["vessel_filters_vs_filter_bank"] = figures["vessel_filters_precompute_s"] / figures["filter_bank_precompute_s"]
    result = {"shape_zyx": [z, y, x], "threads": args.threads, "repeats": args.repeats,
              "torch": torch.__version__, "figures": figures}
    for key, value in figures.items():
        logger.info("%-32s %8.3f%s", key, value, "x" if not key.endswith("_s") else " s")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
