"""Pulmonary arterial, venous and airway trees as polyline branches, and their rasterization.

Trees are grown in millimetres (body frame, see :mod:`.anatomy`) by territory splitting: each lobe's
random lung points are split (k-means, then halves along the principal axis) and every branch heads
for the centroid of its share, so the tree fills the lungs like a real one. Generations:

====  ===================  ====================  =============
gen   artery               radius (mm)           vein radius
====  ===================  ====================  =============
0     pulmonary trunk      13-15                 --
1     main (R/L PA)        10-12                 6-8 (PV trunk)
2     lobar                5-7                   4-5.5
3     segmental            2.5-4                 2.5-3.5
4     subsegmental         1.5-2.5               1.5-2.2
5-7   smaller              1.0-1.5 ... 0.55-0.8  about the same
====  ===================  ====================  =============

Real pulmonary vessels are not purely dichotomous, so short side branches ("twigs", radius 0.45-0.75 of
their parent's) are added along segmental and smaller vessels; emboli and flow artifacts never follow
them. Rasterization draws each tube segment (distance from a voxel centre to the segment, radius
linearly interpolated) only inside the segment's bounding box, with a one-voxel partial-volume ramp;
small segments are drawn in vectorized batches.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from insight.phantom.anatomy import LOBES, ChestAnatomy, Tube, VoxelGrid

__all__ = [
    "ARTERY_RADIUS_MM", "VEIN_RADIUS_MM", "Branch", "VesselTree", "SegmentSet", "TubeRaster",
    "build_artery_tree", "build_vein_tree", "build_airway_tree", "tubes_to_segments", "rasterize_segments",
    "paint_raster", "VesselPath", "path_from",
]

logger = logging.getLogger(__name__)

ARTERY_RADIUS_MM = {0: (13.0, 15.0), 1: (10.0, 12.0), 2: (5.0, 7.0), 3: (2.5, 4.0), 4: (1.5, 2.5), 5: (1.0, 1.5),
                    6: (0.75, 1.1), 7: (0.55, 0.8), 8: (0.45, 0.6)}
VEIN_RADIUS_MM = {1: (6.0, 8.0), 2: (4.0, 5.5), 3: (2.5, 3.5), 4: (1.5, 2.2), 5: (1.0, 1.4), 6: (0.75, 1.0),
                  7: (0.55, 0.75), 8: (0.45, 0.6)}
#: Segmental branches per lobe (RUL, RML, RLL, LUL, LLL).
SEGMENTS_PER_LOBE = {"RUL": 3, "RML": 2, "RLL": 5, "LUL": 4, "LLL": 4}
#: Name of the short side branches added along segmental and smaller vessels.
TWIG = "twig"
#: Longest straight piece a polyline is cut into before rasterization (mm): keeps bounding boxes tight.
MAX_SEGMENT_MM = 12.0
#: Fraction of the distance to the territory centroid a branch of this generation covers.
_LENGTH_FRACTION = {2: 0.42, 3: 0.85, 4: 0.95, 5: 0.95, 6: 0.95, 7: 0.95, 8: 0.95}
#: Longest branch of a generation (mm), so small branches do not cross half a lung.
_MAX_LENGTH_MM = {2: 40.0, 3: 60.0, 4: 45.0, 5: 35.0, 6: 28.0, 7: 22.0, 8: 18.0}


@dataclass
class Branch:
    """One vessel (or airway) branch: polyline points [K, 3] (mm) and radii [K] (mm)."""

    points: np.ndarray
    radii: np.ndarray
    generation: int
    parent: int = -1
    lobe: str = ""
    name: str = ""
    children: list[int] = field(default_factory=list)
    _arc: np.ndarray | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def arc_lengths(self) -> np.ndarray:
        """Cumulative arc length (mm) at each point, shape [K] (cached: points are not moved)."""
        if self._arc is None or len(self._arc) != len(self.points):
            d = np.diff(self.points, axis=0)
            self._arc = np.concatenate([[0.0], np.cumsum(np.sqrt((d * d).sum(axis=1)))])
        return self._arc

    @property
    def length(self) -> float:
        return float(self.arc_lengths[-1])


@dataclass
class SegmentSet:
    """Straight tube pieces: ends p0, p1 [N, 3] (mm), radii r0, r1 [N] (mm), owning branch [N],
    generation [N] and the arc length s0 [N] (mm) of p0 along its branch."""

    p0: np.ndarray
    p1: np.ndarray
    r0: np.ndarray
    r1: np.ndarray
    branch: np.ndarray
    generation: np.ndarray
    s0: np.ndarray

    def __len__(self) -> int:
        return len(self.r0)


@dataclass
class VesselTree:
    """A tree of :class:`Branch` (index 0 is a root; there may be several roots)."""

    kind: str
    branches: list[Branch] = field(default_factory=list)

    def add(self, branch: Branch) -> int:
        self.branches.append(branch)
        idx = len(self.branches) - 1
        if branch.parent >= 0:
            self.branches[branch.parent].children.append(idx)
        return idx

    def segments(self, max_len_mm: float = MAX_SEGMENT_MM) -> SegmentSet:
        """All branches cut into straight pieces no longer than ``max_len_mm``."""
        counts = np.array([len(b.points) for b in self.branches])
        pts = np.concatenate([b.points for b in self.branches]).astype(float)
        rad = np.concatenate([b.radii for b in self.branches]).astype(float)
        ends = np.cumsum(counts)
        first = ends - counts
        is_edge = np.ones(len(pts), dtype=bool)
        is_edge[ends - 1] = False  # an edge joins point j and j + 1 of the same branch
        ia = np.flatnonzero(is_edge)
        A, C = pts[ia], pts[ia + 1]
        seg_len = np.sqrt(((C - A) ** 2).sum(axis=1))
        branch_of_pt = np.repeat(np.arange(len(counts)), counts)
        BR = branch_of_pt[ia]
        csum = np.concatenate([[0.0], np.cumsum(seg_len)])
        SA = csum[:-1] - csum[np.searchsorted(ia, first[BR])]  # arc length of A along its own branch
        GEN = np.array([b.generation for b in self.branches])[BR]
        RA, RC = rad[ia], rad[ia + 1]
        n = np.maximum(1, np.ceil(seg_len / max_len_mm)).astype(int)
        e = np.repeat(np.arange(len(n)), n)
        j = np.arange(len(e)) - np.repeat(np.cumsum(n) - n, n)
        t0 = (j / n[e])[:, None]
        t1 = ((j + 1) / n[e])[:, None]
        d = (C - A)[e]
        return SegmentSet(A[e] + t0 * d, A[e] + t1 * d, RA[e] + t0[:, 0] * (RC - RA)[e], RA[e] + t1[:, 0] * (RC - RA)[e],
                          BR[e].astype(np.int32), GEN[e].astype(np.int16), SA[e] + t0[:, 0] * seg_len[e])


def tubes_to_segments(tubes: list[Tube], max_len_mm: float = MAX_SEGMENT_MM) -> tuple[SegmentSet, list[str]]:
    """Segments of a list of anatomy tubes; ``branch`` indexes the tube, whose kinds are returned."""
    tree = VesselTree("tubes", [Branch(t.points, np.asarray(t.radii, dtype=float), 0, name=t.name) for t in tubes])
    return tree.segments(max_len_mm), [t.kind for t in tubes]


# ---------------------------------------------------------------------- growing
def _curve(p: np.ndarray, q: np.ndarray, rng: np.random.Generator, bend: float = 0.12) -> np.ndarray:
    """A gently bent polyline from p to q (quadratic Bezier), shape [K, 3]."""
    d = q - p
    length = float(np.linalg.norm(d))
    if length < 1e-6:
        return np.stack([p, q])
    w = rng.normal(size=3)
    w -= (w @ d) / (d @ d) * d
    w /= max(float(np.linalg.norm(w)), 1e-9)
    ctrl = 0.5 * (p + q) + w * bend * length * rng.uniform(0.3, 1.0)
    n = int(np.clip(round(length / 7.0), 2, 6)) + 1
    t = np.linspace(0.0, 1.0, n)[:, None]
    return (1 - t) ** 2 * p + 2 * (1 - t) * t * ctrl + t ** 2 * q


def _curves(p: np.ndarray, q: np.ndarray, rng: np.random.Generator, bend: float, n_points: int) -> np.ndarray:
    """Gently bent polylines from p[i] to q[i] (quadratic Bezier), [B, n_points, 3]."""
    d = q - p
    dd = np.maximum((d * d).sum(axis=1, keepdims=True), 1e-12)
    w = rng.normal(size=p.shape)
    w -= (w * d).sum(axis=1, keepdims=True) / dd * d
    w /= np.maximum(np.linalg.norm(w, axis=1, keepdims=True), 1e-9)
    ctrl = 0.5 * (p + q) + w * bend * np.sqrt(dd) * rng.uniform(0.3, 1.0, size=(len(p), 1))
    t = np.linspace(0.0, 1.0, n_points)[None, :, None]
    return (1 - t) ** 2 * p[:, None] + 2 * (1 - t) * t * ctrl[:, None] + t ** 2 * q[:, None]


def _kmeans(pts: np.ndarray, k: int, rng: np.random.Generator, iters: int = 10) -> np.ndarray:
    """Labels [N] of a k-means clustering (farthest-point initialisation)."""
    centers = [pts[rng.integers(len(pts))]]
    for _ in range(1, k):
        d = np.min(np.linalg.norm(pts[:, None, :] - np.asarray(centers)[None], axis=2), axis=1)
        centers.append(pts[int(np.argmax(d))])
    c = np.asarray(centers)
    labels = np.zeros(len(pts), dtype=int)
    for _ in range(iters):
        labels = np.argmin(np.linalg.norm(pts[:, None, :] - c[None], axis=2), axis=1)
        for j in range(k):
            if np.any(labels == j):
                c[j] = pts[labels == j].mean(axis=0)
    return labels


def _split_halves(pts: np.ndarray) -> np.ndarray:
    """Labels [N] splitting points at the median of their principal axis."""
    centred = pts - pts.mean(axis=0)
    _, vecs = np.linalg.eigh(centred.T @ centred)
    proj = centred @ vecs[:, -1]
    return (proj > np.median(proj)).astype(int)


def _point_along(branch: Branch, frac: float) -> tuple[np.ndarray, float]:
    """Point and radius at a fraction of the branch's arc length."""
    arc = branch.arc_lengths
    s = frac * arc[-1]
    k = int(np.clip(np.searchsorted(arc, s) - 1, 0, len(arc) - 2))
    t = (s - arc[k]) / max(arc[k + 1] - arc[k], 1e-9)
    return branch.points[k] + t * (branch.points[k + 1] - branch.points[k]), float(
        branch.radii[k] + t * (branch.radii[k + 1] - branch.radii[k]))


