"""Choosing the torch device, and the autocast context used on it."""

from __future__ import annotations

import contextlib

import torch

from insight.errors import InputError

__all__ = ["resolve_device", "autocast_for"]


def resolve_device(name: str | None = "auto") -> torch.device:
    """``auto`` (or None) picks CUDA when present, else CPU; ``cpu``, ``cuda``, ``cuda:1`` as given."""
    if name in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise InputError(f"unknown device {name!r}: use auto, cpu or cuda[:N]") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {name!r} requested but CUDA is not available on this machine")
    return device


def autocast_for(device: torch.device, enabled: bool = True) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA when ``enabled``; a no-op context on CPU."""
    if enabled and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()
