"""Chest anatomy of the synthetic CTPA phantom: the voxel grid and the analytic (implicit) tissues.

Everything here is defined in millimetres in a *body frame*: x towards the patient's Left, y towards
Posterior, z towards Superior (LPS axes), x = y = 0 at the centre of the body outline and z = 0 at the
tracheal carina. Patient (LPS) coordinates are body-frame coordinates plus a per-case table offset in z,
so the same random draws give the same anatomy at any voxel size.

Arrays are indexed [z, y, x] (SimpleITK's ``GetArrayFromImage`` order); CT values are in HU.

This module paints the tissues that are easiest to describe as implicit shapes (body wall, lungs,
mediastinal fat, heart chambers, spine, sternum, upper abdomen, table) and returns the tube geometry of
the systemic vessels, ribs and central airways; the pulmonary trees live in :mod:`.vessels`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

__all__ = ["VoxelGrid", "LatticeNoise", "TissueHU", "ChestAnatomy", "Tube", "LOBES"]

logger = logging.getLogger(__name__)

#: Lobe codes used for territories (right lung at x < 0 in LPS).
LOBES = ("RUL", "RML", "RLL", "LUL", "LLL")

#: Number of z slices painted at once (bounds the memory of the analytic painting at 512x512).
_CHUNK_SLICES = 24


@dataclass(frozen=True)
class VoxelGrid:
    """A voxel grid in the body frame.

    Attributes:
        shape_zyx: array shape (nz, ny, nx).
        spacing_xyz: voxel size (sx, sy, sz) in mm.
        origin_xyz: body-frame position (mm) of the centre of voxel [0, 0, 0].
    """

    shape_zyx: tuple[int, int, int]
    spacing_xyz: tuple[float, float, float]
    origin_xyz: tuple[float, float, float]

    @property
    def xs(self) -> np.ndarray:
        """x coordinate (mm) of each column, shape [nx], float32."""
        return (self.origin_xyz[0] + np.arange(self.shape_zyx[2]) * self.spacing_xyz[0]).astype(np.float32)

    @property
    def ys(self) -> np.ndarray:
        """y coordinate (mm) of each row, shape [ny], float32."""
        return (self.origin_xyz[1] + np.arange(self.shape_zyx[1]) * self.spacing_xyz[1]).astype(np.float32)

    @property
    def zs(self) -> np.ndarray:
        """z coordinate (mm) of each slice, shape [nz], float32."""
        return (self.origin_xyz[2] + np.arange(self.shape_zyx[0]) * self.spacing_xyz[2]).astype(np.float32)

    @property
    def voxel_mm(self) -> float:
        """Mean voxel edge (mm): the width of the partial-volume ramp at tissue borders."""
        return float(np.mean(self.spacing_xyz))

    @property
    def voxel_volume_mm3(self) -> float:
        return float(np.prod(self.spacing_xyz))

    def bounds_mm(self) -> tuple[np.ndarray, np.ndarray]:
        """Lowest and highest voxel-centre coordinates (x, y, z) in mm."""
        lo = np.asarray(self.origin_xyz, dtype=float)
        hi = lo + (np.asarray(self.shape_zyx[::-1]) - 1) * np.asarray(self.spacing_xyz)
        return lo, hi

    def box(self, lo_xyz, hi_xyz) -> tuple[slice, slice, slice] | None:
        """Index slices (z, y, x) of the voxels whose centres lie in the mm box [lo, hi]; None if empty."""
        out = []
        for ax in (2, 1, 0):  # z, y, x
            o, s, n = self.origin_xyz[ax], self.spacing_xyz[ax], self.shape_zyx[2 - ax]
            i0 = max(int(np.ceil((lo_xyz[ax] - o) / s)), 0)
            i1 = min(int(np.floor((hi_xyz[ax] - o) / s)) + 1, n)
            if i1 <= i0:
                return None
            out.append(slice(i0, i1))
        return tuple(out)  # type: ignore[return-value]

    def to_mm(self, index_zyx: np.ndarray) -> np.ndarray:
        """Body-frame mm (x, y, z) of voxel indices [..., (z, y, x)]."""
        idx = np.asarray(index_zyx, dtype=float)
        return np.asarray(self.origin_xyz) + idx[..., ::-1] * np.asarray(self.spacing_xyz)


class LatticeNoise:
    """Smooth Gaussian noise defined on a fixed millimetre lattice, so it does not depend on voxel size.

    The lattice covers a fixed body-frame box; values are unit-variance Gaussian noise smoothed with a
    Gaussian of ``smooth_cells`` lattice cells and sampled with separable trilinear interpolation.
    """

    LO = np.array([-230.0, -200.0, -330.0])
    HI = np.array([230.0, 200.0, 220.0])

    def __init__(self, rng: np.random.Generator, cell_mm: float = 4.0, smooth_cells: float = 1.5):
        self.cell_mm = float(cell_mm)
        n = np.ceil((self.HI - self.LO) / self.cell_mm).astype(int) + 2  # (x, y, z) counts
        raw = rng.standard_normal((n[2], n[1], n[0]), dtype=np.float32)
        field_ = ndimage.gaussian_filter(raw, smooth_cells, mode="wrap")
        field_ /= max(float(field_.std()), 1e-6)
        self.values = field_  # [z, y, x]

    def _axis_weights(self, coords: np.ndarray, axis_xyz: int, n: int):
        u = (np.asarray(coords, dtype=np.float64) - self.LO[axis_xyz]) / self.cell_mm
        u = np.clip(u, 0.0, n - 1.001)
        i0 = np.floor(u).astype(np.intp)
        w = (u - i0).astype(np.float32)
        return i0, w

    def sample(self, xs: np.ndarray, ys: np.ndarray, zs: np.ndarray, scale: float = 1.0,
               shift_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> np.ndarray:
        """Noise at the grid of 1D coordinates (mm), shape [len(zs), len(ys), len(xs)], float32.

        ``scale`` > 1 makes the pattern finer (coordinates are multiplied by it), ``shift_mm`` moves it:
        two samplings with different scale/shift are practically independent fields.
        """
        v = self.values
        nz, ny, nx = v.shape
        ix, wx = self._axis_weights(np.asarray(xs) * scale + shift_mm[0], 0, nx)
        iy, wy = self._axis_weights(np.asarray(ys) * scale + shift_mm[1], 1, ny)
        iz, wz = self._axis_weights(np.asarray(zs) * scale + shift_mm[2], 2, nz)
        zsel = np.unique(np.concatenate([iz, iz + 1]))
        remap = np.searchsorted(zsel, iz)
        sub = v[zsel]
        a = sub[:, :, ix] * (1 - wx) + sub[:, :, ix + 1] * wx
        b = a[:, iy, :] * (1 - wy)[None, :, None] + a[:, iy + 1, :] * wy[None, :, None]
        return b[remap] * (1 - wz)[:, None, None] + b[remap + 1] * wz[:, None, None]


@dataclass(frozen=True)
class TissueHU:
    """Per-scan CT numbers (HU) of the non-vascular tissues and of the heart chambers."""

    fat: float = -95.0
    muscle: float = 45.0
    skin: float = 20.0
    lung: float = -850.0
    myocardium: float = 90.0
    right_heart: float = 350.0
    left_heart: float = 170.0
    liver: float = 70.0
    spleen: float = 110.0
    bone_cortical: float = 900.0
    bone_trabecular: float = 250.0
    disc: float = 85.0
    csf: float = 20.0
    cartilage: float = 150.0

    @classmethod
    def draw(cls, rng: np.random.Generator, contrast_hu: float) -> "TissueHU":
        """Draw plausible CTPA tissue values; the right heart follows the arterial contrast (HU)."""
        return cls(
            fat=float(rng.uniform(-115, -85)), muscle=float(rng.uniform(35, 58)), skin=float(rng.uniform(10, 40)),
            lung=float(rng.uniform(-870, -830)), myocardium=float(rng.uniform(70, 115)),
            right_heart=float(contrast_hu * rng.uniform(0.88, 1.05)), left_heart=float(rng.uniform(120, 230)),
            liver=float(rng.uniform(55, 95)), spleen=float(rng.uniform(90, 140)),
            bone_cortical=float(rng.uniform(700, 1200)), bone_trabecular=float(rng.uniform(180, 320)),
            disc=float(rng.uniform(70, 100)), csf=float(rng.uniform(10, 30)), cartilage=float(rng.uniform(110, 190)),
        )


@dataclass
class Tube:
    """A polyline tube: points [K, 3] (mm, body frame), radii [K] (mm) and a tissue kind for its HU."""

    points: np.ndarray
    radii: np.ndarray
    kind: str
    name: str = ""


def _unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=float)
    return v / max(float(np.linalg.norm(v)), 1e-9)


def _frame(u1: np.ndarray) -> np.ndarray:
    """Orthonormal 3x3 matrix whose first column is u1."""
    u1 = _unit(u1)
    helper = np.array([0.0, 0.0, 1.0]) if abs(u1[2]) < 0.9 else np.array([1.0, 0.0, 0.0])
    u2 = _unit(np.cross(u1, helper))
    u3 = np.cross(u1, u2)
    return np.stack([u1, u2, u3], axis=1)


@dataclass(frozen=True)
class Ellipsoid:
    """An oriented ellipsoid: centre (mm), rotation (columns = axes) and semi-axes (mm)."""

    center: np.ndarray
    rotation: np.ndarray
    axes: np.ndarray

    def scaled(self, factor: float = 1.0, add_mm: float = 0.0) -> "Ellipsoid":
        return Ellipsoid(self.center, self.rotation, self.axes * factor + add_mm)

    def level(self, x, y, z) -> np.ndarray:
        """Squared normalised radius (< 1 inside); x, y, z broadcastable (mm)."""
        dx, dy, dz = x - self.center[0], y - self.center[1], z - self.center[2]
        total = 0.0
        for k in range(3):
            r = self.rotation[:, k]
            q = (dx * np.float32(r[0]) + dy * np.float32(r[1]) + dz * np.float32(r[2])) / np.float32(self.axes[k])
            total = total + q * q
        return total

    def bbox(self) -> tuple[np.ndarray, np.ndarray]:
        half = np.sqrt(((self.rotation * self.axes[None, :]) ** 2).sum(axis=1))
        return self.center - half, self.center + half


def _put(out: np.ndarray, mask, value) -> None:
    """out[mask] = value, with ``mask`` broadcast to ``out``; ``value`` a scalar or an array of out's shape."""
    mask = np.broadcast_to(mask, out.shape)
    if np.ndim(value) == 0:
        out[mask] = value
    else:
        out[mask] = np.broadcast_to(value, out.shape)[mask]


