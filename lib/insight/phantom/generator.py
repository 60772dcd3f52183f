"""Synthetic CTPA cases with known clot masks: configuration, one case, and a written data set.

A case is drawn entirely from ``np.random.default_rng(np.random.SeedSequence([seed, index]))``: whether it
is PE-positive (probability ``pe_fraction``), the anatomy, the scan (contrast, noise, blur, voxel size),
the emboli and the confounders. Anatomy is defined in millimetres, so for a given seed and index the
same patient appears at any voxel size.

Geometry: arrays are [z, y, x]; spacing, origin and direction are in SimpleITK (x, y, z) order in LPS
patient space, direction = identity, the volume centred on the body in x and y.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from insight.io.atomic import atomic_output, write_json_atomic, write_text_atomic
from insight.phantom.anatomy import ChestAnatomy, LatticeNoise, TissueHU, VoxelGrid
from insight.phantom.confounders import (add_noise, add_streaks, apply_blur, draw_flow_artifact, draw_lymph_nodes,
                                         draw_streaks, flow_artifact_hu, paint_lymph_nodes)
from insight.phantom.emboli import CLOT_HU_RANGE, draw_embolus, insert_emboli
from insight.phantom.vessels import (VesselPath, build_airway_tree, build_artery_tree, build_vein_tree,
                                     paint_raster, rasterize_segments, tubes_to_segments)

__all__ = ["PhantomConfig", "PhantomCase", "generate_case", "write_dataset", "case_name", "LABEL_COLUMNS", "label_row",
           "CONTRAST_HU_RANGE", "NOISE_SD_RANGE_HU", "BLUR_SIGMA_RANGE_MM", "DRAWN_SPACING_RANGE_MM"]

logger = logging.getLogger(__name__)

CONTRAST_HU_RANGE = (250.0, 450.0)
VEIN_HU_RANGE = (120.0, 200.0)
NOISE_SD_RANGE_HU = (8.0, 35.0)
BLUR_SIGMA_RANGE_MM = (0.4, 1.3)
#: Voxel size drawn per case when the config gives none: in-plane (x = y) and slice spacing (mm).
DRAWN_SPACING_RANGE_MM = {"inplane": (2.2, 2.8), "slice": (2.5, 3.5)}
#: Columns of labels.csv: image and pe first, then case metadata.
LABEL_COLUMNS = ("image", "pe", "n_emboli", "contrast_hu", "noise_sd_hu", "spacing_x", "spacing_y", "spacing_z",
                 "size_x", "size_y", "size_z", "seed", "index", "blur_sigma_mm", "flow_artifacts", "streaks",
                 "lymph_nodes")
_HU_MIN, _HU_MAX = -1024, 3071


def case_name(seed: int, index: int) -> str:
    """File stem of a phantom case."""
    return f"phantom_s{seed}_{index:04d}"


@dataclass(frozen=True)
class PhantomConfig:
    """What to generate.

    Attributes:
        shape_xyz: volume size in voxels (x, y, z).
        spacing_xyz: voxel size in mm (x, y, z); None draws one per case (in-plane 2.2-2.8 mm, slices
            2.5-3.5 mm), so that the field of view varies.
        pe_fraction: probability that a case is PE-positive.
        max_emboli: most emboli in a positive case (at least one is always placed).
        p_flow_artifact, p_streaks, p_lymph_nodes: probability that a case shows the confounder
            (independent of the PE label).
        max_lymph_nodes: most lymph nodes beside arteries when a case has them.
        add_noise, add_blur: switch image noise and partial-volume blur off for tests.
        max_generation: deepest arterial/venous generation (3 = segmental).
    """

    shape_xyz: tuple[int, int, int] = (128, 128, 80)
    spacing_xyz: tuple[float, float, float] | None = None
    pe_fraction: float = 0.5
    max_emboli: int = 6
    p_flow_artifact: float = 0.5
    p_streaks: float = 0.4
    p_lymph_nodes: float = 0.75
    max_lymph_nodes: int = 5
    add_noise: bool = True
    add_blur: bool = True
    max_generation: int = 7

    def __post_init__(self) -> None:
        shape = tuple(self.shape_xyz) if isinstance(self.shape_xyz, (tuple, list)) else None
        if shape is None or len(shape) != 3 or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool)
                                                       for v in shape):
            raise ValueError(f"shape_xyz must be three integers (x, y, z), got {self.shape_xyz!r}")
        if any(v < 16 or v > 2048 for v in shape):
            raise ValueError(f"shape_xyz values must be between 16 and 2048 voxels, got {shape}")
        object.__setattr__(self, "shape_xyz", tuple(int(v) for v in shape))
        if self.spacing_xyz is not None:
            sp = tuple(self.spacing_xyz) if isinstance(self.spacing_xyz, (tuple, list)) else None
            if sp is None or len(sp) != 3:
                raise ValueError(f"spacing_xyz must be three numbers in mm (x, y, z) or None, got {self.spacing_xyz!r}")
            try:
                spf = tuple(float(v) for v in sp)
            except (TypeError, ValueError):
                raise ValueError(f"spacing_xyz must be numbers, got {self.spacing_xyz!r}") from None
            if not all(math.isfinite(v) and 0.1 <= v <= 10.0 for v in spf):
                raise ValueError(f"spacing_xyz values must be between 0.1 and 10 mm, got {spf}")
            object.__setattr__(self, "spacing_xyz", spf)
        for name in ("pe_fraction", "p_flow_artifact", "p_streaks", "p_lymph_nodes"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not (0.0 <= float(v) <= 1.0):
                raise ValueError(f"{name} must be a probability in [0, 1], got {v!r}")
        for name, lo, hi in (("max_emboli", 1, 20), ("max_lymph_nodes", 0, 20), ("max_generation", 3, 8)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not (lo <= v <= hi):
                raise ValueError(f"{name} must be an integer in [{lo}, {hi}], got {v!r}")
        for name in ("add_noise", "add_blur"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")


@dataclass
class PhantomCase:
    """One generated case.

    Attributes:
        image_hu: int16 [z, y, x] CT numbers (HU).
        clot_mask, artery_mask, lung_mask: uint8 [z, y, x] (1 = clot / pulmonary artery lumen / lung).
        spacing_xyz, origin_xyz: mm, SimpleITK (x, y, z) order, LPS; direction: 9 floats (identity).
        pe: 1 if at least one clot voxel exists, else 0.
        metadata: n_emboli, emboli (generation, kind, volume_mm3, centroid_mm, ...), contrast_hu,
            noise_sd_hu, blur_sigma_mm, confounders, seed, index and geometry.
    """

    name: str
    image_hu: np.ndarray
    clot_mask: np.ndarray
    artery_mask: np.ndarray
    lung_mask: np.ndarray
    spacing_xyz: tuple[float, float, float]
    origin_xyz: tuple[float, float, float]
    direction: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    pe: int = 0
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_sitk(self, array: np.ndarray):
        """A SimpleITK image of ``array`` ([z, y, x], this case's shape) with the case geometry."""
        import SimpleITK as sitk

        if tuple(array.shape) != tuple(self.image_hu.shape):
            raise ValueError(f"array shape {array.shape} does not match the case shape {self.image_hu.shape}")
        img = sitk.GetImageFromArray(np.ascontiguousarray(array))
        img.SetSpacing(tuple(float(v) for v in self.spacing_xyz))
        img.SetOrigin(tuple(float(v) for v in self.origin_xyz))
        img.SetDirection(tuple(float(v) for v in self.direction))
        return img


@dataclass(frozen=True)
class _ScanParams:
    contrast_hu: float
    vein_hu: float
    aorta_hu: float
    ivc_hu: float
    svc_hu: float
    svc_dense_hu: float
    tissue: TissueHU
    noise_sd_hu: float
    noise_corr_vox: float
    blur_sigma_mm: float


def _draw_scan(rng: np.random.Generator) -> _ScanParams:
    u = rng.uniform
    contrast = float(u(*CONTRAST_HU_RANGE))
    return _ScanParams(
        contrast_hu=contrast, vein_hu=float(u(*VEIN_HU_RANGE)),
        aorta_hu=float(np.clip(u(0.45, 0.85) * contrast + u(0, 60), 140, 420)), ivc_hu=float(u(60, 150)),
        svc_hu=float(np.clip(contrast * u(0.8, 1.6), 250, 700)), svc_dense_hu=float(u(1200, 2500)),
        tissue=TissueHU.draw(rng, contrast), noise_sd_hu=float(u(*NOISE_SD_RANGE_HU)),
        noise_corr_vox=float(u(0.6, 1.1)) if rng.random() < 0.5 else 0.0, blur_sigma_mm=float(u(*BLUR_SIGMA_RANGE_MM)),
    )


def _check_seed(seed: int, index: int) -> None:
    for name, v in (("seed", seed), ("index", index)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {v!r}")


def generate_case(seed: int, index: int, config: PhantomConfig | None = None) -> PhantomCase:
    """Generate one deterministic case: the same (seed, index, config) always gives identical arrays."""
    config = config or PhantomConfig()
    _check_seed(seed, index)
    t_start = time.perf_counter()
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(index)]))
    pe_drawn = bool(rng.random() < config.pe_fraction)
    anat_rng, tree_rng, geom_rng, scan_rng, emb_rng, conf_rng, noise_rng, tex_rng = (
        np.random.default_rng(int(s)) for s in rng.integers(0, 2 ** 62, size=8))

    # --- patient and scan geometry (mm)
    anat = ChestAnatomy.draw(anat_rng)
    drawn_sx = round(float(geom_rng.uniform(*DRAWN_SPACING_RANGE_MM["inplane"])), 3)
    drawn_sz = round(float(geom_rng.uniform(*DRAWN_SPACING_RANGE_MM["slice"])), 2)
    z_centre = -50.0 * anat.zs + float(geom_rng.uniform(-15, 15))  # body frame: carina at z = 0
    z_table = round(float(geom_rng.uniform(-230.0, -110.0)), 1)  # patient z of the carina
    spacing = config.spacing_xyz or (drawn_sx, drawn_sx, drawn_sz)
    nx, ny, nz = config.shape_xyz
    origin_patient = (round(-(nx - 1) * spacing[0] / 2, 3), round(-(ny - 1) * spacing[1] / 2, 3),
                      round(z_centre - (nz - 1) * spacing[2] / 2 + z_table, 2))
    grid = VoxelGrid((nz, ny, nx), spacing, (origin_patient[0], origin_patient[1], origin_patient[2] - z_table))
    bounds = grid.bounds_mm()
    scan = _draw_scan(scan_rng)

    # --- confounder and emboli draws (independent of the label except the emboli count)
    has_flow = bool(conf_rng.random() < config.p_flow_artifact)
    n_flow = 1 + int(conf_rng.random() < 0.3) if has_flow else 0
    has_streaks = bool(conf_rng.random() < config.p_streaks)
    has_nodes = bool(conf_rng.random() < config.p_lymph_nodes) and config.max_lymph_nodes > 0
    n_nodes = int(conf_rng.integers(1, config.max_lymph_nodes + 1)) if has_nodes else 0
    n_emboli_target = min(config.max_emboli, 1 + int(emb_rng.poisson(1.3))) if pe_drawn else 0

    # --- trees
    points = anat.sample_lung_points(tree_rng)
    lobes = anat.lobe_of(points)
    arteries = build_artery_tree(anat, tree_rng, points, lobes, config.max_generation)
    vein_points = anat.sample_lung_points(tree_rng)
    veins = build_vein_tree(anat, tree_rng, vein_points, anat.lobe_of(vein_points), config.max_generation)
    airways = build_airway_tree(anat, tree_rng, arteries)
    t_trees = time.perf_counter()

    # --- analytic tissues
    image = np.empty(grid.shape_zyx, dtype=np.float32)
    lung_mask = np.zeros(grid.shape_zyx, dtype=np.uint8)
    texture = LatticeNoise(tex_rng)
    tissue = scan.tissue
    anat.paint(grid, tissue, texture, image, lung_mask)
    t_paint = time.perf_counter()

    # --- systemic tubes and ribs
    tubes = anat.tubes()
    svc_hu = scan.svc_dense_hu if has_streaks else scan.svc_hu
    kind_hu = {"aorta": scan.aorta_hu, "svc": svc_hu, "brachio": svc_hu, "ivc": scan.ivc_hu,
               "esophagus": tissue.muscle, "cartilage": tissue.cartilage, "rib": tissue.bone_cortical}
    soft = [t for t in tubes if t.kind != "rib"]
    seg, kinds = tubes_to_segments(soft)
    paint_raster(image, rasterize_segments(grid, seg), np.array([kind_hu[kinds[b]] for b in seg.branch]))
    ribs = [t for t in tubes if t.kind == "rib"]
    seg, _ = tubes_to_segments(ribs)
    paint_raster(image, rasterize_segments(grid, seg), tissue.bone_cortical)
    paint_raster(image, rasterize_segments(grid, seg, radius_add_mm=-1.6), tissue.bone_trabecular)

    # --- pulmonary veins, airways, arteries (arteries last: their lumen is the artery mask)
    seg = veins.segments()
    vein_lut = np.clip(scan.vein_hu + tree_rng.normal(0, 8, len(veins.branches)), *VEIN_HU_RANGE)
    paint_raster(image, rasterize_segments(grid, seg), vein_lut[seg.branch])
    seg = airways.segments()
    paint_raster(image, rasterize_segments(grid, seg, radius_add_mm=1.3), 0.5 * tissue.muscle)
    paint_raster(image, rasterize_segments(grid, seg), -1000.0)
    art_seg = arteries.segments()
    art = rasterize_segments(grid, art_seg)
    art_lut = np.clip(scan.contrast_hu + tree_rng.normal(0, 8, len(arteries.branches)), *CONTRAST_HU_RANGE)
    flows = [f for f in (draw_flow_artifact(arteries, conf_rng, bounds) for _ in range(n_flow)) if f is not None]
    _paint_arteries(grid, image, art, art_seg.branch, art_lut, flows)
    artery_mask = art.lumen
    t_tubes = time.perf_counter()

    # --- lymph nodes (outside the lumen), emboli (inside it)
    nodes = draw_lymph_nodes(arteries, conf_rng, n_nodes, bounds, avoid=art_seg) if n_nodes else []
    paint_lymph_nodes(grid, image, nodes, artery_mask)
    clot_mask = np.zeros(grid.shape_zyx, dtype=np.uint8)
    placed = []
    tries = 0
    while len(placed) < n_emboli_target and tries < 10 * max(n_emboli_target, 1):
        tries += 1
        spec = draw_embolus(arteries, emb_rng, bounds, CLOT_HU_RANGE)
        if spec is not None:
            placed += insert_emboli(grid, image, artery_mask, [spec], clot_mask)
    if pe_drawn and not placed:
        logger.warning("%s: no embolus fits this field of view; the case is labelled negative", case_name(seed, index))

    # --- acquisition: streaks, blur, noise
    streak = None
    if has_streaks:
        svc = next(t for t in tubes if t.kind == "svc")
        streak = draw_streaks(VesselPath(svc.points, svc.radii, np.zeros(len(svc.points)), []), conf_rng)
        add_streaks(grid, image, streak)
    if config.add_blur:
        image = apply_blur(image, scan.blur_sigma_mm, spacing)
    if config.add_noise:
        add_noise(image, scan.noise_sd_hu, noise_rng, scan.noise_corr_vox)
    np.rint(image, out=image)
    np.clip(image, _HU_MIN, _HU_MAX, out=image)
    image_hu = image.astype(np.int16)
    del image
    t_end = time.perf_counter()

    emboli_meta = []
    for spec, n_vox, idx in placed:
        centroid = grid.to_mm(idx) + np.array([0.0, 0.0, z_table])
        emboli_meta.append({
            "generation": spec.generation, "kind": spec.kind, "branch": spec.branch_name,
            "volume_mm3": round(n_vox * grid.voxel_volume_mm3, 2), "n_voxels": n_vox,
            "centroid_mm": [round(float(v), 2) for v in centroid], "clot_hu": round(spec.hu, 1),
            "length_mm": round(2 * spec.half_length, 1),
        })
    pe = int(clot_mask.any())
    name = case_name(seed, index)
    metadata = {
        "name": name, "pe": pe, "n_emboli": len(emboli_meta), "emboli": emboli_meta,
        "contrast_hu": round(scan.contrast_hu, 1), "vein_hu": round(scan.vein_hu, 1),
        "noise_sd_hu": round(scan.noise_sd_hu, 2) if config.add_noise else 0.0,
        "noise_correlated": bool(scan.noise_corr_vox > 0) and config.add_noise,
        "blur_sigma_mm": round(scan.blur_sigma_mm, 3) if config.add_blur else 0.0,
        "confounders": {
            "flow_artifacts": [{"generation": f.generation, "min_hu": round(f.min_hu, 1), "width_mm": round(f.width_mm, 1),
                                "center_mm": [round(float(v), 2) for v in
                                              f.path.point_at(f.s_center)[0] + np.array([0.0, 0.0, z_table])]}
                               for f in flows],
            "streaks": streak is not None,
            "lymph_nodes": len(nodes),
            "lymph_node_centers_mm": [[round(float(v), 2) for v in n.ellipsoid.center + np.array([0.0, 0.0, z_table])]
                                      for n in nodes],
        },
        "seed": int(seed), "index": int(index), "spacing_xyz": list(spacing), "size_xyz": list(config.shape_xyz),
        "origin_xyz": list(origin_patient), "body_scale": round(anat.s, 3),
    }
    logger.debug("%s: pe=%d emboli=%d in %.2f s (trees %.2f, tissues %.2f, tubes %.2f, rest %.2f)", name, pe,
                 len(emboli_meta), t_end - t_start, t_trees - t_start, t_paint - t_trees, t_tubes - t_paint,
                 t_end - t_tubes)
    return PhantomCase(name=name, image_hu=image_hu, clot_mask=clot_mask, artery_mask=artery_mask.astype(np.uint8),
                       lung_mask=lung_mask, spacing_xyz=tuple(float(v) for v in spacing),
                       origin_xyz=tuple(float(v) for v in origin_patient), pe=pe, metadata=metadata)


