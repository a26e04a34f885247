"""The runner: deadlines, exception isolation and concurrency.

Every config here has ``lan`` targets on loopback: without them the runner would probe
this machine's real default gateway, which tests must never do (the topology test
covers the gateway inside a namespace).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from agent.config import parse_config
from agent.probes import http, tcp
from agent.probes.base import TargetOptions
from agent.probes.blocking import HTTP, Lane, StillRunning
from agent.report import ProbeResult
from agent.runner import check_networks, run_target, run_targets
from tests.agent.probes.servers import http_server, tcp_listener


async def test_hanging_probe_is_cut_at_its_timeout() -> None:
    async def hang(options: TargetOptions) -> ProbeResult:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    options = tcp.Options(address="127.0.0.1:9", timeout=0.2)  # type: ignore[arg-type]
    result = await run_target(options, hang)
    assert (result.up, result.error, result.detail) == (False, "timeout", "timeout after 200ms")
    assert (result.kind, result.target) == ("tcp", "127.0.0.1:9")
    assert result.duration_seconds is not None and result.duration_seconds >= 0.2

    options = tcp.Options(address="127.0.0.1:9", timeout=2.0)  # type: ignore[arg-type]
    task = asyncio.ensure_future(run_target(options, hang))
    await asyncio.sleep(0)  # the whole-check cancel (agent shutdown) still propagates
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_raising_probe_is_internal_error_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    async def broken(options: TargetOptions) -> ProbeResult:
        raise RuntimeError("token=s3cr3t leaked into a message")

    caplog.set_level(logging.DEBUG, logger="agent.runner")
    result = await run_target(tcp.Options(address="127.0.0.1:9", name="portal"), broken)
    assert result.up is False
    assert result.error == "internal_error"
    assert result.target == "portal"
    assert result.detail == "tcp probe failed (RuntimeError); see the agent log"
    assert "s3cr3t" not in (result.detail or "")
    crashed = [r for r in caplog.records if r.getMessage() == "probe.crashed"]
    assert len(crashed) == 1
    assert crashed[0].exc_info is not None  # the traceback is in the log


async def test_probe_returning_garbage_is_internal_error() -> None:
    async def wrong(options: TargetOptions) -> Any:
        return {"up": True}

    result = await run_target(tcp.Options(address="127.0.0.1:9"), wrong)
    assert result.error == "internal_error"
    assert result.detail == "tcp probe failed (TypeError); see the agent log"


async def test_targets_run_concurrently() -> None:
    """The slow target can only succeed if the fast ones finish while it is still waiting."""
    fast_done: list[str] = []
    all_fast = asyncio.Event()
    fast_count = 20

    async def probe(options: TargetOptions) -> ProbeResult:
        if options.label == "slow":
            await all_fast.wait()
            return ProbeResult(kind="tcp", target="slow", up=True)
        await asyncio.sleep(0.01)
        fast_done.append(options.label)
        if len(fast_done) == fast_count:
            all_fast.set()
        return ProbeResult(kind="tcp", target=options.label, up=True)

    targets = [tcp.Options(address="127.0.0.1:9", name="slow", timeout=10)]  # type: ignore[arg-type]
    targets += [tcp.Options(address="127.0.0.1:9", name=f"f{i}") for i in range(fast_count)]
    results = await run_targets(targets, probe)
    assert [r.target for r in results] == [t.label for t in targets]  # order kept
    assert all(r.up for r in results), results[0]


async def test_check_networks_real_targets_slow_one_does_not_delay_others() -> None:
    """One class hangs until its 3 s timeout; every other target is answered before that."""
    with tcp_listener() as (sock, accepted), http_server() as web:
        port = sock.getsockname()[1]
        fast = [{"kind": "tcp", "address": f"127.0.0.1:{port}", "name": f"t{i}"} for i in range(12)]
        config = parse_config(
            {
                "site": "bac-kan/cho-don/bang-lung",
                "networks": {
                    "lan": {"targets": fast[:4]},
                    "wan": {
                        "targets": [
                            {
                                "kind": "http",
                                "address": f"http://127.0.0.1:{web.port}/hang",
                                "timeout": "3s",
                            }
                        ]
                    },
                    "internet": {"targets": fast[4:], "rule": "all"},
                },
            }
        )
        start = time.monotonic()
        networks = await check_networks(config)
    slow_deadline = start + 3.0
    assert sum(1 for t in accepted if t < slow_deadline) == 12
    assert networks.wan.up is False and networks.wan.targets[0].error == "timeout"
    assert networks.lan.up is True and networks.internet.up is True
    assert len(networks.internet.targets) == 8
    assert (networks.dedicated.configured, networks.dedicated.up) == (False, None)


async def test_check_networks_rules() -> None:
    with tcp_listener() as (sock, _):
        up = f"127.0.0.1:{sock.getsockname()[1]}"
        with tcp_listener() as (closed, _):
            down = f"127.0.0.1:{closed.getsockname()[1]}"
        config = parse_config(
            {
                "site": "bac-kan",
                "networks": {
                    "lan": {"targets": [{"kind": "tcp", "address": up}]},
                    "wan": {"targets": [{"kind": "tcp", "address": a} for a in (up, down)]},
                    "dedicated": {
                        "rule": "all",
                        "targets": [{"kind": "tcp", "address": a} for a in (up, down)],
                    },
                    "internet": {"targets": []},
                },
            }
        )
        networks = await check_networks(config)
    assert (networks.wan.rule, networks.wan.up) == ("any", True)
    assert (networks.dedicated.rule, networks.dedicated.up) == ("all", False)
    assert networks.dedicated.targets[1].error == "refused"
    assert (networks.internet.configured, networks.internet.up) == (False, None)
    assert networks.lan.default_gateway is False


# -- hung targets of one kind never starve another -----------------------------------------


@pytest.fixture
def hung_ports() -> Iterator[list[int]]:
    """40 loopback servers that take connections (the kernel completes them from the
    backlog) and never answer: web sites hanging in an internet outage."""
    servers = [socket.create_server(("127.0.0.1", 0), backlog=16) for _ in range(40)]
    try:
        yield [s.getsockname()[1] for s in servers]
    finally:
        for server in servers:
            server.close()


async def test_hung_http_targets_do_not_make_healthy_targets_read_down(
    hung_ports: list[int], listener: int
) -> None:
    """More hung HTTP targets than asyncio's default executor has threads (6 on a 2-core
    PC, at most 32), checked before healthy TCP and ICMP targets (by address and by
    name, in the same class and in a check started meanwhile): the healthy ones stay up."""
    healthy = [
        {"kind": "tcp", "address": f"127.0.0.1:{listener}", "timeout": "1s"},
        {"kind": "tcp", "address": f"localhost:{listener}", "timeout": "1s"},
        {"kind": "icmp", "address": "127.0.0.1", "timeout": "1s", "count": 1},
    ]
    hung = [
        {"kind": "http", "address": f"http://127.0.0.1:{port}/", "timeout": "3s"}
        for port in hung_ports
    ]
    outage = parse_config(
        {
            "site": "bac-kan/cho-don",
            "networks": {
                "lan": {"targets": [healthy[0]]},
                "internet": {"targets": [*hung, *healthy], "rule": "all"},
            },
        }
    )
    office = parse_config(
        {"site": "bac-kan/cho-don", "networks": {"lan": {"targets": healthy, "rule": "all"}}}
    )
    during = asyncio.ensure_future(check_networks(outage))
    await asyncio.sleep(0.2)  # the hung requests hold their threads now
    lan = (await check_networks(office)).lan
    internet = (await during).internet
    expected = [(t["address"], True, None) for t in healthy]
    assert [(t.target, t.up, t.error) for t in lan.targets] == expected
    assert [(t.target, t.up, t.error) for t in internet.targets[-3:]] == expected
    assert {(t.up, t.error) for t in internet.targets[:-3]} == {(False, "timeout")}


def blocking(release: threading.Event, value: str) -> Callable[[], str]:
    def work() -> str:
        release.wait(30)
        return value

    return work


async def test_a_lane_bounds_its_threads_and_one_call_per_key() -> None:
    """A lane runs at most ``size`` threads; a key still in flight is not started again
    (StillRunning) or is shared (``share=True``); slots come back when threads return."""
    lane = Lane("test", 2)
    release = threading.Event()
    first = asyncio.ensure_future(lane.run("a", blocking(release, "a")))
    second = asyncio.ensure_future(lane.run("b", blocking(release, "b")))
    third = asyncio.ensure_future(lane.run("c", blocking(release, "c")))
    shared = asyncio.ensure_future(lane.run("a", blocking(release, "other"), share=True))
    await asyncio.sleep(0.1)
    assert lane.running == 2 and not third.done()
    with pytest.raises(StillRunning):
        await lane.run("a", blocking(release, "again"))
    # A caller that gives up while waiting for a slot takes nothing with it.
    waiting = asyncio.ensure_future(lane.run("d", blocking(release, "d")))
    await asyncio.sleep(0.05)
    waiting.cancel()
    release.set()
    assert await asyncio.gather(first, second, third, shared) == ["a", "b", "c", "a"]
    assert await lane.run("e", lambda: "e") == "e"
    assert lane.running == 0


async def test_an_http_check_whose_previous_request_hangs_is_not_started_again(
    hung_ports: list[int],
) -> None:
    """The runner gave up on a request whose thread is still blocked: the next cycle
    says so instead of adding a second thread for the same target."""
    options = http.Options(address=f"http://127.0.0.1:{hung_ports[0]}/")
    release = threading.Event()
    hung = asyncio.ensure_future(HTTP.run(id(options), blocking(release, "hung")))
    await asyncio.sleep(0.05)
    try:
        result = await run_target(options)
    finally:
        release.set()
        await hung
    assert (result.up, result.error) == (False, "timeout")
    assert result.detail is not None and "previous check" in result.detail
