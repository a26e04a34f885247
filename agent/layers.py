"""Configuration layers: which keys the collector may set centrally, and how layers merge.

Shared by the collector (merging its layer files, ``collector/central.py``) and the agent
(its local file over the central config, ``agent/central.py``); it imports nothing, so
the collector can use it without loading the agent's probes.
"""

from __future__ import annotations

import copy
from typing import Any, Final

# The keys the collector's central configuration may set (collector/central.py); every
# other key (site, role, agent_id, collector, spool, log, central) is local to the PC.
CENTRAL_KEYS: Final = (
    "interval",
    "jitter",
    "networks",
    "inventory",
    "antivirus",
    "patches",
    "discovery",
    "snmp",
    "throughput",  # the province points every site probe at its payload in one place
)
LOCAL_KEYS: Final = ("site", "role", "agent_id", "collector", "spool", "log", "central")


def merge_config(
    into: dict[str, Any],
    layer: Any,
    *,
    file: str = "",
    origin: dict[str, str] | None = None,
    prefix: str = "",
) -> dict[str, Any]:
    """Merge a config layer into ``into`` (changed in place and returned): mappings merge
    key by key, lists and values replace. ``origin`` records which ``file`` set each key
    path, so an error in the merged config can name the file it came from."""
    for key, value in layer.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        current = into.get(key)
        if isinstance(value, dict) and isinstance(current, dict):
            merge_config(current, value, file=file, origin=origin, prefix=path)
            continue
        into[key] = copy.deepcopy(value)
        if origin is not None:
            for stale in [p for p in origin if p.startswith((path + ".", path + "["))]:
                del origin[stale]
            origin[path] = file
    return into