@dataclass
class _Job:
    """Territory ``pts`` to be split into ``k`` child branches of generation ``gen`` leaving ``parent``."""

    parent: int
    start: np.ndarray
    pts: np.ndarray
    gen: int
    k: int
    lobe: str
    side_origins: bool = False


def _grow(tree: VesselTree, anat: ChestAnatomy, jobs: list[_Job], radius_mm: dict, max_gen: int,
          rng: np.random.Generator) -> None:
    """Grow all jobs breadth-first: split each territory, head for the centroids, check the ends
    against the lungs in one batch per generation, and queue the children."""
    while jobs:
        props = []  # (job, origin, end, sub)
        for job in jobs:
            if len(job.pts) < 2 * job.k or job.gen > max_gen:
                continue
            labels = _kmeans(job.pts, job.k, rng) if job.k > 2 else _split_halves(job.pts)
            for j in range(job.k):
                sub = job.pts[labels == j]
                if len(sub) < 3:
                    continue
                origin = job.start
                if job.side_origins and tree.branches[job.parent].length > 10:
                    origin, _ = _point_along(tree.branches[job.parent], rng.uniform(0.55, 1.0))
                target = sub.mean(axis=0)
                if job.gen == max_gen:
                    far = sub[int(np.argmax(np.linalg.norm(sub - origin, axis=1)))]
                    target = target + 0.5 * (far - target)
                vec = min(_LENGTH_FRACTION.get(job.gen, 0.6) * rng.uniform(0.85, 1.15), 1.0) * (target - origin)
                length = float(np.linalg.norm(vec))
                cap = _MAX_LENGTH_MM.get(job.gen, 60.0) * rng.uniform(0.8, 1.1)
                if length > cap:
                    vec *= cap / length
                props.append((job, origin, origin + vec, sub))
        if not props:
            return
        starts = np.array([p[1] for p in props])
        ends = np.array([p[2] for p in props])
        for _ in range(4):  # pull ends that left the lung back towards their origin
            bad = ~anat.lung_inside_points(ends)
            if not bad.any():
                break
            ends[bad] = starts[bad] + 0.6 * (ends[bad] - starts[bad])
        gen = props[0][0].gen  # breadth-first: one generation per round
        lo, hi = radius_mm[gen]
        radii = rng.uniform(lo, hi, size=len(props))
        n_pts = 4 if gen <= 4 else (3 if gen <= 6 else 2)
        polys = _curves(starts, ends, rng, 0.10, n_pts)
        taper = np.linspace(1.0, 0.9, n_pts)
        jobs = []
        for (job, _, _, sub), poly, end, r in zip(props, polys, ends, radii):
            idx = tree.add(Branch(poly, r * taper, gen, job.parent, job.lobe, f"{job.lobe}-g{gen}"))
            jobs.append(_Job(idx, end, sub, gen + 1, 2, job.lobe))


