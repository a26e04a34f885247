"""GET /api/v1/throughput: the payload route, its bounds and its per-site limits, and the
agent's throughput check downloading from it over loopback."""

from __future__ import annotations

import asyncio
from pathlib import Path

from agent.config import parse_config as parse_agent_config
from agent.throughput import measure, monthly_cost_text
from tests.collector.conftest import SITE, MakeClient, collector_config, new_token


async def test_streams_exactly_the_bytes_asked_for(make_client: MakeClient, tmp_path: Path) -> None:
    client = await make_client(collector_config(tmp_path))
    token = await new_token(client)
    headers = {"Authorization": f"Bearer {token}"}
    response = await client.get("/api/v1/throughput?bytes=200001", headers=headers)
    assert response.status == 200
    body = await response.read()
    assert len(body) == 200001
    assert response.headers["Content-Length"] == "200001"


async def test_needs_a_token_and_bounded_bytes(make_client: MakeClient, tmp_path: Path) -> None:
    config = collector_config(tmp_path, throughput={"max_bytes": "1MB"})
    client = await make_client(config)
    token = await new_token(client)
    response = await client.get("/api/v1/throughput?bytes=1000")
    assert response.status == 401
    headers = {"Authorization": f"Bearer {token}"}
    for bad in ("0", "1000001", "-5", "abc", "1e6", "9" * 40, ""):
        response = await client.get("/api/v1/throughput", params={"bytes": bad}, headers=headers)
        assert response.status == 400, bad
        body = await response.json()
        assert body["error"] == "invalid_bytes" and body["field"] == "bytes"
        assert "from 1 to 1000000" in body["message"]


async def test_per_site_hourly_limit_answers_429(make_client: MakeClient, tmp_path: Path) -> None:
    config = collector_config(tmp_path, throughput={"per_site_per_hour": 2})
    client = await make_client(config)
    headers = {"Authorization": f"Bearer {await new_token(client)}"}
    for _ in range(2):
        response = await client.get("/api/v1/throughput?bytes=10", headers=headers)
        assert response.status == 200
        await response.read()
    response = await client.get("/api/v1/throughput?bytes=10", headers=headers)
    assert response.status == 429
    assert int(response.headers["Retry-After"]) > 0
    assert "in the last hour (limit 2)" in (await response.json())["message"]


async def test_second_stream_of_a_site_is_refused_while_one_runs(
    make_client: MakeClient, tmp_path: Path
) -> None:
    config = collector_config(tmp_path, throughput={"max_bytes": "100MB"})
    client = await make_client(config)
    headers = {"Authorization": f"Bearer {await new_token(client)}"}
    first = await client.get("/api/v1/throughput?bytes=100000000", headers=headers)
    assert first.status == 200
    await first.content.readexactly(65536)  # streaming, not finished: the slot is held
    second = await client.get("/api/v1/throughput?bytes=10", headers=headers)
    assert second.status == 429
    assert "another throughput test" in (await second.json())["message"]
    first.close()


async def test_agent_measures_from_the_collector_and_sends_its_token(
    make_client: MakeClient, tmp_path: Path
) -> None:
    client = await make_client(collector_config(tmp_path))
    token = await new_token(client)
    base = str(client.make_url("/")).rstrip("/")
    agent = parse_agent_config(
        {
            "site": SITE,
            "role": "site-probe",
            "collector": {"url": base, "token": token},
            "throughput": {
                "max_bytes": "2MB",
                "targets": [
                    {"url": f"{base}/api/v1/throughput?bytes=2000000", "name": "collector"},
                    {"url": f"{base}/api/v1/throughput?bytes=500000", "network": "wan"},
                ],
            },
        }
    )
    results = await measure(agent)
    first, second = results
    assert first.up and first.error is None, first.detail
    assert first.bytes_read == 2_000_000 and first.ended_by == "max_bytes"
    assert first.bytes_per_second is not None and first.bytes_per_second > 0
    assert second.network == "wan" and second.bytes_read == 500_000
    assert second.ended_by == "complete"
    # 2 targets x 2 MB x 4 per day x 30 days.
    assert monthly_cost_text(agent.throughput) == "≈ 480 MB/tháng / per month"


async def test_agent_reports_a_refused_endpoint_as_a_failure_not_a_zero_rate(
    closed_port: int,
) -> None:
    agent = parse_agent_config(
        {
            "site": SITE,
            "role": "site-probe",
            "throughput": {"targets": [{"url": f"http://127.0.0.1:{closed_port}/payload"}]},
        }
    )
    [result] = await measure(agent)
    assert result.up is False and result.error == "refused"
    assert result.bytes_per_second is None
    assert result.bytes_read == 0


async def test_a_stalled_download_is_a_timeout_with_the_bytes_so_far() -> None:
    async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n" + b"x" * 5000)
        await writer.drain()
        await asyncio.sleep(5)  # then nothing: the line is cut
        writer.close()

    server = await asyncio.start_server(trickle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    agent = parse_agent_config(
        {
            "site": SITE,
            "role": "site-probe",
            "throughput": {
                "stall_timeout": "300ms",
                "targets": [{"url": f"http://127.0.0.1:{port}/"}],
            },
        }
    )
    async with server:
        [result] = await measure(agent)
    assert result.up is False and result.error == "timeout"
    assert result.bytes_per_second is None
    assert result.bytes_read == 5000
    assert "no data for 0.3s after 5000 bytes" in (result.detail or "")


def test_collector_throughput_config_errors_name_the_key(tmp_path: Path) -> None:
    import pytest

    from agent.configerror import ConfigError

    for value, message in (
        ({"max_bytes": "10GB"}, "throughput.max_bytes: 10000000000 bytes is out of range"),
        ({"stream_timeout": "0s"}, "throughput.stream_timeout: between 1s and 1h"),
        ({"max_concurrent": 0}, "throughput.max_concurrent: 0 is out of range"),
        ({"per_site": 1}, "throughput: unknown key 'per_site'"),
    ):
        with pytest.raises(ConfigError) as caught:
            collector_config(tmp_path, throughput=value)
        assert message in str(caught.value), str(caught.value)
