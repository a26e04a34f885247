"""Durations ("60s", "5m", "7d") and sizes ("200MB") as written in config files."""

from __future__ import annotations

import re
from typing import Any

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|KiB|MiB|GiB)?\s*$", re.IGNORECASE)
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


class Duration(float):
    """Seconds, written in config as a number or with a unit: 500ms, 30s, 5m, 1h, 7d."""

    @classmethod
    def parse(cls, value: Any) -> Duration:
        """Parse a config value; raise ValueError with the accepted forms."""
        if isinstance(value, bool):
            raise ValueError(f"invalid duration {value!r} (use e.g. 30s, 5m, 1h)")
        if isinstance(value, int | float):
            seconds = float(value)
        else:
            match = _DURATION.match(str(value))
            if not match:
                raise ValueError(f"invalid duration {value!r} (use e.g. 500ms, 30s, 5m, 1h, 7d)")
            seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        if seconds < 0:
            raise ValueError(f"invalid duration {value!r}: must not be negative")
        return cls(seconds)


class Size(int):
    """Bytes, written in config as a number or with a unit: 512KB, 200MB, 1GiB."""

    @classmethod
    def parse(cls, value: Any) -> Size:
        """Parse a config value; raise ValueError with the accepted forms."""
        if isinstance(value, bool):
            raise ValueError(f"invalid size {value!r} (use e.g. 200MB, 1GiB)")
        if isinstance(value, int):
            size = value
        else:
            match = _SIZE.match(str(value))
            if not match:
                raise ValueError(f"invalid size {value!r} (use e.g. 512KB, 200MB, 1GiB)")
            unit = match.group(2).lower() if match.group(2) else None
            size = int(float(match.group(1)) * _SIZE_UNITS[unit])
        if size < 0:
            raise ValueError(f"invalid size {value!r}: must not be negative")
        return cls(size)


def dec_hook(type_: type, value: Any) -> Any:
    """msgspec decode hook for the config-only scalar types above."""
    if type_ is Duration:
        return Duration.parse(value)
    if type_ is Size:
        return Size.parse(value)
    raise NotImplementedError(f"unsupported type {type_!r}")
