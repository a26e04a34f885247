"""DNS query to a named resolver (not the OS cache): answer, rcode and time.

dnspython is imported inside ``probe`` so that an agent without dns targets never
loads it (the host role's memory budget). Over UDP a truncated answer is retried over
TCP, as resolvers do.

dnspython asks ``importlib.metadata`` at import whether its optional packages are
installed (``dns._features``: IDNA 2008 through ``idna``, DNSSEC, DoH, DoQ, trio,
WMI); that module and what it pulls in (``zipfile``, ``csv``, ``email``...) cost the
daemon 1.3 MiB for the rest of its life. This probe uses none of those features (a
plain query over UDP or TCP), so ``_load_dnspython`` turns them all off before
dnspython looks: the same behaviour on every install, whatever else is installed
beside the agent (names are encoded with the standard library's IDNA 2003 codec,
which encodes Vietnamese names as IDNA 2008 does).
"""

from __future__ import annotations

import socket
import sys
import time
import types
from typing import Annotated, Literal

import msgspec

from agent.probes.base import (
    Deadline,
    ProbeFailed,
    TargetOptions,
    check_host,
    check_timeout,
    describe,
    failure,
    format_host_port,
    reason_for,
    resolve,
    split_host_port,
    with_family,
)
from agent.report import ProbeResult

_MAX_ANSWERS = 32


class Options(TargetOptions, frozen=True, tag="dns"):
    query: Annotated[str, msgspec.Meta(min_length=1, max_length=253)]
    record_type: Literal["A", "AAAA", "CNAME", "MX", "NS", "SOA", "TXT", "PTR", "SRV"] = "A"
    transport: Literal["udp", "tcp"] = "udp"
    expect_answer: bool = True  # NOERROR with no answer is "down" unless this is false

    def __post_init__(self) -> None:
        host, _ = split_host_port(self.address, default_port=53)
        check_host(host)
        check_host(self.query, key="query")
        check_timeout(self.timeout)


async def probe(options: Options) -> ProbeResult:
    """Ask the resolver at ``address`` for ``query`` and judge the answer."""
    host, port = split_host_port(options.address, default_port=53)
    deadline = Deadline(options.timeout)
    try:
        family, sockaddr = (
            await resolve(host, port, kind=socket.SOCK_DGRAM, family=options.family)
        )[0]
    except ProbeFailed as exc:
        return with_family(failure(options, exc.error, exc.detail), options, None)
    server = sockaddr[0]
    return with_family(await _query(options, server, port, deadline), options, family)


# dnspython's optional features (dns._features), none of which this probe uses.
_FEATURES_OFF = ("dnssec", "doh", "doq", "idna", "trio", "wmi")


def _load_dnspython() -> None:
    """Import ``dns._features`` without ``importlib.metadata`` and turn every optional
    feature off, before any other dnspython module asks for one."""
    if "dns._features" in sys.modules:
        return
    real = sys.modules.get("importlib.metadata")
    # Only its import sees this stand-in: every feature is forced off below, so no
    # version is ever looked up through it.
    sys.modules["importlib.metadata"] = types.ModuleType("importlib.metadata")
    try:
        import dns._features
    finally:
        if real is None:
            del sys.modules["importlib.metadata"]
        else:
            sys.modules["importlib.metadata"] = real
    for feature in (*_FEATURES_OFF, *getattr(dns._features, "_requirements", ())):
        dns._features.force(feature, False)


async def _query(options: Options, server: str, port: int, deadline: Deadline) -> ProbeResult:
    """Send the query to one resolver address and judge the answer."""
    _load_dnspython()
    import dns.asyncbackend
    import dns.asyncquery
    import dns.exception
    import dns.message
    import dns.rcode
    import dns.rdatatype

    where = format_host_port(server, port)
    request = dns.message.make_query(options.query, options.record_type)
    start = time.monotonic()
    try:
        if options.transport == "tcp":
            response = await dns.asyncquery.tcp(
                request, server, timeout=deadline.remaining(), port=port
            )
            method = "dns-tcp"
        else:
            # A connected UDP socket hears ICMP port unreachable, so a resolver that is
            # not running is "refused" at once instead of a timeout.
            backend = dns.asyncbackend.get_default_backend()
            family = socket.AF_INET6 if ":" in server else socket.AF_INET
            async with await backend.make_socket(  # type: ignore[no-untyped-call]
                family, socket.SOCK_DGRAM, 0, None, (server, port)
            ) as udp_sock:
                response, used_tcp = await dns.asyncquery.udp_with_fallback(
                    request, server, timeout=deadline.remaining(), port=port, udp_sock=udp_sock
                )
            method = "dns-tcp" if used_tcp else "dns-udp"
    except dns.exception.Timeout:
        return failure(options, "timeout", f"no answer from {where} for {options.query}")
    except OSError as exc:
        return failure(options, reason_for(exc), f"query {where}: {describe(exc)}")
    except dns.exception.DNSException as exc:
        return failure(options, "protocol_error", f"bad answer from {where}: {describe(exc)}")
    rtt = time.monotonic() - start

    rcode = dns.rcode.to_text(response.rcode())
    wanted = dns.rdatatype.from_text(options.record_type)
    answers: list[str] = []
    matching = 0
    for rrset in response.answer:
        for rdata in rrset:
            matching += rrset.rdtype == wanted
            if len(answers) < _MAX_ANSWERS:
                answers.append(rdata.to_text()[:1024])
    result = ProbeResult(
        kind="dns",
        target=options.label,
        up=True,
        rtt_seconds=rtt,
        method=method,
        rcode=rcode,
        answers=answers,
    )
    if rcode != "NOERROR":
        result.up, result.error = False, "dns_error"
        result.detail = f"{where} answered {rcode} for {options.query} {options.record_type}"
    elif matching == 0 and options.expect_answer:
        result.up, result.error = False, "dns_error"
        result.detail = (
            f"{where} answered NOERROR with no {options.record_type} record for {options.query}"
        )
    return result