def _add_twigs(tree: VesselTree, anat: ChestAnatomy, rng: np.random.Generator, gens=(3, 4, 5, 6, 7),
               spacing_mm: float = 3.0, on_twigs: bool = False, min_parent_radius: float = 0.0) -> None:
    """Short side branches along segmental and smaller vessels (real arteries and veins are not purely
    dichotomous): about one per ``spacing_mm`` of parent length, leaving at 35-75 degrees, radius
    0.45-0.75 of the parent's (at least 0.5 mm), about 4-25 mm long; twigs leaving the lungs are
    dropped. With ``on_twigs`` the parents are earlier twigs instead of tree branches."""
    seg = tree.segments(max_len_mm=1e9)
    is_twig = np.array([b.name == TWIG for b in tree.branches])
    lengths = np.linalg.norm(seg.p1 - seg.p0, axis=1)
    branch_len = np.bincount(seg.branch, weights=lengths, minlength=len(tree.branches))
    frac_end = (seg.s0 + lengths) / np.maximum(branch_len[seg.branch], 1e-9)
    cand = np.isin(seg.generation, gens) & (frac_end > 0.15) & (is_twig[seg.branch] == on_twigs)
    cand &= np.maximum(seg.r0, seg.r1) >= min_parent_radius
    if not cand.any():
        return
    ci = np.flatnonzero(cand)
    n = int(rng.poisson(lengths[ci].sum() / spacing_mm))
    if n == 0:
        return
    k = ci[rng.choice(len(ci), size=n, p=lengths[ci] / lengths[ci].sum())]
    t = rng.uniform(0.0, 1.0, size=n)[:, None]
    D = seg.p1[k] - seg.p0[k]
    P = seg.p0[k] + t * D  # twig origins on the parent axis
    D /= np.maximum(np.linalg.norm(D, axis=1, keepdims=True), 1e-9)
    R = seg.r0[k] + t[:, 0] * (seg.r1[k] - seg.r0[k])
    w = rng.normal(size=P.shape)
    w -= (w * D).sum(axis=1, keepdims=True) * D
    w /= np.maximum(np.linalg.norm(w, axis=1, keepdims=True), 1e-9)
    ang = np.deg2rad(rng.uniform(35.0, 75.0, size=n))[:, None]
    u = np.cos(ang) * D + np.sin(ang) * w
    r_twig = np.clip(rng.uniform(0.45, 0.75, size=n) * R, 0.5, None)
    length = rng.uniform(6.0, 16.0, size=n) * np.clip(R / 1.5, 0.6, 1.6)
    E = P + u * length[:, None]
    ok = anat.lung_inside_points(E) & anat.lung_inside_points(0.5 * (P + E))
    parents, gens_out = seg.branch[k], seg.generation[k] + 1
    for j in np.flatnonzero(ok):
        b = int(parents[j])
        tree.add(Branch(np.stack([P[j], E[j]]), np.array([r_twig[j], 0.85 * r_twig[j]]), int(gens_out[j]), b,
                        tree.branches[b].lobe, TWIG))


