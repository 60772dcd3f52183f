"""Pulmonary emboli: filling defects of 20 to 90 HU inside the arterial lumen.

Three morphologies, each along a stretch of 5 to 40 mm of a main, lobar or segmental artery (the stretch
may continue into a daughter branch, as real clots do):

- ``occlusive``: fills the whole lumen over the stretch, with rounded (convex) ends;
- ``eccentric``: a blob against one wall, leaving a crescent of contrast on the other side;
- ``central``: the "polo mint" sign, a central defect with a rim of contrast all around.

The clot mask is exactly the set of voxels whose HU was replaced by clot, always inside the artery
lumen mask, before partial-volume blur and noise are applied.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from insight.phantom.anatomy import VoxelGrid
from insight.phantom.vessels import VesselPath, VesselTree, path_from

__all__ = ["CLOT_HU_RANGE", "EMBOLUS_KINDS", "EmbolusSpec", "draw_embolus", "insert_emboli"]

logger = logging.getLogger(__name__)

CLOT_HU_RANGE = (20.0, 90.0)
EMBOLUS_KINDS = ("occlusive", "eccentric", "central")
#: Where emboli sit: generation -> (probability, stretch length range in mm).
_SITES = {1: (0.25, (15.0, 40.0)), 2: (0.4, (8.0, 35.0)), 3: (0.35, (5.0, 20.0))}
#: Morphology probabilities per generation (small arteries are more often occluded).
_KIND_P = {1: (0.2, 0.45, 0.35), 2: (0.35, 0.4, 0.25), 3: (0.6, 0.3, 0.1)}


@dataclass
class EmbolusSpec:
    """One embolus in millimetres: a stretch [s_center - half_length, s_center + half_length] of ``path``.

    ``size_frac`` is the clot radius as a fraction of the lumen radius (eccentric/central), ``offset_dir``
    the wall an eccentric clot leans on, ``hu`` its CT number, ``wobble`` (amplitude, wavelength mm,
    phase) an irregularity of its outline.
    """

    kind: str
    generation: int
    branch: int
    branch_name: str
    path: VesselPath
    s_center: float
    half_length: float
    size_frac: float
    offset_dir: np.ndarray
    hu: float
    wobble: tuple[float, float, float]


def draw_embolus(tree: VesselTree, rng: np.random.Generator, bounds: tuple[np.ndarray, np.ndarray],
                 clot_hu_range: tuple[float, float] = CLOT_HU_RANGE, max_tries: int = 60) -> EmbolusSpec | None:
    """Draw one embolus whose centre lies inside the volume ``bounds`` (lo, hi mm); None if none fits."""
    gens = np.array(sorted(_SITES))
    p = np.array([_SITES[g][0] for g in gens])
    lo, hi = bounds
    for _ in range(max_tries):
        gen = int(rng.choice(gens, p=p / p.sum()))
        cands = [i for i, b in enumerate(tree.branches) if b.generation == gen]
        if not cands:
            continue
        bi = int(cands[rng.integers(len(cands))])
        length = float(rng.uniform(*_SITES[gen][1]))
        start_frac = float(rng.uniform(0.0, 0.8))
        s_start = start_frac * tree.branches[bi].length
        path = path_from(tree, bi, s_start + length + 2.0, rng)
        length = min(length, path.length - s_start - 1.0)
        if length < 4.0:
            continue
        s_center = s_start + 0.5 * length
        center, radius, tangent = path.point_at(s_center)
        if np.any(center < lo + 2.0) or np.any(center > hi - 2.0):
            continue
        kind = str(rng.choice(EMBOLUS_KINDS, p=_KIND_P[gen]))
        size = {"occlusive": 1.0, "eccentric": rng.uniform(0.5, 0.85), "central": rng.uniform(0.45, 0.7)}[kind]
        w = rng.normal(size=3)
        w -= (w @ tangent) * tangent
        return EmbolusSpec(kind, gen, bi, tree.branches[bi].name, path, s_center, 0.5 * length, float(size),
                           w / max(float(np.linalg.norm(w)), 1e-9), float(rng.uniform(*clot_hu_range)),
                           (float(rng.uniform(0.0, 0.18)), float(rng.uniform(6.0, 14.0)), float(rng.uniform(0, 2 * np.pi))))
    return None


def embolus_voxels(grid: VoxelGrid, spec: EmbolusSpec) -> tuple[tuple[slice, slice, slice], np.ndarray, np.ndarray] | None:
    """Voxels of the clot shape (not yet restricted to the lumen) and their HU.

    Returns (box, inside [bool, box shape], hu [float32, box shape]) or None if outside the grid.
    """
    path, sc, hl = spec.path, spec.s_center, spec.half_length
    rmax = float(path.radii.max())
    s_lo, s_hi = sc - hl - rmax, sc + hl + rmax
    keep = (path.arc >= s_lo - 15.0) & (path.arc <= s_hi + 15.0)
    pts = path.points[keep] if keep.sum() >= 2 else path.points
    pad = rmax + grid.voxel_mm
    box = grid.box(pts.min(axis=0) - pad, pts.max(axis=0) + pad)
    if box is None:
        return None
    zz, yy, xx = np.meshgrid(grid.zs[box[0]], grid.ys[box[1]], grid.xs[box[2]], indexing="ij")
    P = np.stack([xx.ravel(), yy.ravel(), zz.ravel()], axis=1).astype(np.float64)
    proj = path.project(P, s_lo, s_hi)
    s, r = proj["s"], proj["radius"]
    u = np.clip((s - sc) / hl, -1.0, 1.0)
    amp, lam, phase = spec.wobble
    profile = np.sqrt(np.clip(1.0 - u * u, 0.0, 1.0)) * (1.0 + amp * np.sin(2 * np.pi * s / lam + phase))
    profile[np.abs(s - sc) >= hl] = 0.0
    v = P - proj["axis"]
    if spec.kind == "occlusive":
        inside = proj["dist"] <= r * np.minimum(1.0, 1.4 * profile)
    elif spec.kind == "central":
        inside = proj["dist"] <= r * spec.size_frac * profile
    else:
        t = proj["tangent"]
        w = spec.offset_dir[None, :] - (t @ spec.offset_dir)[:, None] * t
        w /= np.maximum(np.linalg.norm(w, axis=1, keepdims=True), 1e-9)
        centre = w * (r * (1.0 - 0.6 * spec.size_frac))[:, None]
        inside = np.linalg.norm(v - centre, axis=1) <= r * spec.size_frac * profile
    hu = spec.hu + 5.0 * np.sin(2 * np.pi * s / 9.0 + 2.0 * phase)  # mild internal heterogeneity
    hu = np.clip(hu, CLOT_HU_RANGE[0], CLOT_HU_RANGE[1]).astype(np.float32)
    shape = xx.shape
    return box, inside.reshape(shape), hu.reshape(shape)


def insert_emboli(grid: VoxelGrid, image: np.ndarray, artery_lumen: np.ndarray, specs: list[EmbolusSpec],
                  clot_mask: np.ndarray) -> list[tuple[EmbolusSpec, int, np.ndarray]]:
    """Replace the HU of clot voxels in ``image`` and mark them in ``clot_mask`` (uint8 [z, y, x]).

    Only voxels inside ``artery_lumen`` are replaced. Returns (spec, new voxel count, centroid index
    [z, y, x] float) for each embolus that added at least one voxel.
    """
    placed = []
    for spec in specs:
        got = embolus_voxels(grid, spec)
        if got is None:
            continue
        box, inside, hu = got
        new = inside & artery_lumen[box] & (clot_mask[box] == 0)
        n = int(new.sum())
        if n == 0:
            continue
        image[box][new] = hu[new]
        clot_mask[box][new] = 1
        idx = np.argwhere(new).mean(axis=0) + np.array([b.start for b in box])
        placed.append((spec, n, idx))
    return placed
