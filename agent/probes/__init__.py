"""The probe registry: the one list of probe kinds (DESIGN: icmp, tcp, dns, http)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final, Union

from agent.probes import dns, http, icmp, tcp
from agent.probes.base import ProbeFn, TargetOptions

PROBES: Final[Mapping[str, tuple[type[TargetOptions], ProbeFn[Any]]]] = {
    "icmp": (icmp.Options, icmp.probe),
    "tcp": (tcp.Options, tcp.probe),
    "dns": (dns.Options, dns.probe),
    "http": (http.Options, http.probe),
}

# The tagged union that config validation decodes targets into (``kind`` picks the struct),
# built from the registry so that the kinds are listed nowhere else.
if TYPE_CHECKING:
    TargetConfig = TargetOptions
else:
    TargetConfig = Union[tuple(options for options, _ in PROBES.values())]  # noqa: UP007


def probe_for(options: TargetOptions) -> ProbeFn[Any]:
    """Return the probe function for a target's options."""
    return PROBES[options.kind][1]
