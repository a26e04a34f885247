"""The runner: deadlines, exception isolation and concurrency.

Every config here has ``lan`` targets on loopback: without them the runner would probe
this machine's real default gateway, which tests must never do (the topology test
covers the gateway inside a namespace).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pytest

from agent.config import parse_config
from agent.probes import tcp
from agent.probes.base import TargetOptions
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
