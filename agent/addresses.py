"""What kind of IPv6 address a computer has: the one rule the agent and collector share.

An address is *global* when it is global unicast, 2000::/3 (RFC 4291), the space every
routed IPv6 address comes from. Link-local (fe80::/10) and unique local (fc00::/7)
addresses are not: they work inside the office and reach nothing beyond it. The
documentation prefix 2001:db8::/32 lies inside 2000::/3 and counts as global; it never
appears on a real network, and test topologies use it for that reason. Python's
``is_global`` is not used because it excludes such special-purpose blocks by registry,
which would make a namespace test unable to stand for a real office.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Final, Literal

Ipv6Scope = Literal["global", "unique_local", "link_local", "loopback", "other"]
_GLOBAL_UNICAST: Final = ipaddress.IPv6Network("2000::/3")


def ipv6_scope(text: str) -> Ipv6Scope | None:
    """The scope of one IPv6 address (a ``%zone`` or ``/prefix`` is ignored); None if not IPv6."""
    try:
        address = ipaddress.IPv6Address(text.split("%", 1)[0].split("/", 1)[0].strip())
    except ValueError:
        return None
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link_local"
    if address in _GLOBAL_UNICAST:
        return "global"
    if address.is_private and address in ipaddress.IPv6Network("fc00::/7"):
        return "unique_local"
    return "other"


def has_global_ipv6(addresses: Iterable[str]) -> bool:
    """Whether any of ``addresses`` is a global unicast IPv6 address."""
    return any(ipv6_scope(a) == "global" for a in addresses)