def _lobe_points(points: np.ndarray, lobes: np.ndarray) -> dict[str, np.ndarray]:
    return {name: points[lobes == i] for i, name in enumerate(LOBES)}


def build_artery_tree(anat: ChestAnatomy, rng: np.random.Generator, points: np.ndarray, lobes: np.ndarray,
                      max_generation: int = 7) -> VesselTree:
    """The pulmonary arterial tree from the right ventricular outflow down to ``max_generation``.

    Args:
        points: random lung points [N, 3] (mm) used as territories; lobes: their lobe indices [N].
    """
    lm = anat.landmarks
    tree = VesselTree("artery")
    u = rng.uniform
    r_trunk = u(*ARTERY_RADIUS_MM[0])
    trunk = tree.add(Branch(lm["trunk"], np.array([r_trunk, r_trunk, 0.95 * r_trunk]), 0, name="trunk"))
    r_r, r_l = u(*ARTERY_RADIUS_MM[1]), u(*ARTERY_RADIUS_MM[1])
    rpa = tree.add(Branch(lm["rpa"], np.linspace(r_r, 0.85 * r_r, len(lm["rpa"])), 1, trunk, name="RPA"))
    lpa = tree.add(Branch(lm["lpa"], np.linspace(r_l, 0.85 * r_l, len(lm["lpa"])), 1, trunk, name="LPA"))
    by_lobe = _lobe_points(points, lobes)
    origins = {"RUL": (rpa, 0.72), "RML": (rpa, 1.0), "RLL": (rpa, 1.0), "LUL": (lpa, 0.55), "LLL": (lpa, 1.0)}
    jobs: list[_Job] = []
    for lobe, (parent, frac) in origins.items():
        pts = by_lobe[lobe]
        if len(pts) < 20:
            continue
        start, _ = _point_along(tree.branches[parent], frac)
        target = pts.mean(axis=0)
        dist = float(np.linalg.norm(target - start))
        length = np.clip(_LENGTH_FRACTION[2] * dist, 15.0, 40.0)
        end = start + (target - start) / max(dist, 1e-6) * length
        lo, hi = ARTERY_RADIUS_MM[2]
        r = u(lo, hi) if lobe not in ("RLL", "LLL") else u(0.5 * (lo + hi), hi)
        poly = _curve(start, end, rng, bend=0.08)
        idx = tree.add(Branch(poly, np.linspace(r, 0.88 * r, len(poly)), 2, parent, lobe, lobe))
        jobs.append(_Job(idx, end, pts, 3, SEGMENTS_PER_LOBE[lobe], lobe, side_origins=True))
    _grow(tree, anat, jobs, ARTERY_RADIUS_MM, max_generation, rng)
    _add_twigs(tree, anat, rng, gens=(3, 4), spacing_mm=2.0)
    _add_twigs(tree, anat, rng, gens=(5, 6, 7), spacing_mm=4.0)
    _add_twigs(tree, anat, rng, gens=(4, 5, 6, 7, 8), spacing_mm=4.0, on_twigs=True, min_parent_radius=0.9)
    logger.debug("artery tree: %d branches", len(tree.branches))
    return tree


