"""http probe against real HTTP and HTTPS servers on loopback (TLS from a trustme CA)."""

from __future__ import annotations

import datetime as dt
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from agent.probes import http
from agent.runner import run_target
from agent.units import Size
from tests.agent.probes.servers import Server, http_server, tcp_listener, tls_context, write_pem


@pytest.fixture
def server() -> Iterator[Server]:
    with http_server() as srv:
        yield srv


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def https(ca: trustme.CA, tmp_path: Path) -> Iterator[tuple[Server, str]]:
    """An HTTPS server whose certificate (for localhost) expires in 30 days; yields CA file."""
    now = dt.datetime.now(dt.UTC)
    leaf = ca.issue_cert(
        "localhost",
        "127.0.0.1",
        not_before=now - dt.timedelta(days=1),
        not_after=now + dt.timedelta(days=30),
    )
    cert = write_pem(tmp_path, "cert.pem", b"".join(p.bytes() for p in leaf.cert_chain_pems))
    key = write_pem(tmp_path, "key.pem", leaf.private_key_pem.bytes())
    ca_file = write_pem(tmp_path, "ca.pem", ca.cert_pem.bytes())
    with http_server(tls=tls_context(cert, key)) as srv:
        yield srv, ca_file


async def test_ok_reports_status_and_times(server: Server) -> None:
    result = await run_target(http.Options(address=f"http://127.0.0.1:{server.port}/"))
    assert result.up is True, result.detail
    assert (result.kind, result.status_code, result.error) == ("http", 200, None)
    assert result.method == "http-get"
    assert result.ttfb_seconds is not None and result.rtt_seconds is not None
    assert 0 < result.ttfb_seconds <= result.rtt_seconds
    assert result.tls_days_to_expiry is None
    assert result.bytes_read is None  # throughput not asked for


async def test_503_is_http_status(server: Server) -> None:
    result = await run_target(http.Options(address=f"http://127.0.0.1:{server.port}/status/503"))
    assert result.up is False
    assert result.error == "http_status"
    assert result.status_code == 503
    assert result.detail == "status 503 not in expected 2xx/3xx"


async def test_redirect_is_an_answer_not_followed(server: Server) -> None:
    result = await run_target(http.Options(address=f"http://127.0.0.1:{server.port}/redirect"))
    assert result.up is True
    assert result.status_code == 302


async def test_valid_status_codes_replace_the_default(server: Server) -> None:
    url = f"http://127.0.0.1:{server.port}/status/404"
    assert (await run_target(http.Options(address=url, valid_status_codes=[404]))).up is True
    result = await run_target(
        http.Options(address=f"http://127.0.0.1:{server.port}/", valid_status_codes=[204])
    )
    assert result.up is False and result.detail == "status 200 not in expected 204"


async def test_throughput_counts_bytes_up_to_max(server: Server) -> None:
    base = f"http://127.0.0.1:{server.port}"
    whole = await run_target(
        http.Options(address=f"{base}/bytes/300000", throughput=True, max_bytes=Size(1_000_000))
    )
    assert whole.up is True
    assert whole.bytes_read == 300000
    assert whole.throughput_bytes_per_second is not None and whole.throughput_bytes_per_second > 0
    capped = await run_target(
        http.Options(address=f"{base}/bytes/3000000", throughput=True, max_bytes=Size(100_000))
    )
    assert capped.bytes_read == 100_000


async def test_head_request(server: Server) -> None:
    result = await run_target(
        http.Options(address=f"http://127.0.0.1:{server.port}/", method="HEAD", throughput=True)
    )
    assert result.up is True and result.method == "http-head" and result.bytes_read == 0


async def test_https_verified_with_ca_file(https: tuple[Server, str]) -> None:
    srv, ca_file = https
    result = await run_target(
        http.Options(address=f"https://localhost:{srv.port}/", ca_file=ca_file)
    )
    assert result.up is True, result.detail
    assert result.status_code == 200
    assert result.tls_days_to_expiry is not None and 29 < result.tls_days_to_expiry <= 30