def _paint_arteries(grid: VoxelGrid, image: np.ndarray, raster, seg_branch: np.ndarray, branch_hu: np.ndarray,
                    flows: list) -> None:
    """Blend the arterial contrast into ``image``, lowered along flow-artifact stretches."""
    occ = raster.occupancy.reshape(-1)
    idx = np.flatnonzero(occ > 0)
    if idx.size == 0:
        return
    seg_of = raster.segment.reshape(-1)[idx]
    hu = branch_hu[seg_branch[seg_of]].astype(np.float32)
    if flows:
        iz, iy, ix = np.unravel_index(idx, grid.shape_zyx)
        pts_all = np.stack([grid.xs[ix], grid.ys[iy], grid.zs[iz]], axis=1)
        for fa in flows:
            lo, hi = fa.bounds_mm()
            on = np.flatnonzero(np.all((pts_all >= lo) & (pts_all <= hi), axis=1))
            if on.size:
                hu[on] = flow_artifact_hu(pts_all[on].astype(np.float64), hu[on], fa)
    o = occ[idx]
    flat = image.reshape(-1)
    flat[idx] = flat[idx] * (1.0 - o) + hu * o


def label_row(meta: dict) -> dict:
    """The labels.csv row (image, pe, case metadata) of a case, from its metadata dict."""
    conf = meta["confounders"]
    return {
        "image": meta["name"], "pe": meta["pe"], "n_emboli": meta["n_emboli"], "contrast_hu": meta["contrast_hu"],
        "noise_sd_hu": meta["noise_sd_hu"], "spacing_x": meta["spacing_xyz"][0], "spacing_y": meta["spacing_xyz"][1],
        "spacing_z": meta["spacing_xyz"][2], "size_x": meta["size_xyz"][0], "size_y": meta["size_xyz"][1],
        "size_z": meta["size_xyz"][2], "seed": meta["seed"], "index": meta["index"],
        "blur_sigma_mm": meta["blur_sigma_mm"], "flow_artifacts": len(conf["flow_artifacts"]),
        "streaks": int(conf["streaks"]), "lymph_nodes": conf["lymph_nodes"],
    }


