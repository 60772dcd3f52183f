"""Image + mask pairs for segmentation training: which label each case uses, and patch sampling.

A case's label is its clinician-corrected ("final") mask when there is one, else its pseudo-mask;
final labels weigh ``SegTrainConfig.final_weight`` in the loss, pseudo-masks ``pseudo_weight``.
Volumes are put onto the segmentation grid once (:func:`prepare_pair`) and kept in memory; patches are
drawn from them by MONAI transforms (RandCropByPosNegLabeld and light augmentation).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
import torch
from monai.transforms import (CastToTyped, Compose, EnsureTyped, RandCropByPosNegLabeld, RandFlipd,
                              RandScaleIntensityd, RandShiftIntensityd, SpatialPadd)

from insight.config import PreprocessConfig
from insight.errors import InputError
from insight.io.image_io import IMAGE_SUFFIXES, case_name, find_images, read_image
from insight.preprocessing import prepare_volume
from insight.segmentation.config import SegTrainConfig

__all__ = ["LABEL_SOURCES", "LabeledVolume", "PreparedPair", "find_label_file", "collect_label_pairs",
           "prepare_pair", "training_transforms", "as_training_items"]

logger = logging.getLogger(__name__)

#: Where a training label came from, most trusted first.
LABEL_SOURCES = ("final", "pseudo")


@dataclass(frozen=True)
class LabeledVolume:
    """One training case: an image, its mask (non-zero = PE), where the mask came from, its loss weight."""

    name: str
    image_path: Path
    label_path: Path
    source: str
    weight: float


@dataclass
class PreparedPair:
    """A case on the segmentation grid.

    Attributes:
        image: float16 [1, Z, Y, X], HU windowed onto [0, 1].
        label: uint8 [1, Z, Y, X], 1 = PE.
    """

    name: str
    image: torch.Tensor
    label: torch.Tensor
    source: str
    weight: float


def find_label_file(folder: str | os.PathLike, name: str) -> Path | None:
    """``<folder>/<name>.<ext>`` for any image extension, else None."""
    for suffix in IMAGE_SUFFIXES:
        candidate = Path(folder) / f"{name}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def collect_label_pairs(images: str | os.PathLike | Sequence[Path], train_config: SegTrainConfig,
                        pseudo_dir: str | os.PathLike | None = None,
                        final_dir: str | os.PathLike | None = None) -> list[LabeledVolume]:
    """Pair every image with its final label (preferred) or pseudo-mask, named like the image.

    Args:
        images: a folder of volumes, or a list of volume paths.
        pseudo_dir, final_dir: folders of label volumes ``<name>.nii.gz`` (either may be None).

    Raises:
        InputError: a folder is missing, or no image has a label.
    """
    for option, folder in (("pseudo-mask", pseudo_dir), ("final label", final_dir)):
        if folder is not None and not Path(folder).is_dir():
            raise InputError(f"{option} folder not found: {folder}")
    if isinstance(images, (str, os.PathLike)):
        if not Path(images).is_dir():
            raise InputError(f"image folder not found: {images}")
        image_paths = find_images(images)
    else:
        image_paths = list(images)
    cases, unlabeled = [], []
    for path in image_paths:
        name = case_name(path)
        folders = [(source, folder) for source, folder in (("final", final_dir), ("pseudo", pseudo_dir)) if folder]
        found = [(source, find_label_file(folder, name)) for source, folder in folders]
        found = [(source, label) for source, label in found if label is not None]
        if not found:
            unlabeled.append(name)
            continue
        source, label = found[0]
        cases.append(LabeledVolume(name, Path(path), label, source, train_config.weight_for(source)))
    if unlabeled:
        logger.info("%d image(s) without a label are left out: %s", len(unlabeled), ", ".join(unlabeled[:10]))
    if not cases:
        raise InputError("no image has a label: masks must be named like their images (<name>.nii.gz) in the "
                         "final-label or pseudo-mask folder")
    counts = {s: sum(c.source == s for c in cases) for s in LABEL_SOURCES}
    logger.info("%d training case(s): %d with final labels (weight %g), %d with pseudo-masks (weight %g)",
                len(cases), counts["final"], train_config.final_weight, counts["pseudo"], train_config.pseudo_weight)
    return cases


def prepare_pair(case: LabeledVolume, preprocess: PreprocessConfig) -> PreparedPair:
    """Read a case and put image and label onto the segmentation grid (label: nearest neighbour).

    Raises:
        InputError: unreadable files, or a label whose size differs from the image's.
    """
    image = read_image(case.image_path)
    label = read_image(case.label_path)
    if label.GetSize() != image.GetSize():
        raise InputError(f"{case.label_path.name}: label size {label.GetSize()} differs from image "
                         f"{case.image_path.name} size {image.GetSize()}")
    label = sitk.Cast(sitk.NotEqual(label, 0), sitk.sitkUInt8)
    label.CopyInformation(image)  # same size: the label is on the image's grid (tolerates rounding in headers)
    prepared = prepare_volume(image, preprocess)
    on_grid = sitk.Resample(label, prepared.grid, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    image_array = torch.from_numpy(np.ascontiguousarray(prepared.windowed)).to(torch.float16)[None]
    label_array = torch.from_numpy(sitk.GetArrayFromImage(on_grid))[None]
    return PreparedPair(case.name, image_array, label_array, case.source, case.weight)


def as_training_items(pairs: Sequence[PreparedPair]) -> list[dict[str, Any]]:
    """The dicts the transforms read: ``image``, ``label``, ``weight``, ``name``."""
    return [{"image": p.image, "label": p.label, "weight": float(p.weight), "name": p.name} for p in pairs]


def training_transforms(patch_size_zyx: Sequence[int], train_config: SegTrainConfig) -> Compose:
    """Patch sampling and augmentation on prepared items -> a list of ``samples_per_case`` patches.

    Patches are ``patch_size_zyx``; ``positive_fraction`` of them centred on a PE voxel (all negative
    when the label is empty), the others on a body voxel (windowed value > 0, i.e. above -250 HU).
    """
    keys = ["image", "label"]
    pos = train_config.positive_fraction
    steps: list[Any] = [
        CastToTyped(keys=["image"], dtype=torch.float32),
        SpatialPadd(keys=keys, spatial_size=tuple(patch_size_zyx)),
        RandCropByPosNegLabeld(keys=keys, label_key="label", spatial_size=tuple(patch_size_zyx), pos=pos,
                               neg=1.0 - pos, num_samples=train_config.samples_per_case, image_key="image",
                               image_threshold=0.0),
    ]
    if train_config.augment:
        steps += [
            RandFlipd(keys=keys, prob=0.5, spatial_axis=2),  # left-right
            RandScaleIntensityd(keys=["image"], factors=0.1, prob=0.5),
            RandShiftIntensityd(keys=["image"], offsets=0.05, prob=0.5),
        ]
    steps.append(EnsureTyped(keys=keys, track_meta=False))
    return Compose(steps)