def build_vein_tree(anat: ChestAnatomy, rng: np.random.Generator, points: np.ndarray, lobes: np.ndarray,
                    max_generation: int = 7) -> VesselTree:
    """Pulmonary veins: four trunks into the left atrium, draining the lobes (same territories idea)."""
    lm = anat.landmarks
    tree = VesselTree("vein")
    by_lobe = _lobe_points(points, lobes)
    drains = {"RSPV": ("RUL", "RML"), "RIPV": ("RLL",), "LSPV": ("LUL",), "LIPV": ("LLL",)}
    jobs: list[_Job] = []
    for name, lobe_names in drains.items():
        pts = np.concatenate([by_lobe[n] for n in lobe_names])
        if len(pts) < 20:
            continue
        start = lm["pv_ostia"][name]
        target = pts.mean(axis=0)
        dist = float(np.linalg.norm(target - start))
        end = start + (target - start) / max(dist, 1e-6) * np.clip(0.35 * dist, 15.0, 32.0)
        r = rng.uniform(*VEIN_RADIUS_MM[1])
        poly = _curve(start, end, rng, bend=0.08)
        idx = tree.add(Branch(poly, np.linspace(r, 0.9 * r, len(poly)), 1, -1, lobe_names[0], name))
        jobs.append(_Job(idx, end, pts, 2, 3 if len(lobe_names) > 1 else 2, lobe_names[0]))
    _grow(tree, anat, jobs, VEIN_RADIUS_MM, max_generation, rng)
    _add_twigs(tree, anat, rng, gens=(3, 4), spacing_mm=2.0)
    _add_twigs(tree, anat, rng, gens=(5, 6, 7), spacing_mm=4.0)
    _add_twigs(tree, anat, rng, gens=(4, 5, 6, 7, 8), spacing_mm=4.0, on_twigs=True, min_parent_radius=0.9)
    logger.debug("vein tree: %d branches", len(tree.branches))
    return tree


def build_airway_tree(anat: ChestAnatomy, rng: np.random.Generator, arteries: VesselTree) -> VesselTree:
    """Trachea, main, lobar and segmental bronchi; lobar/segmental bronchi run beside their arteries."""
    lm, s = anat.landmarks, anat.s
    tree = VesselTree("airway")
    tr = tree.add(Branch(lm["trachea"], np.full(len(lm["trachea"]), rng.uniform(8.0, 10.0) * s), 0, name="trachea"))
    rmb = tree.add(Branch(lm["rmb"], np.linspace(7.0, 6.3, len(lm["rmb"])) * s, 1, tr, name="RMB"))
    lmb = tree.add(Branch(lm["lmb"], np.linspace(6.0, 5.4, len(lm["lmb"])) * s, 1, tr, name="LMB"))
    lobar = {b.lobe: (i, b) for i, b in enumerate(arteries.branches) if b.generation == 2}
    offsets = {lobe: rng.normal(size=3) for lobe in LOBES}

    def beside(art: Branch, r_br: float, lobe: str) -> np.ndarray:
        d = art.points[-1] - art.points[0]
        d /= max(float(np.linalg.norm(d)), 1e-9)
        w = offsets[lobe] - (offsets[lobe] @ d) * d
        w /= max(float(np.linalg.norm(w)), 1e-9)
        return art.points[-1] + w * (art.radii[-1] + r_br + 0.15 * r_br + 1.0)

    parents = {"RUL": rmb, "LUL": lmb, "LLL": lmb}
    if "RLL" in lobar:
        start = tree.branches[rmb].points[-1]
        tgt = lobar["RLL"][1].points[0]
        end = start + 0.8 * (tgt - start) + np.array([0.0, 6.0 * s, -10.0])
        bi = tree.add(Branch(np.stack([start, end]), np.array([6.0, 5.5]) * s, 2, rmb, "RLL", "bronchus intermedius"))
        parents.update({"RML": bi, "RLL": bi})
    for lobe, (_, art) in lobar.items():
        if lobe not in parents:
            continue
        start = tree.branches[parents[lobe]].points[-1]
        r_lob = rng.uniform(3.5, 5.0) * s
        poly = _curve(start, beside(art, r_lob, lobe), rng, 0.05)
        lob = tree.add(Branch(poly, np.linspace(r_lob, 0.9 * r_lob, len(poly)), 2, parents[lobe], lobe,
                              f"{lobe} bronchus"))
        for c in art.children:
            seg_art = arteries.branches[c]
            if seg_art.name == TWIG:
                continue
            r_seg = float(np.clip(0.8 * seg_art.radii[0], 1.8, 3.2))
            poly = _curve(tree.branches[lob].points[-1], beside(seg_art, r_seg, lobe), rng, 0.06)
            tree.add(Branch(poly, np.linspace(r_seg, 0.85 * r_seg, len(poly)), 3, lob, lobe, f"{lobe} segmental bronchus"))
    return tree


