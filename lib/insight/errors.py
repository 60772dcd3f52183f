"""Exceptions that carry a message meant for the user (CLI, server), never a traceback."""

from __future__ import annotations

__all__ = ["InsightError", "InputError", "ModelError"]


class InsightError(Exception):
    """Base class: something the user can act on went wrong; ``str(err)`` says what."""


class InputError(InsightError, ValueError):
    """An input file, folder or argument is unreadable or unsuitable."""


class ModelError(InsightError):
    """A checkpoint is missing, corrupt or incompatible with this version of the library."""
