"""Reading JSON configuration files (benchmark, campaign) into typed dataclasses, with clear errors."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from insight.errors import InputError

__all__ = ["read_json_config", "check_top_level", "dataclass_from_json"]


def read_json_config(path: str | Path, what: str) -> Any:
    """The decoded JSON of ``path``; InputError naming ``what`` when it is missing or unreadable."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{what} not found: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(f"cannot read {what} {path}: {err}") from err


def check_top_level(payload: Any, allowed: set[str] | frozenset[str], source: str) -> None:
    """InputError unless ``payload`` is a JSON object whose keys are all in ``allowed``."""
    if not isinstance(payload, dict):
        raise InputError(f"{source}: the top level must be a JSON object")
    unknown = set(payload) - set(allowed)
    if unknown:
        raise InputError(f"{source}: unknown keys {sorted(unknown)} (allowed: {sorted(allowed)})")


def dataclass_from_json(kind: type, values: Any, block: str) -> Any:
    """Build dataclass ``kind`` from the JSON object ``values`` (lists become tuples).

    Raises:
        ValueError: ``values`` is not an object, names an unknown field, or ``kind`` rejects a value
            (the message names ``block``).
    """
    if not isinstance(values, dict):
        raise ValueError(f"'{block}' must be a JSON object")
    names = {f.name for f in dataclasses.fields(kind)}
    unknown = set(values) - names
    if unknown:
        raise ValueError(f"'{block}': unknown settings {sorted(unknown)} (allowed: {sorted(names)})")
    try:
        return kind(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})
    except (ValueError, TypeError) as err:
        raise ValueError(f"'{block}': {err}") from err
