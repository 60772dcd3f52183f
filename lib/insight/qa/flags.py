"""QA results: one :class:`QAFlag` per problem found, gathered in a :class:`QAReport` with a verdict.

The JSON form (``QAReport.to_json``) is the ``qa`` object of the predict/infer answer::

    {"verdict": "pass" | "warn" | "fail",
     "summary": "one line for a human, empty when the verdict is pass",
     "flags": [{"code": "not_ctpa", "message": "...", "severity": "fail", "check": "ctpa", ...}, ...],
     "measurements": {"pulmonary_trunk_hu": 381.0, ...}}

``flags`` keeps the original contract (a list of objects with at least ``code`` and ``message``);
every other key is additive.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Literal

__all__ = ["Severity", "Verdict", "QAFlag", "QAReport", "SEVERITY_ORDER"]

Severity = Literal["info", "warn", "fail"]
Verdict = Literal["pass", "warn", "fail"]

#: Severities from least to most serious; a report's verdict is its most serious flag.
SEVERITY_ORDER: tuple[str, ...] = ("info", "warn", "fail")
_FLOAT_DECIMALS = 3


@dataclass(frozen=True)
class QAFlag:
    """One QA problem.

    Attributes:
        code: stable machine-readable code (``missing_slices``, ``not_ctpa``, ...); clients key on it.
        message: one sentence for a human: what was found, with the measured numbers.
        severity: ``info`` (noted, no effect on the verdict), ``warn`` (read with care) or ``fail``
            (the findings cannot be trusted for this study; they are still returned).
        check: the group that raised it: ``acquisition``, ``ctpa`` or ``heatmap``.
        details: extra JSON-ready fields (measured values, thresholds, slice indices), merged into the
            flag's JSON object.
    """

    code: str
    message: str
    severity: Severity = "warn"
    check: str = "acquisition"
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.severity not in SEVERITY_ORDER:
            raise ValueError(f"severity must be one of {SEVERITY_ORDER}, got {self.severity!r}")
        if not self.code or not self.message:
            raise ValueError("a QA flag needs a code and a message")
        reserved = {"code", "message", "severity", "check"} & set(self.details)
        if reserved:
            raise ValueError(f"details may not override {sorted(reserved)}")

    def to_json(self) -> dict[str, Any]:
        """``{code, message, severity, check, **details}`` with plain JSON types."""
        return {"code": self.code, "message": self.message, "severity": self.severity, "check": self.check,
                **{key: _plain(value) for key, value in self.details.items()}}


@dataclass
class QAReport:
    """All flags and measurements of one study's QA.

    Attributes:
        flags: problems found, in the order the checks ran.
        measurements: named numbers the checks measured (HU, mm, fractions), also for passing studies.
        timings_s: seconds per QA stage (not part of ``to_json``; the predictor reports the total).
    """

    flags: list[QAFlag] = field(default_factory=list)
    measurements: dict[str, Any] = field(default_factory=dict)
    timings_s: dict[str, float] = field(default_factory=dict)

    @property
    def verdict(self) -> Verdict:
        """``fail`` if any flag fails, else ``warn`` if any warns, else ``pass``."""
        worst = max((SEVERITY_ORDER.index(f.severity) for f in self.flags), default=0)
        return ("pass", "warn", "fail")[worst]  # type: ignore[return-value]

    @property
    def codes(self) -> list[str]:
        """The flags' codes, in order."""
        return [f.code for f in self.flags]

    def has(self, code: str) -> bool:
        """True when a flag with ``code`` was raised."""
        return code in self.codes

    def extend(self, flags: Iterable[QAFlag]) -> None:
        self.flags.extend(flags)

    def summary(self) -> str:
        """One line for a human: empty when the study passed, else what failed or warned."""
        serious = [f for f in self.flags if f.severity != "info"]
        if not serious:
            return ""
        head = ("QA failed: the findings below may not be trustworthy" if self.verdict == "fail"
                else "QA warning: read the findings with care")
        return f"{head} ({', '.join(dict.fromkeys(f.code for f in serious))})"

    def merged(self, other: "QAReport") -> "QAReport":
        """A new report holding this report's flags and measurements followed by ``other``'s."""
        return QAReport(flags=[*self.flags, *other.flags], measurements={**self.measurements, **other.measurements},
                        timings_s={**self.timings_s, **other.timings_s})

    def to_json(self) -> dict[str, Any]:
        """The ``qa`` object of the predict/infer JSON (see the module docstring)."""
        return {"verdict": self.verdict, "summary": self.summary(), "flags": [f.to_json() for f in self.flags],
                "measurements": {key: _plain(value) for key, value in self.measurements.items()}}


def _plain(value: Any) -> Any:
    """numpy scalars/arrays, tuples and non-finite floats -> JSON-ready Python values (NaN -> None)."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        return round(value, _FLOAT_DECIMALS) if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return str(value)
