"""``insight phantom``: write a synthetic CTPA data set with clot, artery and lung masks.

Results on phantoms are results on phantoms: they check the method, not clinical performance.
"""

from __future__ import annotations

import argparse
import logging
import math
from pathlib import Path

from insight.errors import InputError

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "phantom", help="generate synthetic CTPA phantoms with known clot masks",
        description="Write N synthetic CTPA volumes (<name>.nii.gz, int16 HU) with truth masks "
                    "(truth/<name>_clot|_artery|_lung.nii.gz) and labels.csv (columns image, pe, ...). "
                    "Deterministic for a seed.")
    parser.add_argument("--n", type=int, required=True, help="number of cases")
    parser.add_argument("--seed", type=int, default=0, help="data set seed (case i uses (seed, i))")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--shape", type=int, nargs=3, metavar=("X", "Y", "Z"),
                        help="volume size in voxels (default 128 128 80)")
    parser.add_argument("--spacing", type=float, nargs=3, metavar=("X", "Y", "Z"),
                        help="voxel size in mm (default: drawn per case, in-plane 2.2-2.8, slices 2.5-3.5)")
    parser.add_argument("--pe-fraction", type=float, default=0.5, help="probability that a case has emboli")
    parser.add_argument("--max-emboli", type=int, default=6, help="most emboli in a positive case")
    parser.add_argument("--preview", action="store_true", help="also write preview/<name>.png per case")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from insight.phantom import PhantomConfig, write_dataset  # heavy imports

    if args.n < 1:
        raise InputError(f"--n must be at least 1, got {args.n}")
    if args.seed < 0:
        raise InputError(f"--seed must be a non-negative integer, got {args.seed}")
    if args.spacing is not None and not all(math.isfinite(v) for v in args.spacing):
        raise InputError(f"--spacing must be finite numbers, got {args.spacing}")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} exists and is not a folder")
    kwargs = {"pe_fraction": args.pe_fraction, "max_emboli": args.max_emboli}
    if args.shape is not None:
        kwargs["shape_xyz"] = tuple(args.shape)
    if args.spacing is not None:
        kwargs["spacing_xyz"] = tuple(args.spacing)
    try:
        config = PhantomConfig(**kwargs)
    except ValueError as err:
        raise InputError(str(err)) from err
    metas = write_dataset(out, args.n, args.seed, config, progress=not args.no_progress, preview=args.preview)
    n_pos = sum(m["pe"] for m in metas)
    logger.info("phantom data set: %d cases, %d with PE, %d without, in %s", len(metas), n_pos, len(metas) - n_pos, out)
    return 0
