"""Small builders shared by tests (no fixtures here: see conftest.py)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from insight.config import InsightConfig, ModelConfig
from insight.models import InsightModel
from insight.models.checkpoint import save_checkpoint

REPO = Path(__file__).resolve().parents[1]
REAL_DICOM_SERIES = REPO / "tests" / "data" / "real-ct" / "A0002_B40f_8slices"
TINY_MODEL = ModelConfig(encoder_channels=(8, 16, 16), reduce_channels=16, head_widths=(16, 8, 8))


def oblique_direction(angle_deg: float = 20.0, flip_x: bool = False) -> tuple[float, ...]:
    """A rotation about z by ``angle_deg`` (optionally with x flipped, i.e. RAS-like), row-major 3x3."""
    a = math.radians(angle_deg)
    rot = np.array([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0], [0.0, 0.0, 1.0]])
    if flip_x:
        rot = rot @ np.diag([-1.0, 1.0, 1.0])
    return tuple(rot.ravel())


def make_volume(size_xyz=(40, 36, 12), spacing=(1.3, 1.1, 2.5), origin=(-20.0, 15.0, -40.0),
                direction=None, seed=0) -> sitk.Image:
    """A random int16 'CT' with the given geometry: air background, a soft-tissue box, a bright tube."""
    rng = np.random.default_rng(seed)
    nx, ny, nz = size_xyz
    arr = np.full((nz, ny, nx), -1000, dtype=np.int16)
    arr[:, ny // 4 : 3 * ny // 4, nx // 4 : 3 * nx // 4] = 40
    arr[:, ny // 2 - 2 : ny // 2 + 2, nx // 2 - 2 : nx // 2 + 2] = 350
    arr += rng.integers(-20, 20, size=arr.shape, dtype=np.int16)
    image = sitk.GetImageFromArray(arr)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    if direction is not None:
        image.SetDirection(direction)
    return image


def save_tiny_checkpoint(path: Path, version: str = "test-tiny") -> Path:
    """A randomly initialised small model, saved as a real checkpoint."""
    config = InsightConfig(model=TINY_MODEL)
    model = InsightModel(config.model, config.preprocess.in_channels)
    return save_checkpoint(path, model, config, version)
