"""Runs probes: owns their deadline, their timing and their failures.

A probe function only talks to the network; the runner cuts it at the target's
``timeout`` (reason ``timeout``), measures the whole check (``duration_seconds``), and
turns any exception into ``internal_error`` with a short detail while the traceback
goes to the log. Nothing here raises for a target's sake, so one bad target can never
take a check cycle down with it. Every target of every class runs concurrently: a
slow target never delays the others.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

from agent.config import AgentConfig
from agent.log import event, log_exception_limited
from agent.networks import fold, plan_networks
from agent.probes import probe_for
from agent.probes.base import ProbeFailed, ProbeFn, TargetOptions
from agent.report import Networks, ProbeResult
from agent.route import DefaultRoute, RouteError, default_routes

log = logging.getLogger(__name__)


def _seconds(value: float) -> str:
    return f"{value:.1f}s" if value >= 1 else f"{value * 1000:.0f}ms"


def _down(options: TargetOptions, error: Any, detail: str) -> ProbeResult:
    return ProbeResult(
        kind=options.kind,  # type: ignore[arg-type]
        target=options.label,
        up=False,
        error=error,
        detail=detail,
    )


async def run_target(options: TargetOptions, probe: ProbeFn[Any] | None = None) -> ProbeResult:
    """Probe one target under its timeout; always returns a result (cancellation aside)."""
    fn = probe or probe_for(options)
    start = time.monotonic()
    try:
        async with asyncio.timeout(options.timeout):
            result = await fn(options)
        if not isinstance(result, ProbeResult):
            raise TypeError(f"probe returned {type(result).__name__}, not ProbeResult")
    except TimeoutError:
        result = _down(options, "timeout", f"timeout after {_seconds(options.timeout)}")
    except ProbeFailed as exc:
        result = _down(options, exc.error, exc.detail)
    except Exception as exc:
        # The message may carry anything (paths, payloads): the report gets only the type;
        # the traceback goes to the log, where an administrator can read it.
        log_exception_limited(log, "probe.crashed", exc, kind=options.kind, target=options.label)
        result = _down(
            options,
            "internal_error",
            f"{options.kind} probe failed ({type(exc).__name__}); see the agent log",
        )
    result.duration_seconds = time.monotonic() - start
    event(
        log,
        logging.DEBUG,
        "probe.done",
        kind=options.kind,
        target=options.label,
        up=result.up,
        error=result.error or "",
        duration=round(result.duration_seconds, 4),
    )
    return result


async def run_targets(
    targets: Sequence[TargetOptions], probe: ProbeFn[Any] | None = None
) -> list[ProbeResult]:
    """Probe every target at once; results come back in the order of ``targets``."""
    return list(await asyncio.gather(*(run_target(t, probe) for t in targets)))


def _routes() -> list[DefaultRoute] | RouteError:
    try:
        return default_routes()
    except RouteError as exc:
        return exc


async def check_networks(config: AgentConfig) -> Networks:
    """Run every target of every network class once, concurrently, and fold per class."""
    lan = config.networks.lan
    # Only a lan without targets needs the routing table (on Windows that is a subprocess).
    routes = await asyncio.to_thread(_routes) if lan is None or not lan.targets else []
    plans = plan_networks(config, routes)
    flat = [(network, target) for network, plan in plans.items() for target in plan.targets]
    results = await run_targets([target for _, target in flat])
    per_class: dict[str, list[ProbeResult]] = {network: [] for network in plans}
    for (network, _), result in zip(flat, results, strict=True):
        per_class[network].append(result)
    return Networks(**{network: fold(plan, per_class[network]) for network, plan in plans.items()})