# ---------------------------------------------------------------------- rasterization
@dataclass
class TubeRaster:
    """Rasterized tubes on a grid ([z, y, x] arrays).

    Attributes:
        occupancy: float32 in [0, 1], the partial-volume fraction of the nearest tube.
        lumen: bool, voxel centre inside some tube (distance <= radius).
        segment: int32, index of the segment with the highest occupancy, -1 where none.
    """

    occupancy: np.ndarray
    lumen: np.ndarray
    segment: np.ndarray


def _segment_occupancy(X, Y, Z, d, ra, rb, h, thin_k):
    """Occupancy and signed distance (mm) of voxel coordinates relative to segment(s).

    X, Y, Z: coordinates minus the segment start (broadcastable); d: segment vector(s);
    ra, rb: end radii. Works for one segment (scalars) or a batch (leading axis).
    """
    dd = d[0] * d[0] + d[1] * d[1] + d[2] * d[2]
    t = (X * d[0] + Y * d[1] + Z * d[2]) / np.maximum(dd, np.float32(1e-9))
    np.clip(t, 0.0, 1.0, out=t)
    ex, ey, ez = X - t * d[0], Y - t * d[1], Z - t * d[2]
    dist = np.sqrt(ex * ex + ey * ey + ez * ez)
    r = ra + t * (rb - ra)
    sd = dist - r
    o = np.clip(0.5 - sd / h, 0.0, 1.0) * np.minimum(1.0, thin_k * r * r)
    return o, sd


def rasterize_segments(grid: VoxelGrid, seg: SegmentSet, radius_add_mm: float = 0.0) -> TubeRaster:
    """Rasterize tube segments, each only inside its bounding box.

    Occupancy at a voxel is ``clip(0.5 - sd / h, 0, 1) * min(1, pi r^2 / h^2)`` with ``sd`` the signed
    distance to the tube surface (mm), ``r`` the local radius and ``h`` the mean voxel edge: a one-voxel
    partial-volume ramp, and thin tubes never reach full occupancy. Small segments are processed in
    vectorized batches of equal-sized boxes, large ones one by one.
    """
    shape = grid.shape_zyx
    occ = np.zeros(shape, dtype=np.float32)
    lumen = np.zeros(shape, dtype=bool)
    segid = np.full(shape, -1, dtype=np.int32)
    n = len(seg)
    if n == 0:
        return TubeRaster(occ, lumen, segid)
    xs, ys, zs = grid.xs, grid.ys, grid.zs
    h = np.float32(grid.voxel_mm)
    thin_k = np.float32(np.pi) / (h * h)
    r0 = np.maximum(seg.r0 + radius_add_mm, 0.0)
    r1 = np.maximum(seg.r1 + radius_add_mm, 0.0)
    pad = (np.maximum(r0, r1) + 0.5 * float(h))[:, None]
    lo_mm = np.minimum(seg.p0, seg.p1) - pad
    hi_mm = np.maximum(seg.p0, seg.p1) + pad
    origin = np.asarray(grid.origin_xyz)
    spacing = np.asarray(grid.spacing_xyz)
    dims_xyz = np.asarray(shape[::-1])
    lo_idx = np.maximum(np.ceil((lo_mm - origin) / spacing).astype(int), 0)
    hi_idx = np.minimum(np.floor((hi_mm - origin) / spacing).astype(int) + 1, dims_xyz)
    ext = hi_idx - lo_idx  # [n, 3] voxels per axis (x, y, z)
    live = np.all(ext > 0, axis=1)
    small = live & (ext.max(axis=1) <= 12)

    for i in np.flatnonzero(live & ~small):
        a, b = seg.p0[i], seg.p1[i]
        box = (slice(lo_idx[i, 2], hi_idx[i, 2]), slice(lo_idx[i, 1], hi_idx[i, 1]), slice(lo_idx[i, 0], hi_idx[i, 0]))
        X = xs[box[2]][None, None, :] - np.float32(a[0])
        Y = ys[box[1]][None, :, None] - np.float32(a[1])
        Z = zs[box[0]][:, None, None] - np.float32(a[2])
        o, sd = _segment_occupancy(X, Y, Z, (b - a).astype(np.float32), np.float32(r0[i]), np.float32(r1[i]), h, thin_k)
        sub = occ[box]
        upd = o > sub
        if upd.any():
            sub[upd] = o[upd]
            segid[box][upd] = i
        lumen[box] |= sd <= 0

    emax = ext.max(axis=1)
    prev = 0
    for cap in (3, 4, 5, 6, 8, 10, 12):  # buckets of similar box size waste little work
        ids = np.flatnonzero(small & (emax > prev) & (emax <= cap))
        prev = cap
        if ids.size:
            _rasterize_batched(grid, seg, ids, lo_idx, ext, r0, r1, occ, lumen, segid, h, thin_k)
    return TubeRaster(occ, lumen, segid)