def write_case(case: PhantomCase, out_dir: str | os.PathLike) -> None:
    """Write one case: ``<name>.nii.gz`` (int16 HU), ``truth/<name>_{clot,artery,lung}.nii.gz`` (uint8)
    and ``truth/<name>.json`` (metadata), each file atomically."""
    import SimpleITK as sitk

    out = Path(out_dir)
    items = [(out / f"{case.name}.nii.gz", case.image_hu)] + [
        (out / "truth" / f"{case.name}_{part}.nii.gz", arr)
        for part, arr in (("clot", case.clot_mask), ("artery", case.artery_mask), ("lung", case.lung_mask))]
    for path, arr in items:
        with atomic_output(path) as tmp:
            sitk.WriteImage(case.to_sitk(arr), str(tmp), useCompression=True)
    write_json_atomic(out / "truth" / f"{case.name}.json", case.metadata)


def write_dataset(out_dir: str | os.PathLike, n: int, seed: int, config: PhantomConfig | None = None,
                  progress: bool = True, preview: bool = False) -> list[dict]:
    """Generate cases ``0 .. n-1`` of ``seed`` and write them with ``labels.csv`` into ``out_dir``.

    Writes ``<name>.nii.gz``, ``truth/<name>_clot|_artery|_lung.nii.gz``, ``truth/<name>.json``, and
    ``labels.csv`` (columns :data:`LABEL_COLUMNS`); with ``preview`` also ``preview/<name>.png``.
    Returns the metadata dict of every case.
    """
    from tqdm.auto import tqdm

    from insight.phantom.preview import render_preview

    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    _check_seed(seed, 0)
    config = config or PhantomConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    metas = []
    for i in tqdm(range(n), desc="phantoms", unit="case", disable=not progress):
        case = generate_case(seed, i, config)
        write_case(case, out)
        if preview:
            render_preview(case, out / "preview" / f"{case.name}.png")
        metas.append(case.metadata)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(LABEL_COLUMNS), lineterminator="\n")
    writer.writeheader()
    for meta in metas:
        writer.writerow(label_row(meta))
    write_text_atomic(out / "labels.csv", buf.getvalue())
    n_pos = sum(m["pe"] for m in metas)
    logger.info("wrote %d phantom cases (%d PE-positive) to %s", len(metas), n_pos, out)
    return metas
