"""Training-time augmentation of windowed volumes (MONAI transforms, seeded per epoch)."""

from __future__ import annotations

import torch
from monai.transforms import Compose, RandGaussianNoise, RandScaleIntensity, RandShiftIntensity

__all__ = ["VolumeAugmenter"]


class VolumeAugmenter:
    """Small random intensity scale/shift and noise on [Z, Y, X] volumes in [0, 1].

    The scan-level label is unchanged by all of them. ``reseed(n)`` makes the sequence reproducible.
    The left-right flip is done by the trainer, which must flip the search region with the volume.
    """

    def __init__(self) -> None:
        self.transforms = Compose([
            RandScaleIntensity(factors=0.05, prob=0.5),
            RandShiftIntensity(offsets=0.02, prob=0.5),
            RandGaussianNoise(prob=0.3, std=0.01),
        ])

    def reseed(self, seed: int) -> None:
        self.transforms.set_random_state(seed=seed % (2**32))

    def __call__(self, volume: torch.Tensor) -> torch.Tensor:
        out = self.transforms(volume.unsqueeze(0))
        return torch.as_tensor(out).squeeze(0).float()
