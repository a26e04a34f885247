"""Durations ("60s", "5m", "7d") and sizes ("200MB") as written in config files, and the
base of config sections.

Both also accept a plain number (seconds, bytes). Errors say which forms are accepted,
because the person reading them is editing a YAML file, not Python.
"""

from __future__ import annotations

import math
import re
from typing import Any

import msgspec

from agent.configerror import show as _show

_DURATION = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_DURATION_FORMS = "a number of seconds or a number with a unit: 500ms, 30s, 5m, 1h, 7d"
_SIZE = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*(B|KB|MB|GB|KiB|MiB|GiB)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    None: 1,
}
_SIZE_FORMS = "a number of bytes or a number with a unit: 512KB, 200MB, 1GiB"


class Section(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Base for config sections of every schema: immutable, unknown keys are errors."""


class Duration(float):
    """Seconds, written in config as a number or with a unit: 500ms, 30s, 5m, 1h, 7d."""

    @classmethod
    def parse(cls, value: Any) -> Duration:
        """Parse a config value; raise ValueError saying which forms are accepted."""
        if value is None:
            raise ValueError(f"no value given (expected {_DURATION_FORMS})")
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise ValueError(f"{_show(value)} is not a duration (expected {_DURATION_FORMS})")
        if isinstance(value, int | float):
            seconds = float(value)
        else:
            match = _DURATION.match(value)
            if not match:
                raise ValueError(f"{_show(value)} is not a duration (expected {_DURATION_FORMS})")
            seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        if not math.isfinite(seconds):
            raise ValueError(f"{_show(value)} is not a finite duration")
        if seconds < 0:
            raise ValueError(f"{_show(value)} is negative (expected a duration of 0 or more)")
        return cls(seconds)


class Size(int):
    """Bytes, written in config as a number or with a unit: 512KB, 200MB, 1GiB."""

    @classmethod
    def parse(cls, value: Any) -> Size:
        """Parse a config value; raise ValueError saying which forms are accepted."""
        if value is None:
            raise ValueError(f"no value given (expected {_SIZE_FORMS})")
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise ValueError(f"{_show(value)} is not a size (expected {_SIZE_FORMS})")
        if isinstance(value, int):
            size = value
        else:
            match = _SIZE.match(value)
            if not match:
                raise ValueError(f"{_show(value)} is not a size (expected {_SIZE_FORMS})")
            unit = match.group(2).lower() if match.group(2) else None
            number = float(match.group(1)) * _SIZE_UNITS[unit]
            if not math.isfinite(number):
                raise ValueError(f"{_show(value)} is not a finite size")
            size = int(number)
        if size < 0:
            raise ValueError(f"{_show(value)} is negative (expected a size of 0 or more)")
        if size >= 2**63:  # sizes meet SQLite and file offsets: signed 64-bit
            raise ValueError(f"{_show(value)} is too large (at most 8EiB)")
        return cls(size)


def dec_hook(type_: type, value: Any) -> Any:
    """msgspec decode hook for the config-only scalar types above."""
    if type_ is Duration:
        return Duration.parse(value)
    if type_ is Size:
        return Size.parse(value)
    raise NotImplementedError(f"unsupported type {type_!r}")
