"""The refresh: read the store, compute a Snapshot, swap it in whole.

``SnapshotBuilder`` is the async layer over ``collector.indicators``' pure arithmetic:
what a refresh reads from the store (``SnapshotStore``) and how it keeps the work of a
refresh small. ``collector.metrics`` renders the swapped-in Snapshot without I/O.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import gc
import logging
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from typing import Protocol

from agent.log import log_exception_limited
from agent.report import AntivirusStatus
from collector.indicators import (
    AV_UNPROTECTED,
    IndicatorSettings,
    Snapshot,
    build_snapshot,
    site_windows,
    throughput_window,
    window_days,
)
from collector.org import Org
from collector.store import (
    AgentNetworkWindow,
    AgentState,
    AgentStates,
    NetworkUseDay,
    NetworkWindow,
    StoredDeclaration,
    ThroughputRecord,
)
from collector.targets import Plan

log = logging.getLogger(__name__)


class SnapshotStore(Protocol):
    """The part of ``collector.store.Store`` the builder reads."""

    async def agent_states(self) -> list[AgentState]: ...
    async def network_windows(self, since: dt.datetime) -> list[NetworkWindow]: ...
    async def agent_network_windows(self, since: dt.datetime) -> list[AgentNetworkWindow]: ...
    async def received_counts(self, since: dt.datetime) -> dict[tuple[str, str], int]: ...
    async def declarations(
        self, since: float, until: float, units: Collection[str] | None = None
    ) -> list[StoredDeclaration]: ...
    async def protected_until(
        self, agents: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], float]: ...
    async def throughput_results(self, since: dt.datetime) -> list[ThroughputRecord]: ...
    async def network_use_days(self, start: dt.date, end: dt.date) -> list[NetworkUseDay]: ...


# --------------------------------------------------------------------------- builder


@contextlib.contextmanager
def _no_cyclic_gc() -> Iterator[None]:
    """Hold the cyclic collector off while a snapshot is computed and the agents' states
    assembled: each allocates hundreds of thousands of small objects that live on, so
    every generation-2 pass walks the whole heap for nothing (about a third of a refresh
    at 20k agents). Reference counting still frees everything; cycles made meanwhile
    wait for the next pass."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class SnapshotBuilder:
    """Keeps ``snapshot`` current: ``refresh()`` reads the store and swaps it whole."""

    def __init__(
        self,
        org: Org,
        plans: Sequence[Plan],
        store: SnapshotStore,
        settings: IndicatorSettings | None = None,
        *,
        clock: Callable[[], dt.datetime] = _utcnow,
    ) -> None:
        self.org = org
        self.plans = tuple(plans)
        self.store = store
        self.settings = settings or IndicatorSettings()
        self.clock = clock
        # Before the first refresh every unit is visible, with no data and site_up 0.
        self.snapshot = build_snapshot(org, self.plans, self.settings, clock(), [], [], {}, [])
        self.refreshes = 0
        self.failures = 0
        self.last_success: float | None = None
        self.last_duration_seconds: float | None = None
        self._lock = asyncio.Lock()
        self._last_start = float("-inf")

    async def refresh(self) -> bool:
        """Rebuild the snapshot; False (old snapshot kept, failure logged) if the store failed.

        Calls that arrive while a refresh runs are coalesced: when the lock frees and a
        refresh has started since the call, its result already includes the caller's data.
        """
        called = time.monotonic()
        async with self._lock:
            if self._last_start >= called:
                return True
            self._last_start = started = time.monotonic()
            try:
                snapshot = await self._build()
            except Exception as exc:
                self.failures += 1
                # The traceback goes to the log (once a minute per kind of failure); the
                # old snapshot keeps serving scrapes.
                log_exception_limited(log, "snapshot.refresh_failed", exc)
                return False
            self.snapshot = snapshot
            self.refreshes += 1
            self.last_success = snapshot.generated_at
            self.last_duration_seconds = time.monotonic() - started
            return True

    async def _build(self) -> Snapshot:
        now = self.clock()
        settings = self.settings
        since = now - dt.timedelta(seconds=settings.window_seconds)
        with _no_cyclic_gc():  # assembling builds an AgentState per agent: the same pattern
            agents = await self.store.agent_states()
        skipped = agents.skipped if isinstance(agents, AgentStates) else 0
        received = await self.store.received_counts(since)
        agent_windows = await self.store.agent_network_windows(since)
        windows = site_windows(agent_windows)
        at = now.timestamp()
        # Periods start and end at local midnight: a millisecond is "now" for the overlap.
        declarations = await self.store.declarations(at, at + 0.001)
        unprotected = [
            (a.site, a.agent_id)
            for a in agents
            if isinstance(a.antivirus, AntivirusStatus) and a.antivirus.state in AV_UNPROTECTED
        ]
        protected_until = await self.store.protected_until(unprotected)
        throughput = await self.store.throughput_results(
            now - dt.timedelta(seconds=throughput_window(self.plans))
        )
        first_day, today = window_days(now, settings)
        use_days = await self.store.network_use_days(first_day, today + dt.timedelta(days=1))
        with _no_cyclic_gc():
            snapshot = build_snapshot(
                self.org,
                self.plans,
                settings,
                now,
                agents,
                windows,
                received,
                agent_windows,
                skipped,
                declarations=declarations,
                protected_until=protected_until,
                throughput=throughput,
                use_days=use_days,
            )
        # Optional in the protocol: stores made for indicator tests do not keep it.
        config_errors = getattr(self.store, "config_error_counts", None)
        if config_errors is None:
            return snapshot
        counts: dict[str, int] = await config_errors()
        return dataclasses.replace(snapshot, config_errors=tuple(sorted(counts.items())))
