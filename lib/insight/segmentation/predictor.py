"""Load a segmentation checkpoint once, then segment PE in many volumes (label volume on the input grid)."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import SimpleITK as sitk
import torch

from insight import __version__
from insight.devices import resolve_device
from insight.io.image_io import case_name, read_image
from insight.metrics import label_components
from insight.preprocessing import prepare_volume, to_reference_grid
from insight.pseudo_masks.morphology import remove_small_regions
from insight.segmentation.checkpoint import load_segmentation_checkpoint
from insight.segmentation.config import SegmentationConfig
from insight.segmentation.windows import pe_probability

__all__ = ["SegmentationResult", "SegmentationPredictor", "PE_LABEL"]

logger = logging.getLogger(__name__)

#: Label value of PE voxels in the output volume (MONAI Label ``{"pe": 1}``).
PE_LABEL = 1


@dataclass
class SegmentationResult:
    """One volume's segmentation.

    Attributes:
        name: case name.
        label: uint8 SimpleITK image with exactly the input's grid (size, spacing, origin, direction);
            :data:`PE_LABEL` = PE, 0 = background.
        probability: float32 PE probability on the input grid.
        model_version: the checkpoint's version.
        n_regions: 26-connected PE regions.
        volume_mm3: PE volume.
        peak_probability: the highest PE probability of any voxel on the input grid, in [0, 1]: a
            scan-level score (how sure the model is of its most suspicious voxel), whatever the threshold.
        timings_s: seconds per stage.
    """

    name: str
    label: sitk.Image
    probability: sitk.Image
    model_version: str
    n_regions: int
    volume_mm3: float
    peak_probability: float
    timings_s: dict[str, float] = field(default_factory=dict)
    source: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "source": self.source, "model_version": self.model_version,
                "insight_version": __version__, "labels": {"pe": PE_LABEL}, "n_regions": self.n_regions,
                "volume_mm3": round(self.volume_mm3, 2), "peak_probability": round(self.peak_probability, 4),
                "size_xyz": list(self.label.GetSize()),
                "timings_s": {k: round(v, 4) for k, v in self.timings_s.items()}}


class SegmentationPredictor:
    """A segmentation network loaded once; callers sharing it across threads serialize calls."""

    def __init__(self, model: torch.nn.Module, config: SegmentationConfig, model_version: str,
                 device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.config = config
        self.model_version = model_version

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, device: str | None = "auto") -> "SegmentationPredictor":
        dev = resolve_device(device)
        loaded = load_segmentation_checkpoint(path, dev)
        logger.info("loaded segmentation model %s from %s on %s", loaded.model_version, path, dev)
        return cls(loaded.model, loaded.config, loaded.model_version, dev)

    def predict_file(self, path: str | os.PathLike) -> SegmentationResult:
        """Read a volume file or DICOM series folder and segment it."""
        start = time.perf_counter()
        image = read_image(path)
        read_s = time.perf_counter() - start
        result = self.predict_image(image, name=case_name(path))
        result.timings_s = {"read": read_s, **result.timings_s}
        result.source = str(path)
        return result

    def predict_image(self, image: sitk.Image, name: str = "volume") -> SegmentationResult:
        """Segment one HU volume; the label comes back on ``image``'s exact voxel grid.

        The PE probability is computed on the segmentation grid (sliding window), resampled linearly
        onto the input grid through patient coordinates, then thresholded there.
        """
        timings: dict[str, float] = {}
        start = time.perf_counter()
        prepared = prepare_volume(image, self.config.preprocess)
        timings["preprocess"] = time.perf_counter() - start

        start = time.perf_counter()
        probability = pe_probability(self.model, torch.from_numpy(prepared.windowed), self.config, self.device)
        timings["model"] = time.perf_counter() - start

        start = time.perf_counter()
        on_grid = sitk.GetImageFromArray(probability.numpy().astype(np.float32))
        on_grid.CopyInformation(prepared.grid)
        on_input = to_reference_grid(on_grid, image, default_value=0.0)
        on_input.CopyInformation(image)
        spacing_zyx = tuple(float(s) for s in reversed(image.GetSpacing()))
        probability_zyx = sitk.GetArrayViewFromImage(on_input)
        peak = float(probability_zyx.max()) if probability_zyx.size else 0.0
        mask = probability_zyx >= self.config.inference.threshold
        mask = remove_small_regions(mask, self.config.inference.min_region_volume_mm3, spacing_zyx)
        _, n_regions = label_components(mask)
        label = sitk.GetImageFromArray(mask.astype(np.uint8) * PE_LABEL)
        label.CopyInformation(image)
        timings["postprocess"] = time.perf_counter() - start
        volume = float(mask.sum()) * float(np.prod(spacing_zyx))
        return SegmentationResult(name, label, on_input, self.model_version, n_regions, volume, peak, timings)