def _grid_box(X, Y, Z, lo, hi):
    """Index box (z, y, x slices) of broadcast grid coordinates X [1,1,nx], Y [1,ny,1], Z [c,1,1] (sorted
    ascending) inside the mm box [lo, hi]; None if empty or if the inputs are not grid axes."""
    if np.ndim(X) != 3 or X.shape[:2] != (1, 1) or Y.shape[::2] != (1, 1) or Z.shape[1:] != (1, 1):
        return None
    out = []
    for axis_vals, k in ((Z[:, 0, 0], 2), (Y[0, :, 0], 1), (X[0, 0, :], 0)):
        i0 = int(np.searchsorted(axis_vals, lo[k], side="left"))
        i1 = int(np.searchsorted(axis_vals, hi[k], side="right"))
        if i1 <= i0:
            return ()
        out.append(slice(i0, i1))
    return tuple(out)


def _outside_ellipsoid(inside: np.ndarray, e: "Ellipsoid", x, y, z, limit: float = 1.0) -> None:
    """inside &= (level of ``e`` > limit), evaluated only in the ellipsoid's box for grid inputs."""
    lo, hi = e.bbox()
    pad = np.sqrt(limit) - 1.0
    ext = (hi - lo) / 2 * pad
    box = _grid_box(x, y, z, lo - ext - 1e-3, hi + ext + 1e-3)
    if box is None:  # points, or arbitrary arrays
        inside &= e.level(x, y, z) > limit
    elif box:
        zs, ys, xs = box
        inside[box] &= e.level(x[:, :, xs], y[:, ys, :], z[zs]) > limit


