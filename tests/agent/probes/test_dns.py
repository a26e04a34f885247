"""dns probe against a real dnsmasq on loopback."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from agent.probes import dns
from agent.runner import run_target
from tests.agent.probes.servers import dnsmasq


@pytest.fixture(scope="module")
def resolver() -> Iterator[str]:
    """Address of a dnsmasq that knows dichvucong.gov.vn and nothing else under gov.vn."""
    with dnsmasq() as port:
        yield f"127.0.0.1:{port}"


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_answer_over_udp_and_tcp(resolver: str, transport: str) -> None:
    result = await run_target(
        dns.Options(address=resolver, query="dichvucong.gov.vn", transport=transport)  # type: ignore[arg-type]
    )
    assert result.up is True, result.detail
    assert result.kind == "dns"
    assert result.rcode == "NOERROR"
    assert result.answers == ["10.22.0.80"]
    assert result.method == f"dns-{transport}"
    assert result.rtt_seconds is not None and result.rtt_seconds > 0


async def test_txt_record(resolver: str) -> None:
    result = await run_target(
        dns.Options(address=resolver, query="dichvucong.gov.vn", record_type="TXT")
    )
    assert result.up is True
    assert result.answers == ['"hatang-test"']


async def test_nxdomain_is_dns_error_with_rcode(resolver: str) -> None:
    result = await run_target(dns.Options(address=resolver, query="khongtontai.gov.vn"))
    assert result.up is False
    assert result.error == "dns_error"
    assert result.rcode == "NXDOMAIN"
    assert result.detail == f"{resolver} answered NXDOMAIN for khongtontai.gov.vn A"


async def test_noerror_without_answer(resolver: str) -> None:
    options = dns.Options(address=resolver, query="dichvucong.gov.vn", record_type="AAAA")
    result = await run_target(options)
    assert (result.up, result.error, result.rcode) == (False, "dns_error", "NOERROR")
    assert result.detail == (
        f"{resolver} answered NOERROR with no AAAA record for dichvucong.gov.vn"
    )
    relaxed = dns.Options(
        address=resolver, query="dichvucong.gov.vn", record_type="AAAA", expect_answer=False
    )
    assert (await run_target(relaxed)).up is True


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
async def test_refused_at_once_when_nothing_listens(host: str) -> None:
    """ICMP port unreachable is heard (connected socket): refused, not a 10 s timeout."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        port = s.getsockname()[1]
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    result = await run_target(
        dns.Options(address=address, query="dichvucong.gov.vn", timeout=10)  # type: ignore[arg-type]
    )
    assert result.up is False
    assert result.error == "refused"
    assert result.detail == f"query {address}: connection refused"


async def test_silent_server_times_out() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))  # bound and never answering
        port = s.getsockname()[1]
        result = await run_target(
            dns.Options(address=f"127.0.0.1:{port}", query="dichvucong.gov.vn", timeout=0.5)  # type: ignore[arg-type]
        )
    assert result.up is False
    assert result.error == "timeout"


def test_dnspython_is_imported_only_when_probing() -> None:
    import subprocess
    import sys

    code = "import sys; import agent.runner, agent.probes; print('dns' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"address": "10.0.0.53", "query": "bad name!"},
            "query: invalid host 'bad name!' (expected an IP address or a DNS name)",
        ),
        (
            {"address": "10.0.0.53:99999", "query": "a.vn"},
            "address: invalid port '99999' (expected 1-65535)",
        ),
    ],
)
def test_bad_options_name_the_key(options: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError) as info:
        dns.Options(**options)  # type: ignore[arg-type]
    assert str(info.value) == message


PROBE_ALONE = """
import asyncio, json, sys
from agent.probes.dns import Options
from agent.runner import run_target
result = asyncio.run(run_target(Options(address=sys.argv[1], query=sys.argv[2])))
loaded = "importlib.metadata" in sys.modules
import importlib.metadata, dns._features
print(json.dumps({"up": result.up, "error": result.error, "metadata_loaded": loaded,
                  "real_metadata_works": bool(importlib.metadata.version("msgspec")),
                  "features": sorted(k for k, v in dns._features._cache.items() if v)}))
"""


@pytest.mark.parametrize("query", ["dichvucong.gov.vn", "dịchvụcông.gov.vn"])
def test_probe_loads_no_package_metadata_and_leaves_it_working(resolver: str, query: str) -> None:
    """dnspython's optional-feature check is kept from importing importlib.metadata (1.3
    MiB for the daemon's life); the real module still works for anyone after."""
    import json
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", PROBE_ALONE, resolver, query],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    outcome = json.loads(out.stdout)
    assert outcome["metadata_loaded"] is False
    assert outcome["real_metadata_works"] is True
    assert outcome["features"] == []
    # dnsmasq knows only dichvucong.gov.vn: the Vietnamese spelling is another name
    # (sent IDNA-encoded), which it answers NXDOMAIN as a resolver would.
    if query.isascii():
        assert (outcome["up"], outcome["error"]) == (True, None)
    else:
        assert (outcome["up"], outcome["error"]) == (False, "dns_error")