def _rasterize_batched(grid, seg, ids, lo_idx, ext, r0, r1, occ, lumen, segid, h, thin_k, batch_voxels=2_000_000):
    """Rasterize small segments in batches of same-sized boxes; ties go to the highest occupancy."""
    nz, ny, nx = grid.shape_zyx
    xs, ys, zs = grid.xs, grid.ys, grid.zs
    kx, ky, kz = (int(min(ext[ids, k].max(), n)) for k, n in zip(range(3), (nx, ny, nz)))
    lo = lo_idx[ids].copy()
    lo[:, 0] = np.minimum(lo[:, 0], nx - kx)
    lo[:, 1] = np.minimum(lo[:, 1], ny - ky)
    lo[:, 2] = np.minimum(lo[:, 2], nz - kz)
    per = max(1, batch_voxels // (kx * ky * kz))
    occ_f, lumen_f, seg_f = occ.reshape(-1), lumen.reshape(-1), segid.reshape(-1)
    ax, ay, az = np.arange(kx), np.arange(ky), np.arange(kz)
    for c0 in range(0, len(ids), per):
        sel = ids[c0:c0 + per]
        L = lo[c0:c0 + per]
        ix = L[:, 0, None] + ax[None]  # [B, kx]
        iy = L[:, 1, None] + ay[None]
        iz = L[:, 2, None] + az[None]
        a = seg.p0[sel].astype(np.float32)
        d = (seg.p1[sel] - seg.p0[sel]).astype(np.float32)
        X = (xs[ix] - a[:, 0, None])[:, None, None, :]
        Y = (ys[iy] - a[:, 1, None])[:, None, :, None]
        Z = (zs[iz] - a[:, 2, None])[:, :, None, None]
        dv = [d[:, k, None, None, None] for k in range(3)]
        o, sd = _segment_occupancy(X, Y, Z, dv, r0[sel, None, None, None].astype(np.float32),
                                   r1[sel, None, None, None].astype(np.float32), h, thin_k)
        flat = ((iz[:, :, None, None] * ny + iy[:, None, :, None]) * nx + ix[:, None, None, :])
        inside = sd <= 0
        if inside.any():
            lumen_f[flat[inside]] = True
        keep = o > 0
        if not keep.any():
            continue
        f = flat[keep]
        v = o[keep]
        s_id = np.broadcast_to(sel[:, None, None, None], o.shape)[keep]
        order = np.lexsort((v, f))  # by voxel, then occupancy: the last of each voxel run is its maximum
        f, v, s_id = f[order], v[order], s_id[order]
        last = np.r_[f[1:] != f[:-1], True]
        f, v, s_id = f[last], v[last], s_id[last]
        better = v > occ_f[f]
        occ_f[f[better]] = v[better]
        seg_f[f[better]] = s_id[better]


def paint_raster(image: np.ndarray, raster: TubeRaster, hu_per_segment: np.ndarray | float,
                 where: np.ndarray | None = None) -> None:
    """Blend tube HU into ``image`` (float32 [z, y, x]) by occupancy: image = (1 - o) image + o HU.

    ``hu_per_segment`` is one HU per segment (indexed by ``raster.segment``) or a scalar; ``where``
    (bool, same shape) restricts the painting.
    """
    flat_occ = raster.occupancy.reshape(-1)
    idx = np.flatnonzero(flat_occ > 0)
    if where is not None:
        idx = idx[where.reshape(-1)[idx]]
    if idx.size == 0:
        return
    o = flat_occ[idx]
    if np.isscalar(hu_per_segment):
        val = np.float32(hu_per_segment)
    else:
        val = np.asarray(hu_per_segment, dtype=np.float32)[raster.segment.reshape(-1)[idx]]
    flat_img = image.reshape(-1)
    flat_img[idx] = flat_img[idx] * (1.0 - o) + val * o


# ---------------------------------------------------------------------- paths along the tree
@dataclass
class VesselPath:
    """A polyline following one branch and then descendants: points [K, 3] (mm), radii [K] (mm),
    cumulative arc length [K] (mm) and the tree branches it visits (in order)."""

    points: np.ndarray
    radii: np.ndarray
    arc: np.ndarray
    branches: list[int]

    @property
    def length(self) -> float:
        return float(self.arc[-1])

    def point_at(self, s: float) -> tuple[np.ndarray, float, np.ndarray]:
        """Point (mm), radius (mm) and unit tangent at arc length ``s``."""
        k = int(np.clip(np.searchsorted(self.arc, s) - 1, 0, len(self.arc) - 2))
        seg = self.arc[k + 1] - self.arc[k]
        t = float(np.clip((s - self.arc[k]) / max(seg, 1e-9), 0.0, 1.0))
        d = self.points[k + 1] - self.points[k]
        return (self.points[k] + t * d, float(self.radii[k] + t * (self.radii[k + 1] - self.radii[k])),
                d / max(float(np.linalg.norm(d)), 1e-9))

    def project(self, pts: np.ndarray, s_lo: float = -np.inf, s_hi: float = np.inf) -> dict[str, np.ndarray]:
        """Nearest path point for points [M, 3] (mm), using the path pieces that overlap [s_lo, s_hi].

        Returns a dict of arrays: ``s`` [M] arc length, ``dist`` [M] distance to the axis (mm), ``radius``
        [M] lumen radius there (mm), ``axis`` [M, 3] nearest axis point, ``tangent`` [M, 3] unit direction.
        """
        ks = np.flatnonzero((self.arc[1:] >= s_lo) & (self.arc[:-1] <= s_hi))
        if ks.size == 0:
            ks = np.arange(len(self.arc) - 1)
        a, b = self.points[ks], self.points[ks + 1]
        d = b - a
        dd = np.maximum((d * d).sum(axis=1), 1e-9)
        rel = pts[:, None, :] - a[None]
        t = np.clip((rel * d[None]).sum(axis=2) / dd[None], 0.0, 1.0)
        diff = rel - t[..., None] * d[None]
        dist = np.sqrt((diff * diff).sum(axis=2))
        j = np.argmin(dist, axis=1)
        rows = np.arange(len(pts))
        tj = t[rows, j]
        kj = ks[j]
        seg_len = np.sqrt(dd[j])
        return {
            "s": self.arc[kj] + tj * seg_len,
            "dist": dist[rows, j],
            "radius": self.radii[kj] + tj * (self.radii[kj + 1] - self.radii[kj]),
            "axis": a[j] + tj[:, None] * d[j],
            "tangent": d[j] / seg_len[:, None],
        }


def path_from(tree: VesselTree, branch: int, min_length_mm: float, rng: np.random.Generator) -> VesselPath:
    """A path starting at the origin of ``branch`` that continues into children (wider ones more
    likely) until it is at least ``min_length_mm`` long or reaches a terminal branch."""
    b = tree.branches[branch]
    pts, radii, visited = [b.points], [b.radii], [branch]
    total = b.length
    cur = branch
    while total < min_length_mm and tree.branches[cur].children:
        kids = [c for c in tree.branches[cur].children if tree.branches[c].name != TWIG]
        if not kids:
            break
        w = np.array([tree.branches[c].radii[0] ** 2 for c in kids])
        nxt = int(kids[rng.choice(len(kids), p=w / w.sum())])
        child = tree.branches[nxt]
        last = pts[-1]
        cut = int(np.argmin(np.linalg.norm(last - child.points[0], axis=1)))  # side branches leave mid-parent
        pts[-1], radii[-1] = last[: cut + 1], radii[-1][: cut + 1]
        pts.append(child.points[1:] if np.allclose(pts[-1][-1], child.points[0]) else child.points)
        radii.append(child.radii[1:] if len(pts[-1]) < len(child.points) else child.radii)
        visited.append(nxt)
        cur = nxt
        total = float(np.sum(np.linalg.norm(np.diff(np.concatenate(pts), axis=0), axis=1)))
    P = np.concatenate(pts)
    R = np.concatenate(radii)
    arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(P, axis=0), axis=1))])
    return VesselPath(P, R, arc, visited)
