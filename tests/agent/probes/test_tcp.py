"""tcp probe against real listeners on loopback."""

from __future__ import annotations

import socket

import pytest

from agent.probes import tcp
from agent.runner import run_target
from agent.units import Duration
from tests.agent.probes.servers import tcp_listener


async def test_open_port_is_up_with_connect_time() -> None:
    with tcp_listener() as (sock, _):
        port = sock.getsockname()[1]
        result = await run_target(tcp.Options(address=f"127.0.0.1:{port}", timeout=Duration(5)))
    assert result.up is True
    assert result.kind == "tcp" and result.target == f"127.0.0.1:{port}"
    assert result.error is None
    assert result.rtt_seconds is not None and result.rtt_seconds > 0
    assert result.duration_seconds is not None and result.duration_seconds >= result.rtt_seconds
    assert result.method == f"tcp:{port}"


async def test_ipv6_loopback() -> None:
    with tcp_listener("::1") as (sock, _):
        port = sock.getsockname()[1]
        result = await run_target(tcp.Options(address=f"[::1]:{port}"))
    assert result.up is True, result.detail


async def test_name_is_resolved_before_timing() -> None:
    with tcp_listener() as (sock, _):
        port = sock.getsockname()[1]
        result = await run_target(tcp.Options(address=f"localhost:{port}", name="local"))
    assert result.up is True
    assert result.target == "local"


async def test_closed_port_is_refused() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: the kernel answers RST
        result = await run_target(tcp.Options(address=f"127.0.0.1:{port}"))
    assert result.up is False
    assert result.error == "refused"
    assert result.detail == f"connect to 127.0.0.1:{port}: connection refused"


async def test_unresolvable_name_is_dns_error() -> None:
    result = await run_target(tcp.Options(address="khong-ton-tai.invalid:443", timeout=Duration(5)))
    assert result.up is False
    assert result.error == "dns_error"
    assert result.detail is not None and result.detail.startswith("resolve khong-ton-tai.invalid:")


@pytest.mark.parametrize(
    ("address", "message"),
    [
        ("10.0.0.1", "address: port missing (expected host:port)"),
        ("10.0.0.1:0", "address: invalid port '0' (expected 1-65535)"),
        ("10.0.0.1:http", "address: invalid port 'http' (expected 1-65535)"),
        ("[::1", "address: unclosed '[' in IPv6 address"),
        (":80", "address: host missing"),
        ("bad host:80", "address: invalid host 'bad host' (expected an IP address or a DNS name)"),
    ],
)
def test_bad_address_names_the_key(address: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        tcp.Options(address=address)
    assert str(info.value) == message


def test_timeout_bounds() -> None:
    with pytest.raises(ValueError, match=r"^timeout: 0s is out of range"):
        tcp.Options(address="10.0.0.1:80", timeout=0)  # type: ignore[arg-type]