async def test_https_wrong_ca_is_tls_error(https: tuple[Server, str], tmp_path: Path) -> None:
    srv, _ = https
    other = write_pem(tmp_path, "other.pem", trustme.CA().cert_pem.bytes())
    result = await run_target(http.Options(address=f"https://localhost:{srv.port}/", ca_file=other))
    assert result.up is False
    assert result.error == "tls_error"
    assert result.detail is not None and "certificate verify failed" in result.detail


async def test_https_system_store_rejects_private_ca(https: tuple[Server, str]) -> None:
    srv, _ = https
    result = await run_target(http.Options(address=f"https://localhost:{srv.port}/"))
    assert result.error == "tls_error"


async def test_https_hostname_mismatch_is_tls_error(ca: trustme.CA, tmp_path: Path) -> None:
    leaf = ca.issue_cert("dichvucong.gov.vn")
    cert = write_pem(tmp_path, "c.pem", b"".join(p.bytes() for p in leaf.cert_chain_pems))
    key = write_pem(tmp_path, "k.pem", leaf.private_key_pem.bytes())
    ca_file = write_pem(tmp_path, "ca.pem", ca.cert_pem.bytes())
    with http_server(tls=tls_context(cert, key)) as srv:
        result = await run_target(
            http.Options(address=f"https://localhost:{srv.port}/", ca_file=ca_file)
        )
    assert result.error == "tls_error"
    assert result.detail is not None and "Hostname mismatch" in result.detail


async def test_https_without_verification(https: tuple[Server, str]) -> None:
    srv, _ = https
    result = await run_target(
        http.Options(address=f"https://localhost:{srv.port}/", verify_tls=False)
    )
    assert result.up is True
    assert result.tls_days_to_expiry is None  # only a verified certificate is reported


async def test_missing_ca_file_is_tls_error(https: tuple[Server, str], tmp_path: Path) -> None:
    srv, _ = https
    missing = str(tmp_path / "nope.pem")
    result = await run_target(
        http.Options(address=f"https://localhost:{srv.port}/", ca_file=missing)
    )
    assert result.error == "tls_error"
    assert result.detail is not None and result.detail.startswith(f"ca_file {missing}:")


async def test_closed_port_is_refused() -> None:
    with tcp_listener() as (sock, _):
        port = sock.getsockname()[1]
    result = await run_target(http.Options(address=f"http://127.0.0.1:{port}/"))
    assert result.error == "refused"


async def test_not_http_is_protocol_error() -> None:
    # An SSH server on the port: it answers, but not with HTTP.
    with tcp_listener(banner=b"SSH-2.0-OpenSSH_9.2\r\n") as (sock, _):
        port = sock.getsockname()[1]
        result = await run_target(http.Options(address=f"http://127.0.0.1:{port}/"))
    assert result.up is False
    assert result.error == "protocol_error"
    assert result.detail is not None and result.detail.startswith("response http://")


async def test_hanging_server_is_cut_at_timeout(server: Server) -> None:
    result = await run_target(
        http.Options(address=f"http://127.0.0.1:{server.port}/hang", timeout=0.5)  # type: ignore[arg-type]
    )
    assert result.up is False
    assert result.error == "timeout"
    assert result.duration_seconds is not None and result.duration_seconds >= 0.4


def test_host_role_does_not_import_aiohttp() -> None:
    import subprocess

    code = (
        "import sys, asyncio; from agent.probes import http; from agent import runner; "
        "print('aiohttp' in sys.modules, 'scapy' in sys.modules, 'pysnmp' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False", "False"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"address": "ftp://x/"}, "address: invalid URL 'ftp://x/': scheme must be http or https"),
        ({"address": "http:///x"}, "address: invalid URL 'http:///x': host missing"),
        ({"address": "http://a:b@x/"}, "address: credentials in the URL are not supported"),
        (
            {"address": "http://x:70000/"},
            "address: invalid URL 'http://x:70000/': port must be 1-65535",
        ),
        ({"address": "http://x/", "ca_file": "/c.pem"}, "ca_file: only for https:// addresses"),
    ],
)
def test_bad_options_name_the_key(options: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError) as info:
        http.Options(**options)  # type: ignore[arg-type]
    assert str(info.value) == message
