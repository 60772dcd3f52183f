"""Confounders that appear in PE-positive and PE-negative phantoms with the same probabilities.

- flow/mixing artifact: a poorly enhanced stretch of artery (down to 120-220 HU) with a smooth
  Gaussian profile along the vessel, unlike the sharp edges of a clot;
- streaks from dense contrast in the superior vena cava: alternating bright/dark lines radiating
  in the axial plane from the dense vessel;
- lymph nodes: 20-60 HU ellipsoids of 4-12 mm touching the outside wall of hilar/mediastinal arteries;
- partial-volume blur (Gaussian, sigma per scan) and image noise (SD 8-35 HU, optionally correlated).

All geometry is in millimetres (body frame); arrays are [z, y, x] float32 HU.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from insight.phantom.anatomy import Ellipsoid, VoxelGrid, _frame
from insight.phantom.vessels import SegmentSet, VesselPath, VesselTree, path_from

__all__ = [
    "FlowArtifact", "LymphNode", "StreakArtifact", "draw_flow_artifact", "flow_artifact_hu", "draw_lymph_nodes",
    "paint_lymph_nodes", "draw_streaks", "add_streaks", "apply_blur", "add_noise",
]

logger = logging.getLogger(__name__)

FLOW_MIN_HU_RANGE = (120.0, 220.0)
#: Distance (mm) outside the path's lumen over which a flow artifact fades out in adjacent branches.
_FLOW_FADE_MM = 8.0
LYMPH_NODE_HU_RANGE = (20.0, 60.0)
LYMPH_NODE_DIAMETER_MM = (4.0, 12.0)


# ---------------------------------------------------------------------- flow / mixing artifact
@dataclass
class FlowArtifact:
    """Poor enhancement along ``path``: HU falls towards ``min_hu`` as exp(-((s - s_center) / width)^2)."""

    path: VesselPath
    s_center: float
    width_mm: float
    min_hu: float
    generation: int

    def bounds_mm(self) -> tuple[np.ndarray, np.ndarray]:
        """Box (mm) holding every voxel the artifact can touch."""
        near = np.abs(self.path.arc - self.s_center) <= 3.0 * self.width_mm + 5.0
        pts = self.path.points[near] if near.sum() >= 2 else self.path.points
        pad = float(self.path.radii.max()) + _FLOW_FADE_MM + 2.0
        return pts.min(axis=0) - pad, pts.max(axis=0) + pad


def draw_flow_artifact(tree: VesselTree, rng: np.random.Generator, bounds: tuple[np.ndarray, np.ndarray],
                       max_tries: int = 40) -> FlowArtifact | None:
    """A mixing artifact in the trunk, a main, lobar or segmental artery, centred inside ``bounds``."""
    gens, p = np.array([0, 1, 2, 3]), np.array([0.15, 0.35, 0.3, 0.2])
    lo, hi = bounds
    for _ in range(max_tries):
        gen = int(rng.choice(gens, p=p))
        cands = [i for i, b in enumerate(tree.branches) if b.generation == gen]
        if not cands:
            continue
        bi = int(cands[rng.integers(len(cands))])
        width = float(rng.uniform(8.0, 20.0))
        path = path_from(tree, bi, 3.0 * width + 10.0, rng)
        s_center = float(rng.uniform(0.2, 0.8) * path.length)
        centre, _, _ = path.point_at(s_center)
        if np.any(centre < lo) or np.any(centre > hi):
            continue
        return FlowArtifact(path, s_center, width, float(rng.uniform(*FLOW_MIN_HU_RANGE)), gen)
    return None


def flow_artifact_hu(points_mm: np.ndarray, hu: np.ndarray, artifact: FlowArtifact) -> np.ndarray:
    """Lowered HU (float32 [M]) for artery voxels at ``points_mm`` [M, 3] with contrast ``hu`` [M].

    The weight is a Gaussian of the arc length along the path times a fade over ``_FLOW_FADE_MM``
    outside the path's lumen, so neighbouring branches (same blood) change smoothly too.
    """
    s_lo = artifact.s_center - 3.0 * artifact.width_mm
    s_hi = artifact.s_center + 3.0 * artifact.width_mm
    proj = artifact.path.project(points_mm, s_lo, s_hi)
    g = np.exp(-(((proj["s"] - artifact.s_center) / artifact.width_mm) ** 2))
    g *= np.clip(1.0 - (proj["dist"] - proj["radius"]) / _FLOW_FADE_MM, 0.0, 1.0)
    return (hu - (hu - np.minimum(hu, artifact.min_hu)) * g).astype(np.float32)


# ---------------------------------------------------------------------- lymph nodes
@dataclass
class LymphNode:
    """A soft-tissue ellipsoid (mm) of ``hu`` HU; ``touching`` is the artery branch it abuts (-1: none)."""

    ellipsoid: Ellipsoid
    hu: float
    touching: int


def draw_lymph_nodes(tree: VesselTree, rng: np.random.Generator, n: int, bounds: tuple[np.ndarray, np.ndarray],
                     avoid: SegmentSet | None = None) -> list[LymphNode]:
    """``n`` nodes touching the outside wall of main/lobar/segmental arteries (hilar, mediastinal).

    ``avoid``: tube segments (e.g. all arteries) the node must not overlap, so it stays visible.
    """
    gens, p = np.array([1, 2, 3]), np.array([0.35, 0.4, 0.25])
    lo, hi = bounds
    nodes: list[LymphNode] = []
    for _ in range(20 * max(n, 1)):
        if len(nodes) >= n:
            break
        gen = int(rng.choice(gens, p=p))
        cands = [i for i, b in enumerate(tree.branches) if b.generation == gen]
        if not cands:
            continue
        bi = int(cands[rng.integers(len(cands))])
        br = tree.branches[bi]
        path = VesselPath(br.points, br.radii, br.arc_lengths, [bi])
        axis, radius, tangent = path.point_at(rng.uniform(0.1, 0.9) * path.length)
        w = rng.normal(size=3)
        w -= (w @ tangent) * tangent
        w /= max(float(np.linalg.norm(w)), 1e-9)
        axes = rng.uniform(*LYMPH_NODE_DIAMETER_MM, size=3) / 2.0
        rot = _frame(rng.normal(size=3))
        # half-extent of the ellipsoid along w, so that it just touches the vessel wall
        half_w = float(np.sqrt(np.sum((rot.T @ w) ** 2 * axes ** 2)))
        centre = axis + w * (radius + 0.9 * half_w)
        if np.any(centre < lo) or np.any(centre > hi):
            continue
        if avoid is not None and _clearance(centre, avoid) < 0.8 * float(axes.min()):
            continue
        nodes.append(LymphNode(Ellipsoid(centre, rot, axes), float(rng.uniform(*LYMPH_NODE_HU_RANGE)), bi))
    return nodes


def _clearance(point: np.ndarray, seg: SegmentSet) -> float:
    """Smallest distance (mm) from ``point`` to the surface of any tube segment (negative inside)."""
    d = seg.p1 - seg.p0
    t = np.clip(((point - seg.p0) * d).sum(axis=1) / np.maximum((d * d).sum(axis=1), 1e-9), 0.0, 1.0)
    dist = np.linalg.norm(seg.p0 + t[:, None] * d - point, axis=1)
    return float(np.min(dist - (seg.r0 + t * (seg.r1 - seg.r0))))


def paint_lymph_nodes(grid: VoxelGrid, image: np.ndarray, nodes: list[LymphNode], artery_lumen: np.ndarray) -> None:
    """Paint nodes (partial-volume edge) everywhere except inside the artery lumen."""
    h = grid.voxel_mm
    for node in nodes:
        e = node.ellipsoid
        lo, hi = e.bbox()
        box = grid.box(lo - h, hi + h)
        if box is None:
            continue
        lvl = e.level(grid.xs[box[2]][None, None, :], grid.ys[box[1]][None, :, None], grid.zs[box[0]][:, None, None])
        occ = np.clip((1.0 - np.sqrt(lvl)) * float(e.axes.min()) / h + 0.5, 0.0, 1.0).astype(np.float32)
        occ[artery_lumen[box]] = 0.0
        sub = image[box]
        sub[...] = sub * (1.0 - occ) + np.float32(node.hu) * occ


# ---------------------------------------------------------------------- streaks
@dataclass
class StreakArtifact:
    """Radiating streaks from a dense vessel: per z band, line angles [K] and signed amplitudes [K] (HU)."""

    source: VesselPath
    z_range: tuple[float, float]
    bands: list[tuple[np.ndarray, np.ndarray]]
    width_mm: float
    decay_mm: float


def draw_streaks(source: VesselPath, rng: np.random.Generator, n_bands: int = 6) -> StreakArtifact:
    """Streaks from the dense superior vena cava (``source`` is its axis)."""
    z_hi = float(source.points[:, 2].max())
    z_lo = float(source.points[:, 2].min()) + 10.0
    bands = []
    k = int(rng.integers(6, 13))
    base = rng.uniform(0, np.pi, size=k)
    for _ in range(n_bands):
        ang = base + rng.normal(0.0, 0.08, size=k)
        amp = rng.uniform(60.0, 220.0, size=k) * np.where(np.arange(k) % 2 == 0, 1.0, -1.0)
        bands.append((ang, amp))
    return StreakArtifact(source, (z_lo, z_hi), bands, float(rng.uniform(0.7, 1.3)), float(rng.uniform(40.0, 90.0)))


def add_streaks(grid: VoxelGrid, image: np.ndarray, streak: StreakArtifact) -> None:
    """Add the streak pattern to ``image`` in place (float32 HU [z, y, x])."""
    zs, xs, ys = grid.zs, grid.xs, grid.ys
    z_lo, z_hi = streak.z_range
    weight = np.clip(np.minimum(zs - z_lo, z_hi - zs) / 12.0, 0.0, 1.0)
    live = np.flatnonzero(weight > 0)
    if live.size == 0:
        return
    width = max(streak.width_mm, 0.45 * min(grid.spacing_xyz[:2]))
    edges = np.linspace(z_lo, z_hi, len(streak.bands) + 1)
    X, Y = xs[None, :], ys[:, None]
    for b, (ang, amp) in enumerate(streak.bands):
        in_band = live[(zs[live] >= edges[b]) & (zs[live] <= edges[b + 1])]
        if in_band.size == 0:
            continue
        zmid = float(np.mean(zs[in_band]))
        # source position: the path point nearest to this height
        j = int(np.argmin(np.abs(streak.source.points[:, 2] - zmid)))
        sx, sy = streak.source.points[j, 0], streak.source.points[j, 1]
        dx, dy = X - np.float32(sx), Y - np.float32(sy)
        rr = np.sqrt(dx * dx + dy * dy)
        field2d = np.zeros((len(ys), len(xs)), dtype=np.float32)
        for a, m in zip(ang, amp):
            perp = np.abs(dx * np.float32(np.sin(a)) - dy * np.float32(np.cos(a)))
            field2d += np.float32(m) * np.exp(-0.5 * (perp / np.float32(width)) ** 2)
        field2d *= np.exp(-rr / np.float32(streak.decay_mm)) * np.clip(rr / 12.0, 0.0, 1.0)
        image[in_band] += weight[in_band, None, None].astype(np.float32) * field2d[None]


# ---------------------------------------------------------------------- blur and noise
def apply_blur(image: np.ndarray, sigma_mm: float, spacing_xyz: tuple[float, float, float]) -> np.ndarray:
    """Gaussian partial-volume blur of ``sigma_mm`` (isotropic in mm); returns a new float32 array."""
    sigma_vox = [sigma_mm / spacing_xyz[2], sigma_mm / spacing_xyz[1], sigma_mm / spacing_xyz[0]]
    return ndimage.gaussian_filter(image, sigma=sigma_vox, truncate=3.0, mode="nearest")


def add_noise(image: np.ndarray, sd_hu: float, rng: np.random.Generator, correlation_vox: float = 0.0) -> None:
    """Add Gaussian noise of standard deviation ``sd_hu`` in place; in-plane correlated if
    ``correlation_vox`` > 0 (Gaussian kernel sigma in voxels), rescaled to keep the SD."""
    nz = image.shape[0]
    step = 32
    for z0 in range(0, nz, step):
        chunk = rng.standard_normal(image[z0:z0 + step].shape, dtype=np.float32)
        if correlation_vox > 0:
            chunk = ndimage.gaussian_filter(chunk, sigma=(0.0, correlation_vox, correlation_vox), truncate=3.0)
            chunk *= np.float32(1.0 / _filtered_noise_sd(correlation_vox, 3.0))
        image[z0:z0 + step] += np.float32(sd_hu) * chunk


def _filtered_noise_sd(sigma: float, truncate: float) -> float:
    """SD of unit white noise after scipy's 2D separable Gaussian filter (exact, from the kernel)."""
    radius = int(truncate * sigma + 0.5)
    x = np.arange(-radius, radius + 1, dtype=float)
    k = np.exp(-0.5 * (x / sigma) ** 2)
    k /= k.sum()
    return float(np.sum(k * k))  # (sqrt(sum k^2))^2 for two axes