def capsule_distance(x, y, z, p0, p1) -> tuple[np.ndarray, np.ndarray]:
    """Distance (mm) from points to the segment p0-p1 and the segment parameter t in [0, 1]."""
    d = np.asarray(p1, dtype=np.float32) - np.asarray(p0, dtype=np.float32)
    dx, dy, dz = x - np.float32(p0[0]), y - np.float32(p0[1]), z - np.float32(p0[2])
    t = (dx * d[0] + dy * d[1] + dz * d[2]) / np.float32(max(float(d @ d), 1e-9))
    t = np.clip(t, 0.0, 1.0)
    ex, ey, ez = dx - t * d[0], dy - t * d[1], dz - t * d[2]
    return np.sqrt(ex * ex + ey * ey + ez * ez), t


@dataclass
class ChestAnatomy:
    """One patient's chest: sizes, positions and landmarks (all mm, body frame), drawn from an rng.

    Use :meth:`draw`; then :meth:`paint` fills an HU volume and the lung mask, :meth:`tubes` lists the
    systemic vessels, oesophagus and ribs, and ``landmarks`` anchor the pulmonary trees and airways.
    """

    s: float  # in-plane size scale (1 = average adult)
    zs: float  # cranio-caudal size scale
    ac: float  # thoracic cavity half-width (x)
    bc: float  # thoracic cavity half-depth (y)
    yc0: float  # cavity centre (y)
    body_a: float  # body half-width
    body_b: float  # body half-depth
    body_p: float  # superellipse exponent of the body outline
    fat_mm: float  # subcutaneous fat thickness
    z_apex: float  # lung apex
    dome_r: float  # right hemidiaphragm dome top (z)
    dome_l: float  # left hemidiaphragm dome top (z)
    dome_h: float  # dome height (how far the recesses drop)
    med_x: float  # mediastinal midline (x)
    med_front: float  # mediastinal half-width anteriorly
    med_mid: float  # mediastinal half-width at the great vessels
    heart: Ellipsoid = field(repr=False)
    septum_normal: np.ndarray = field(repr=False)
    lv: Ellipsoid = field(repr=False)
    ra: Ellipsoid = field(repr=False)
    la: Ellipsoid = field(repr=False)
    spine_y: float = 0.0
    spine_rx: float = 18.0
    spine_ry: float = 15.0
    vertebra_period: float = 27.0
    vertebra_phase: float = 0.0
    oblique_fissure: tuple = ()  # per side: (z at anterior, z at posterior)
    horizontal_fissure_z: float = -30.0
    stomach_gas: bool = True
    landmarks: dict = field(default_factory=dict, repr=False)
    exclusions: list = field(default_factory=list, repr=False)  # (p0, p1, radius) capsules not lung

    # ------------------------------------------------------------------ drawing
    @classmethod
    def draw(cls, rng: np.random.Generator) -> "ChestAnatomy":
        """Draw one patient's anatomy (sizes vary about 20% around an average adult)."""
        u = rng.uniform
        s = float(u(0.84, 1.08))
        zs = float(u(0.92, 1.08))
        ac = 118.0 * s * u(0.95, 1.05)
        bc = 80.0 * s * u(0.93, 1.07)
        wa, wl, wp = u(13, 20) * s, u(5, 10) * s, u(28, 38) * s
        fat = float(u(5, 30))
        yc0 = -(wp - wa) / 2
        body_a = ac + wl + 11 * s + fat
        body_b = bc + (wa + wp) / 2 + fat
        z_apex = 95.0 * zs + u(-8, 8)
        dome_r = -135.0 * zs + u(-15, 15)
        dome_l = dome_r - u(8, 22)
        spine_ry, spine_rx = 15.0 * s, 19.0 * s
        spine_y = yc0 + 0.70 * bc

        jit = lambda sd: rng.normal(0.0, sd, 3)  # noqa: E731
        hc = np.array([22.0 * s, yc0 - 0.28 * bc, -88.0 * zs]) + jit(3.0)
        u1 = _unit(np.array([0.6, -0.55, -0.58]) + jit(0.06))
        heart = Ellipsoid(hc, _frame(u1), np.array([60.0, 45.0, 42.0]) * s * u(0.92, 1.08))
        v = np.array([0.55, 0.8, 0.15])
        n_sep = _unit(v - (v @ u1) * u1)
        lv_rot = np.stack([u1, n_sep, np.cross(u1, n_sep)], axis=1)
        lv = Ellipsoid(hc + n_sep * 0.30 * heart.axes[1] + u1 * 0.08 * heart.axes[0], lv_rot,
                       np.array([0.60 * heart.axes[0], 0.36 * heart.axes[1], 0.44 * heart.axes[2]]))
        ra = Ellipsoid(hc + np.array([-62.0 * s, 8.0 * s, 18.0 * zs]), np.eye(3), np.array([26.0, 22.0, 28.0]) * s)
        la = Ellipsoid(np.array([3.0 * s, yc0 + 0.10 * bc, -55.0 * zs]) + jit(2.0), np.eye(3),
                       np.array([32.0, 17.0, 20.0]) * s)

        anat = cls(
            s=s, zs=zs, ac=float(ac), bc=float(bc), yc0=float(yc0), body_a=float(body_a), body_b=float(body_b),
            body_p=float(u(2.1, 2.45)), fat_mm=fat, z_apex=float(z_apex), dome_r=float(dome_r), dome_l=float(dome_l),
            dome_h=float(55.0 * zs), med_x=float(4.0 * s), med_front=float(6.0 * s), med_mid=float(19.0 * s * u(0.9, 1.15)),
            heart=heart, septum_normal=n_sep, lv=lv, ra=ra, la=la, spine_y=float(spine_y), spine_rx=float(spine_rx),
            spine_ry=float(spine_ry), vertebra_period=float(27.0 * zs), vertebra_phase=float(u(0, 27)),
            oblique_fissure=tuple((float(dome_r - 5 + u(-10, 10)), float(25.0 * zs + u(-10, 10))) for _ in range(2)),
            horizontal_fissure_z=float(-30.0 * zs + u(-8, 8)), stomach_gas=bool(rng.random() < 0.6),
        )
        anat._place_landmarks(rng)
        return anat

    def _place_landmarks(self, rng: np.random.Generator) -> None:
        s, zs, yc0, bc = self.s, self.zs, self.yc0, self.bc
        j = lambda sd=2.0: rng.normal(0.0, sd, 3)  # noqa: E731
        P = lambda x, y, z: np.array([x, y, z], dtype=float)  # noqa: E731
        lm: dict[str, np.ndarray] = {}
        # pulmonary trunk from the right ventricular outflow to the bifurcation, main arteries to the hila
        lm["trunk"] = np.stack([P(12 * s, yc0 - 0.55 * bc, -60 * zs), P(20 * s, yc0 - 0.45 * bc, -35 * zs) + j(),
                                P(18 * s, yc0 - 0.05 * bc, -12 * zs) + j()])
        t2 = lm["trunk"][-1]
        lm["rpa"] = np.stack([t2, P(-10 * s, t2[1] + 4 * s, -22 * zs) + j(), P(-42 * s, t2[1] + 6 * s, -26 * zs) + j(),
                              P(-58 * s, t2[1] + 11 * s, -32 * zs) + j()])
        lm["lpa"] = np.stack([t2, P(42 * s, t2[1] + 9 * s, -6 * zs) + j(), P(58 * s, t2[1] + 25 * s, -16 * zs) + j(),
                              P(64 * s, t2[1] + 37 * s, -36 * zs) + j()])
        # airways: trachea, carina, main bronchi
        y_tr = self.spine_y - self.spine_ry - 25 * s
        carina = P(0.0, y_tr, 0.0)
        lm["trachea"] = np.stack([P(0.0, y_tr - 6 * s, 190.0), P(0.0, y_tr - 2 * s, 80 * zs), carina])
        lm["rmb"] = np.stack([carina, P(-28 * s, y_tr + 4 * s, -18 * zs) + j(1.5)])
        lm["lmb"] = np.stack([carina, P(20 * s, y_tr + 4 * s, -14 * zs), P(40 * s, y_tr + 8 * s, -30 * zs) + j(1.5)])
        # aorta (root in the left ventricular outflow, arch, descending beside the spine)
        xda, yda = 30.0 * s, self.spine_y - 11.0 * s
        lm["aorta"] = np.stack([
            P(-2 * s, yc0 - 0.10 * bc, -62 * zs), P(-18 * s, yc0 - 0.38 * bc, -25 * zs), P(-20 * s, yc0 - 0.35 * bc, 25 * zs),
            P(-5 * s, yc0 - 0.10 * bc, 48 * zs), P(20 * s, yc0 + 0.35 * bc, 46 * zs), P(xda, yda, 25 * zs),
            P(xda, yda, -120 * zs), P(0.7 * xda, yda - 5 * s, -300.0)])
        lm["aorta_r"] = np.array([15, 15, 14, 13, 12.5, 12, 11.5, 11.0]) * s * rng.uniform(0.9, 1.1)
        top = lm["aorta"][3]
        lm["arch_branches"] = [
            np.stack([top + P(-12 * s, -12 * s, 4), P(-28 * s, yc0 - 0.30 * bc, 200.0)]),
            np.stack([top + P(4 * s, -4 * s, 4), P(8 * s, yc0 - 0.18 * bc, 200.0)]),
            np.stack([lm["aorta"][4] + P(-4 * s, -8 * s, 6), P(32 * s, yc0 + 0.05 * bc, 200.0)]),
        ]
        ra_top = self.ra.center + P(0, 0, 0.8 * self.ra.axes[2])
        lm["svc"] = np.stack([P(-44 * s, yc0 - 0.20 * bc, 200.0), P(-42 * s, yc0 - 0.27 * bc, 50 * zs),
                              P(-42 * s, yc0 - 0.29 * bc, -20 * zs), ra_top])
        lm["brachiocephalic_v"] = np.stack([P(55 * s, yc0 - 0.55 * bc, 75 * zs), P(10 * s, yc0 - 0.50 * bc, 62 * zs),
                                            lm["svc"][1] + P(0, 0, 10)])
        lm["ivc"] = np.stack([self.ra.center + P(4 * s, 6 * s, -0.6 * self.ra.axes[2]), P(-22 * s, yc0 + 0.25 * bc, -170 * zs),
                              P(-18 * s, yc0 + 0.3 * bc, -300.0)])
        lm["esophagus"] = np.stack([P(6 * s, y_tr + 17 * s, 200.0), P(8 * s, self.spine_y - self.spine_ry - 9 * s, 0.0),
                                    P(12 * s, self.spine_y - self.spine_ry - 12 * s, -150 * zs), P(30 * s, yc0 - 0.1 * bc, -300.0)])
        # pulmonary vein ostia on the left atrium
        la = self.la
        lm["pv_ostia"] = {
            "RSPV": la.center + P(-0.85 * la.axes[0], -5 * s, 8 * zs), "RIPV": la.center + P(-0.8 * la.axes[0], 5 * s, -10 * zs),
            "LSPV": la.center + P(0.85 * la.axes[0], -4 * s, 8 * zs), "LIPV": la.center + P(0.8 * la.axes[0], 5 * s, -10 * zs),
        }
        self.landmarks = lm
        # lung-free capsules around mediastinal tubes (p0, p1, radius)
        exc = []
        for name, radius in (("aorta", None), ("svc", 9.5 * s + 4), ("esophagus", 10.0 * s), ("trachea", 13.0 * s),
                             ("ivc", 14.0 * s), ("brachiocephalic_v", 10.0 * s), ("trunk", 18.0)):
            pts = lm[name]
            for i in range(len(pts) - 1):
                r = (lm["aorta_r"][i] + 4.0) if name == "aorta" else radius
                exc.append((pts[i], pts[i + 1], float(r)))
        for pts in lm["arch_branches"]:
            exc.append((pts[0], pts[1], 9.0 * s))
        exc.append((lm["rpa"][0], lm["rpa"][1], 14.0))  # proximal pulmonary arteries lie in the mediastinum
        exc.append((lm["lpa"][0], lm["lpa"][1], 14.0))
        self.exclusions = exc

    # ------------------------------------------------------------------ implicit shapes
    def _width_profile(self, z):
        """Cavity half-width factor vs z: narrower towards the thoracic inlet."""
        return 0.8 + 0.2 * np.clip((self.z_apex - z) / 190.0, 0.0, 1.0)

    @property
    def cavity_p(self) -> float:
        """Superellipse exponent of the thoracic cavity (a little rounder than the body outline)."""
        return max(2.0, self.body_p - 0.15)

    def cavity_axes(self, z):
        """Cavity half-width and half-depth (mm) at height z."""
        w = self._width_profile(z)
        return self.ac * w, self.bc * (0.95 + 0.05 * w)

    def cavity_level(self, x, y, z):
        """Superellipse level of the thoracic cavity at height z (< 1 inside); x, y, z broadcastable."""
        a, b = self.cavity_axes(z)
        p = self.cavity_p
        return (np.abs(x) / np.float32(a)) ** p + (np.abs(y - np.float32(self.yc0)) / np.float32(b)) ** p

    def cavity_border(self, phi, z, outward_mm=0.0):
        """Points (x >= 0 side, y) on the cavity border at angle ``phi`` from the posterior midline."""
        a, b = self.cavity_axes(z)
        e = 2.0 / self.cavity_p
        sn, cs = np.sin(phi), np.cos(phi)
        return (a + outward_mm) * np.abs(sn) ** e, self.yc0 + (b + outward_mm) * np.sign(cs) * np.abs(cs) ** e

    def diaphragm_z(self, x, y):
        """Height (mm) of the diaphragm surface below (x, y): two domes, lower posteriorly and laterally."""
        xr, xl = -0.45 * self.ac, 0.45 * self.ac
        yd = self.yc0 - 0.15 * self.bc
        rx, ry = 0.75 * self.ac, 1.0 * self.bc
        qy = ((y - yd) / ry) ** 2
        zr = self.dome_r - self.dome_h * (((x - xr) / rx) ** 2 + qy)
        zl = self.dome_l - self.dome_h * (((x - xl) / rx) ** 2 + qy)
        return np.where(x < 0, zr, zl)

    def mediastinum_halfwidth(self, y, z):
        """Half-width (mm, about x = med_x) of the lung-free mediastinal band at (y, z)."""
        mid = self.med_mid * (0.82 + 0.18 * np.clip((70.0 - z) / 70.0, 0.0, 1.0))
        gy = np.exp(-(((y - (self.yc0 - 0.05 * self.bc)) / (0.5 * self.bc)) ** 2))
        return self.med_front + (mid - self.med_front) * gy

    def _apex_ok(self, x, y, z):
        """Above the cap base the lungs are two ellipsoidal caps (x = +-0.5 ac)."""
        zb = self.z_apex - 50.0 * self.zs
        rx, ry = 0.5 * self.ac * self._width_profile(zb), 0.85 * self.bc
        q = ((np.abs(x) - 0.5 * self.ac * self._width_profile(zb)) / rx) ** 2 + ((y - self.yc0 - 0.05 * self.bc) / ry) ** 2
        return (z <= zb) | (q + ((z - zb) / (self.z_apex - zb)) ** 2 <= 1.0)

    def lung_inside_analytic(self, x, y, z):
        """Lung parenchyma test without the mediastinal tube capsules; x, y, z broadcastable (mm)."""
        inside = self.cavity_level(x, y, z) <= 1.0
        inside &= z > self.diaphragm_z(x, y)
        inside &= np.abs(x - self.med_x) > self.mediastinum_halfwidth(y, z)
        inside &= self._apex_ok(x, y, z)
        inside &= ~(((x / (self.spine_rx + 6)) ** 2 + ((y - self.spine_y) / (self.spine_ry + 6)) ** 2 <= 1.0)
                    | ((np.abs(x) < self.spine_rx + 5) & (y > self.spine_y)))
        inside = np.broadcast_to(inside, np.broadcast_shapes(np.shape(x), np.shape(y), np.shape(z))).copy()
        _outside_ellipsoid(inside, self.heart, x, y, z, 1.12 ** 2)
        _outside_ellipsoid(inside, self.la.scaled(1.0, 4.0), x, y, z)
        _outside_ellipsoid(inside, self.ra.scaled(1.0, 4.0), x, y, z)
        return inside

    def lung_inside_points(self, pts: np.ndarray) -> np.ndarray:
        """Lung test for points [N, 3] (mm), including the mediastinal tube exclusions; bool [N]."""
        x, y, z = (pts[:, k].astype(np.float32) for k in range(3))
        inside = self.lung_inside_analytic(x, y, z)
        for p0, p1, r in self.exclusions:
            d, _ = capsule_distance(x, y, z, p0, p1)
            inside &= d > r
        return inside

    def lobe_of(self, pts: np.ndarray) -> np.ndarray:
        """Lobe index into :data:`LOBES` for lung points [N, 3] (mm)."""
        x, y, z = pts[:, 0], pts[:, 1], pts[:, 2]
        right = x < 0
        y_ant, y_post = self.yc0 - self.bc, self.yc0 + self.bc
        frac = (y - y_ant) / (y_post - y_ant)
        zf = np.where(right, self.oblique_fissure[0][0] + frac * (self.oblique_fissure[0][1] - self.oblique_fissure[0][0]),
                      self.oblique_fissure[1][0] + frac * (self.oblique_fissure[1][1] - self.oblique_fissure[1][0]))
        upper = z > zf
        lobe = np.where(right, np.where(upper, np.where(z > self.horizontal_fissure_z, 0, 1), 2), np.where(upper, 3, 4))
        return lobe.astype(np.int8)

    def sample_lung_points(self, rng: np.random.Generator, n_per_lung: int = 4000) -> np.ndarray:
        """Uniform random points (mm) inside the lungs, about ``n_per_lung`` per lung, shape [N, 3]."""
        lo = np.array([-self.ac, self.yc0 - self.bc, min(self.dome_r, self.dome_l) - self.dome_h - 5])
        hi = np.array([self.ac, self.yc0 + self.bc, self.z_apex])
        out, total = [], 0
        for _ in range(20):
            cand = lo + rng.random((6 * n_per_lung, 3)) * (hi - lo)
            keep = cand[self.lung_inside_points(cand)]
            out.append(keep)
            total += len(keep)
            if total >= 2 * n_per_lung:
                break
        pts = np.concatenate(out)[: 2 * n_per_lung]
        return pts

    # ------------------------------------------------------------------ painting
    def paint(self, grid: VoxelGrid, hu: TissueHU, texture: LatticeNoise, image: np.ndarray,
              lung_mask: np.ndarray) -> None:
        """Fill ``image`` (float32 HU, [z, y, x]) with the analytic tissues and ``lung_mask`` (uint8).

        The lung mask is the lung parenchyma (intrapulmonary vessels and airways painted later stay
        inside it); mediastinal tube capsules are cut out of it here as well.
        """
        xs, ys, zs = grid.xs, grid.ys, grid.zs
        X, Y = xs[None, None, :], ys[None, :, None]
        body2d, fat_inner2d, skin2d, table2d, plane2d = self._body_layers(xs, ys, min(grid.spacing_xyz[:2]))
        zdia2d = self.diaphragm_z(X[0], Y[0]).astype(np.float32)  # [ny, nx]
        for z0 in range(0, len(zs), _CHUNK_SLICES):
            zc = zs[z0:z0 + _CHUNK_SLICES]
            out = image[z0:z0 + len(zc)]
            lung = self._paint_chunk(out, X, Y, zc[:, None, None], xs, ys, zc, hu, texture, body2d, fat_inner2d,
                                     skin2d, table2d, plane2d, zdia2d)
            lung_mask[z0:z0 + len(zc)] = lung
        self._cut_exclusions(grid, image, lung_mask, hu)

    def _body_layers(self, xs, ys, pixel_mm: float):
        """2D [ny, nx] masks of body, muscle (inside the subcutaneous fat), skin and table, and the
        partial-volume fraction (float32) of a thin intermuscular fat plane."""
        X, Y = xs[None, :], ys[:, None]
        p = self.body_p
        flat = np.where(Y > 0, 1.0 + 0.6 * np.clip(Y / self.body_b, 0, 1) ** 4, 1.0)  # flattened back on the table
        lvl = (np.abs(X) / self.body_a) ** p + (np.abs(Y) / self.body_b) ** p * flat
        body = lvl <= 1.0
        ai, bi = self.body_a - self.fat_mm, self.body_b - self.fat_mm
        fat_inner = (np.abs(X) / ai) ** p + (np.abs(Y) / bi) ** p * flat <= 1.0
        skin = body & ((np.abs(X) / (self.body_a - 1.8)) ** p + (np.abs(Y) / (self.body_b - 1.8)) ** p * flat > 1.0)
        # a thin fat plane between the superficial muscles and the chest wall proper
        am, bm = 0.5 * (ai + self.ac + 8.0), 0.5 * (bi + self.bc + 8.0)
        ax_, ay_ = np.abs(X) / am, np.abs(Y) / bm
        mid = ax_ ** p + ay_ ** p * flat
        grad = np.sqrt((p * ax_ ** (p - 1) / am) ** 2 + (p * ay_ ** (p - 1) * flat / bm) ** 2)
        dist = np.abs(mid - 1.0) / np.maximum(grad, 1e-6)  # mm from the plane's centre line
        plane = np.clip((1.6 - dist) / pixel_mm + 0.5, 0.0, 1.0).astype(np.float32)
        plane *= fat_inner & ~((np.abs(X) < 45.0) & (Y > 0))
        ytab = self.body_b + 3.0  # couch top under the back, curving up at the sides
        top = ytab - 0.0015 * X ** 2
        table = (Y > top) & (Y < top + 9.0) & (np.abs(X) < 0.9 * self.body_a + 25.0)
        return body, fat_inner, skin, table, plane

    def _paint_chunk(self, out, X, Y, Z, xs, ys, zc, hu: TissueHU, tex: LatticeNoise, body2d, fat_inner2d, skin2d,
                     table2d, plane2d, zdia2d):
        f32 = np.float32
        out[...] = -1000.0
        t1 = tex.sample(xs, ys, zc)  # smooth, ~6 mm
        t2 = tex.sample(xs, ys, zc, scale=2.3, shift_mm=(37.0, -21.0, 53.0))  # finer, ~2.5 mm
        out[:, table2d] = 90.0
        out[:, body2d] = hu.fat + 8.0 * t2[:, body2d]
        out[:, fat_inner2d] = hu.muscle + 6.0 * t2[:, fat_inner2d]
        out += np.float32(hu.fat - hu.muscle) * plane2d[None]
        out[:, skin2d] = hu.skin
        # thoracic cavity: mediastinal fat by default
        cav = self.cavity_level(X, Y, Z) <= 1.0
        _put(out, cav, hu.fat + 10.0 * t1)
        # upper abdomen below the diaphragm
        below = cav & (Z <= zdia2d[None])
        if below.any():
            liver = below & (X < 25.0 * self.s)
            _put(out, liver, hu.liver + 6.0 * t1)
            other = below & ~liver
            _put(out, other, hu.muscle + 5.0 + 8.0 * t1)
            spleen = Ellipsoid(np.array([0.72 * self.ac, self.yc0 + 0.45 * self.bc, self.dome_l - 45.0]), np.eye(3),
                               np.array([22.0, 38.0, 45.0]) * self.s)
            sp = below & (spleen.level(X, Y, Z) <= 1.0)
            _put(out, sp, hu.spleen + 10.0 * t1)
            st = Ellipsoid(np.array([0.42 * self.ac, self.yc0 - 0.15 * self.bc, self.dome_l - 32.0]), np.eye(3),
                           np.array([38.0, 32.0, 30.0]) * self.s)
            sto = below & (st.level(X, Y, Z) <= 1.0)
            _put(out, sto, 15.0)
            if self.stomach_gas:
                gas = sto & (Y < st.center[1] - 8.0)
                _put(out, gas, -990.0)
        # lungs
        lung = cav & self.lung_inside_analytic(X, Y, Z)
        dep = np.clip((Y - self.yc0) / self.bc, 0.0, 1.0) ** 2  # dependent (posterior) lung is denser
        lung_val = f32(hu.lung) + 22.0 * t1 + 10.0 * t2 + f32(55.0) * dep
        _put(out, lung, lung_val)
        # heart: pericardial fat, myocardium, chambers; atria
        self._paint_heart(out, X, Y, Z, hu, t1)
        # spine and sternum
        self._paint_spine(out, X, Y, Z, hu, t2)
        self._paint_scapulae(out, X, Y, Z, hu)
        self._paint_sternum(out, X, Y, Z, hu, t2)
        return lung

    def _paint_heart(self, out, X, Y, Z, hu: TissueHU, t1):
        parts = [self.heart.scaled(1.12), self.ra.scaled(1.0, 2.5), self.la.scaled(1.0, 2.5)]
        lo = np.min([p.bbox()[0] for p in parts], axis=0) - 1.0
        hi = np.max([p.bbox()[1] for p in parts], axis=0) + 1.0
        box = _grid_box(X, Y, Z, lo, hi)
        if not box:
            return
        zs, ys, xs = box
        self._paint_heart_box(out[box], X[:, :, xs], Y[:, ys, :], Z[zs], hu, t1[box])

    def _paint_heart_box(self, out, X, Y, Z, hu: TissueHU, t1):
        e = self.heart.level(X, Y, Z)
        peri = e <= 1.12 ** 2
        if not peri.any():
            return
        _put(out, peri & (e > 1.0), hu.fat)
        myo = e <= 1.0
        _put(out, myo, hu.myocardium)
        n = self.septum_normal.astype(np.float32)
        c = self.heart.center
        sep = (X - np.float32(c[0])) * n[0] + (Y - np.float32(c[1])) * n[1] + (Z - np.float32(c[2])) * n[2]
        lv = self.lv.level(X, Y, Z) <= 1.0
        septum = self.lv.scaled(1.0, 9.0 * self.s).level(X, Y, Z) <= 1.0  # LV cavity plus its wall
        rv = (e <= 0.84 ** 2) & ~septum & (sep < 0.15 * self.heart.axes[1])  # crescent wrapping the LV
        _put(out, rv, hu.right_heart + 12.0 * t1)
        _put(out, lv, hu.left_heart + 8.0 * t1)
        for atrium, blood, mix in ((self.ra, hu.right_heart, 45.0), (self.la, hu.left_heart, 8.0)):
            wall = atrium.scaled(1.0, 2.5).level(X, Y, Z) <= 1.0
            _put(out, wall & ~lv & ~rv, hu.myocardium)
            inner = atrium.level(X, Y, Z) <= 1.0
            _put(out, inner, blood + mix * t1)  # right atrium: mixing with unenhanced caval blood

    def _paint_spine(self, out, X, Y, Z, hu: TissueHU, t2):
        s = self.s
        lo = (-40.0 * s, self.spine_y - self.spine_ry - 2.0, -1e9)
        hi = (40.0 * s, self.spine_y + self.spine_ry + 45.0 * s, 1e9)
        box = _grid_box(X, Y, Z, lo, hi)
        if not box:
            return
        zs, ys, xs = box
        out, X, Y, Z, t2 = out[box], X[:, :, xs], Y[:, ys, :], Z[zs], t2[box]
        body_lvl = (X / self.spine_rx) ** 2 + ((Y - self.spine_y) / self.spine_ry) ** 2
        phase = np.mod(Z - self.vertebra_phase, self.vertebra_period)
        disc = phase < 5.0 * self.zs  # [c,1,1]
        vb = body_lvl <= 1.0
        shell = vb & (body_lvl > (1.0 - 2.2 / self.spine_ry) ** 2)
        bone_slices = ~disc
        _put(out, vb & disc, hu.disc)
        trab = vb & bone_slices & ~shell
        _put(out, trab, hu.bone_trabecular + 40.0 * t2)
        _put(out, shell & bone_slices, hu.bone_cortical)
        yc = self.spine_y + self.spine_ry + 8.0 * s
        rr = np.sqrt(X ** 2 + (Y - yc) ** 2)
        arch = (rr > 7.5 * s) & (rr < 11.0 * s) & (Y > yc - 6.0 * s)
        spinous = (np.abs(X) < 2.5 * s) & (Y > yc + 9 * s) & (Y < yc + 26 * s) & (phase > 0.35 * self.vertebra_period)
        transverse = (np.abs(Y - yc - 0.35 * (np.abs(X) - 9 * s)) < 2.8 * s) & (np.abs(X) > 9 * s) & (
            np.abs(X) < 25 * s) & (phase > 0.35 * self.vertebra_period) & (phase < 0.7 * self.vertebra_period)
        _put(out, arch | spinous | transverse, 0.7 * hu.bone_cortical)
        _put(out, rr <= 7.5 * s, hu.csf)

    def _paint_scapulae(self, out, X, Y, Z, hu: TissueHU):
        """Two thin curved bony plates in the posterolateral chest wall of the upper thorax."""
        s, zs = self.s, self.zs
        z_top, z_bot = self.z_apex + 5.0, self.z_apex - 155.0 * zs
        zc = Z[:, 0, 0]
        if zc.max() < z_bot or zc.min() > z_top:
            return
        z_ref = self.z_apex - 60.0 * zs
        phi0 = 0.27 * np.pi
        cx, cy = self.cavity_border(phi0, z_ref, 17.0 * s)
        px, py = self.cavity_border(phi0 + 0.02, z_ref, 17.0 * s)
        mx, my = self.cavity_border(phi0 - 0.02, z_ref, 17.0 * s)
        t = _unit([px - mx, py - my, 0.0])[:2]
        n = np.array([-t[1], t[0]])
        if n @ np.array([-cx, self.yc0 - cy]) < 0:  # n points into the chest
            n = -n
        half_w = (30.0 * s * np.clip((zc - z_bot) / (70.0 * zs), 0.25, 1.0))[:, None, None]
        inz = ((Z >= z_bot) & (Z <= z_top))
        for side in (-1.0, 1.0):
            dx, dy = X - side * cx, Y - cy
            along = dx * side * t[0] + dy * t[1]
            across = dx * side * n[0] + dy * n[1]
            # bowed towards the ribs at its borders, like a real scapula
            plate = inz & (np.abs(across - 0.006 * along ** 2) < 2.5 * s) & (np.abs(along) < half_w)
            _put(out, plate, 0.75 * hu.bone_cortical)

    def _paint_sternum(self, out, X, Y, Z, hu: TissueHU, t2):
        s, zs = self.s, self.zs
        yst = self.yc0 - self.bc - 7.0 * s
        inz = (Z < 60.0 * zs) & (Z > -125.0 * zs)
        lvl = (X / (15.0 * s)) ** 2 + ((Y - yst) / (6.0 * s)) ** 2
        st = inz & (lvl <= 1.0)
        _put(out, st, 0.6 * hu.bone_cortical)
        core = inz & (lvl <= 0.55)
        _put(out, core, hu.bone_trabecular - 30.0 + 30.0 * t2)

    def _cut_exclusions(self, grid: VoxelGrid, image, lung_mask, hu: TissueHU) -> None:
        xs, ys, zs = grid.xs, grid.ys, grid.zs
        for p0, p1, r in self.exclusions:
            lo, hi = np.minimum(p0, p1) - r, np.maximum(p0, p1) + r
            b = grid.box(lo, hi)
            if b is None:
                continue
            d, _ = capsule_distance(xs[b[2]][None, None, :], ys[b[1]][:, None], zs[b[0]][:, None, None], p0, p1)
            sub = lung_mask[b]
            cut = (d <= r) & (sub > 0)
            if cut.any():
                sub[cut] = 0
                image[b][cut] = hu.fat

    # ------------------------------------------------------------------ tubes
    def tubes(self) -> list[Tube]:
        """Systemic vessels, oesophagus and ribs (+ costal cartilage) as polyline tubes.

        Kinds: ``aorta``, ``svc``, ``brachio``, ``ivc``, ``esophagus``, ``rib``, ``cartilage``. The central
        airways are part of the airway tree (:func:`insight.phantom.vessels.build_airway_tree`).
        """
        lm, s = self.landmarks, self.s
        out = [Tube(lm["aorta"], lm["aorta_r"], "aorta", "aorta")]
        for i, pts in enumerate(lm["arch_branches"]):
            out.append(Tube(pts, np.array([6.0, 5.5]) * s * (0.85 if i else 1.0), "aorta", f"arch_branch{i}"))
        out.append(Tube(lm["svc"], np.array([8.0, 9.0, 9.5, 10.0]) * s, "svc", "svc"))
        out.append(Tube(lm["brachiocephalic_v"], np.array([5.5, 6.5, 7.0]) * s, "brachio", "brachiocephalic vein"))
        out.append(Tube(lm["ivc"], np.array([12.0, 12.0, 11.0]) * s, "ivc", "ivc"))
        out.append(Tube(lm["esophagus"], np.array([7.0, 7.5, 7.5, 8.0]) * s, "esophagus", "esophagus"))
        out.extend(self._ribs())
        return out

    def _ribs(self) -> list[Tube]:
        s, zs = self.s, self.zs
        out = []
        r_rib = 4.6 * s
        for side in (-1.0, 1.0):
            for k in range(12):
                zk = self.z_apex - 12.0 * zs - k * 24.0 * zs
                phi_end = np.pi * (0.84 if k < 7 else max(0.84 - 0.06 * (k - 6), 0.45))
                phis = np.linspace(0.12 * np.pi, phi_end, 14)
                z = zk - 105.0 * zs * (phis / np.pi) ** 1.25
                x, y = self.cavity_border(phis, z, r_rib + 1.5)
                pts = np.stack([side * x, y, z], axis=1)
                out.append(Tube(pts, np.full(len(pts), r_rib), "rib", f"rib{k + 1}{'L' if side > 0 else 'R'}"))
                if k < 7:  # costal cartilage to the sternum
                    end = pts[-1]
                    st = np.array([side * 14.0 * s, self.yc0 - self.bc - 7.0 * s, end[2] + 6.0 + 3.0 * k])
                    mid = 0.5 * (end + st) + np.array([0.0, -6.0 * s, 0.0])
                    out.append(Tube(np.stack([end, mid, st]), np.array([r_rib, 3.8 * s, 3.5 * s]), "cartilage",
                                    f"cartilage{k + 1}"))
        return out

