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
from typing import Any, Generic, Protocol, TypeVar

from agent.log import log_exception_limited
from agent.report import AntivirusStatus
from collector.indicators import (
    AV_UNPROTECTED,
    IndicatorSettings,
    Snapshot,
    SnapshotCache,
    build_snapshot,
    throughput_window,
    window_days,
)
from collector.org import Org
from collector.store import (
    AgentNetworkWindow,
    AgentState,
    DecodedReports,
    NetworkUseDay,
    NetworkWindow,
    RefreshReads,
    StoredDeclaration,
    ThroughputRecord,
)
from collector.store.base import MAX_PROTECTED_LOOKUPS
from collector.targets import Plan

log = logging.getLogger(__name__)


class SnapshotStore(Protocol):
    """The part of ``collector.store.Store`` the builder reads."""

    async def refresh_reads(
        self,
        after: Any | None,
        since: dt.datetime,
        previous_start: int | None,
        throughput_since: dt.datetime,
        days: Sequence[dt.date],
        all_days: bool,
        decoded: DecodedReports,
    ) -> RefreshReads: ...
    async def declarations(
        self, since: float, until: float, units: Collection[str] | None = None
    ) -> list[StoredDeclaration]: ...
    async def protected_until(
        self, agents: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], float]: ...


Key = tuple[str, str]  # (site, agent_id)


def _unprotected(state: AgentState) -> bool:
    av = state.antivirus
    return isinstance(av, AntivirusStatus) and av.state in AV_UNPROTECTED


K = TypeVar("K", str, tuple[str, str])
T = TypeVar("T")


class _Parts(Generic[K, T]):
    """One list made of parts kept by key, in key order (the order of the store's full
    reads). After a few parts change, the list is the previous one copied with their
    slices replaced, not rebuilt; a part added, removed or of another length rebuilds.
    A new list each time: a list handed out is never changed."""

    def __init__(self) -> None:
        self.parts: dict[K, Sequence[T]] = {}
        self._offsets: dict[K, int] = {}
        self._list: list[T] = []
        self._changed: set[K] = set()
        self._reshaped = False

    def set(self, key: K, part: Sequence[T]) -> None:
        """Make ``part`` the key's part (empty: the key has none)."""
        old = self.parts.get(key)
        if not part:
            if old is not None:
                del self.parts[key]
                self._reshaped = True
            return
        self.parts[key] = part
        if old is None or len(old) != len(part):
            self._reshaped = True
        else:
            self._changed.add(key)

    def clear(self) -> None:
        self.parts.clear()
        self._reshaped = True

    def list(self) -> list[T]:
        if self._reshaped:
            out: list[T] = []
            offsets: dict[K, int] = {}
            for key in sorted(self.parts):
                offsets[key] = len(out)
                out.extend(self.parts[key])
            self._list, self._offsets = out, offsets
        elif self._changed:
            out = list(self._list)
            for key in self._changed:
                at, part = self._offsets[key], self.parts[key]
                out[at : at + len(part)] = part
            self._list = out
        self._reshaped = False
        self._changed.clear()
        return self._list


class _Kept:
    """The inputs of ``build_snapshot`` kept between refreshes, changed in place by each
    refresh's ``RefreshReads`` (what the store says changed), so a refresh costs what
    changed, not the province.

    Per agent: its state, the store rows of it that did not decode, its window sums per
    class and received count with the number of buckets behind each (a sum whose buckets
    all left the window is dropped, as the store's GROUP BY would not return it), whether
    its antivirus was last protected (looked up once per change). Per site: the summed
    windows, throughput results and network-use days. Every list handed to
    ``build_snapshot`` is in the order the store's full reads give it, so the snapshot
    is the one a full rebuild computes (tests/collector/test_snapshot_incremental.py).
    """

    def __init__(self, reads: RefreshReads) -> None:
        self.cursor: Any = reads.cursor
        self.start = reads.start
        self.days: tuple[dt.date, ...] = ()
        self.agents: _Parts[Key, AgentState] = _Parts()  # one part per agent: its state
        self.agent_sites: dict[str, tuple[str, ...]] = {}  # agent id → the sites it is at
        self.skipped_by: dict[Key, int] = {}
        self.skipped = 0
        self.windows: _Parts[Key, AgentNetworkWindow] = _Parts()  # per agent, by class
        self.buckets: dict[Key, tuple[int, ...]] = {}  # the buckets behind each of those
        self.site_sums: dict[str, dict[str, list[int]]] = {}  # class → [checks, up, agents]
        self.site_windows: _Parts[str, NetworkWindow] = _Parts()
        self.received: dict[Key, int] = {}
        self.received_buckets: dict[Key, int] = {}  # the buckets behind ``received``
        self.throughput: _Parts[str, ThroughputRecord] = _Parts()
        self.throughput_oldest: dict[str, float] = {}
        self.use_days: _Parts[str, NetworkUseDay] = _Parts()
        self.unprotected: set[Key] = set()
        self.protected: dict[Key, float | None] = {}  # looked up: end of the last protected day
        self.declarations: list[StoredDeclaration] | None = None

    def apply(self, reads: RefreshReads, days: tuple[dt.date, ...], since: float) -> set[str]:
        """Take in one refresh's reads; the sites whose inputs changed."""
        self.cursor, self.start = reads.cursor, reads.start
        keys = reads.keys
        changed = set(keys)
        read_sites = {site for site, _ in keys}  # their throughput and use rows were read
        self._agents(reads, changed)
        touched = self._windows(reads, changed)
        # An agent's windows judge every agent of that id ("connected" is looked up by
        # agent id), whichever site it is at.
        sites = read_sites | {s for _, a in touched for s in self.agent_sites.get(a, ())}
        sites |= {site for site, _ in touched | self._received(reads, changed)}
        sites |= self._throughput(reads, read_sites, since)
        use: dict[str, list[NetworkUseDay]] = {site: [] for site in read_sites}
        if days != self.days:  # the store read every site's use days
            self.use_days.clear()
            sites |= {day.site for day in reads.use_days}
        for day in reads.use_days:
            use.setdefault(day.site, []).append(day)
        for site, part in use.items():
            self.use_days.set(site, part)
        self.days = days
        return sites

    def _agents(self, reads: RefreshReads, changed: set[Key]) -> None:
        parts = self.agents.parts
        before = len(parts)
        new = {(state.site, state.agent_id): state for state in reads.agents}
        appeared = False
        for key in changed:
            appeared = appeared or key not in parts
            self.skipped -= self.skipped_by.pop(key, 0)
            self.protected.pop(key, None)
            self.unprotected.discard(key)
            state = new.get(key)
            self.agents.set(key, () if state is None else (state,))
            if state is not None and _unprotected(state):
                self.unprotected.add(key)
        for key, count in reads.agents.skipped_by.items():
            self.skipped_by[key] = count
            self.skipped += count
        if appeared or len(parts) != before:
            self.agent_sites = {}
            for site, agent_id in sorted(parts):
                self.agent_sites[agent_id] = (*self.agent_sites.get(agent_id, ()), site)

    def _windows(self, reads: RefreshReads, changed: set[Key]) -> set[Key]:
        kept, buckets = self.windows.parts, self.buckets
        # Per agent whose sums change: class → [checks, up, buckets] (only these, briefly).
        sums: dict[Key, dict[str, list[int]]] = {}
        for site, agent_id, network, checks, up, count in reads.windows:
            sums.setdefault((site, agent_id), {})[network] = [checks, up, count]
        for key in changed:
            sums.setdefault(key, {})
        for site, agent_id, network, checks, up, count in reads.left_windows:
            key = (site, agent_id)
            if key in changed or key not in kept:
                continue
            nets = sums.get(key)
            if nets is None:
                nets = sums[key] = {
                    w.network: [w.checks, w.up_checks, b]
                    for w, b in zip(kept[key], buckets[key], strict=True)
                }
            held = nets.get(network)
            if held is not None:
                held[0] -= checks
                held[1] -= up
                held[2] -= count
        sites: set[str] = set()
        for key, nets in sums.items():
            site = key[0]
            old = kept.get(key)
            if old is not None:
                self._site_add(site, old, -1)
            live = sorted((n, w) for n, w in nets.items() if w[2] > 0)
            part = [
                AgentNetworkWindow(site, key[1], n, w[0], w[1])  # type: ignore[arg-type]
                for n, w in live
            ]
            self.windows.set(key, part)
            if part:
                buckets[key] = tuple(w[2] for _, w in live)
                self._site_add(site, part, 1)
            else:
                buckets.pop(key, None)
            sites.add(site)
        for site in sites:
            held_site = self.site_sums.get(site, {})
            self.site_windows.set(
                site,
                [
                    NetworkWindow(site, n, c, u)  # type: ignore[arg-type]
                    for n, (c, u, agents) in sorted(held_site.items())
                    if agents > 0
                ],
            )
            if not held_site:
                self.site_sums.pop(site, None)
        return set(sums)

    def _site_add(self, site: str, windows: Sequence[AgentNetworkWindow], sign: int) -> None:
        held = self.site_sums.setdefault(site, {})
        for w in windows:
            total = held.setdefault(w.network, [0, 0, 0])
            total[0] += sign * w.checks
            total[1] += sign * w.up_checks
            total[2] += sign
        for network in [n for n, t in held.items() if t[2] <= 0]:
            del held[network]

    def _received(self, reads: RefreshReads, changed: set[Key]) -> set[Key]:
        out, buckets = self.received, self.received_buckets
        touched = set(changed)
        for key in changed:
            out.pop(key, None)
            buckets.pop(key, None)
        for site, agent_id, reports, count in reads.received:
            out[(site, agent_id)] = reports
            buckets[(site, agent_id)] = count
        for site, agent_id, reports, count in reads.left_received:
            key = (site, agent_id)
            if key in changed or key not in buckets:
                continue
            touched.add(key)
            left = buckets[key] - count
            if left > 0:
                out[key] -= reports
                buckets[key] = left
            else:
                del out[key], buckets[key]
        return touched

    def _throughput(self, reads: RefreshReads, sites: set[str], since: float) -> set[str]:
        """Replace the re-read sites' results; drop results that left the window."""
        oldest = self.throughput_oldest
        fresh: dict[str, list[ThroughputRecord]] = {site: [] for site in sites}
        for site in sites:
            oldest.pop(site, None)
        for record in reads.throughput:
            fresh.setdefault(record.site, []).append(record)
            at = oldest.get(record.site)
            if at is None or record.effective_at < at:
                oldest[record.site] = record.effective_at
        for site in [s for s, at in oldest.items() if at < since]:
            part = fresh.get(site, self.throughput.parts.get(site, ()))
            fresh[site] = [r for r in part if r.effective_at >= since]
            if fresh[site]:
                oldest[site] = min(r.effective_at for r in fresh[site])
            else:
                del oldest[site]
        for site, part in fresh.items():
            self.throughput.set(site, part)
        return set(fresh)

    def protected_wanted(self) -> list[Key]:
        """The unprotected agents looked up, as the store's ``protected_until`` caps them."""
        if len(self.unprotected) <= MAX_PROTECTED_LOOKUPS:
            return list(self.unprotected)
        return sorted(self.unprotected)[:MAX_PROTECTED_LOOKUPS]


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
        initial: Snapshot | None = None,
    ) -> None:
        self.org = org
        self.plans = tuple(plans)
        self.store = store
        self.settings = settings or IndicatorSettings()
        self.clock = clock
        # Before the first refresh every unit is visible, with no data and site_up 0
        # (``initial``: such a snapshot built already, e.g. by the builder this one shadows;
        # at 5,000 units each build of it is a noticeable part of start-up).
        self.snapshot = (
            initial
            if initial is not None
            else build_snapshot(org, self.plans, self.settings, clock(), [], [], {}, [])
        )
        self.refreshes = 0
        self.failures = 0
        self.last_success: float | None = None
        self.last_duration_seconds: float | None = None
        self._lock = asyncio.Lock()
        self._last_start = float("-inf")
        self._kept: _Kept | None = None  # the inputs of the last build (see _Kept)
        self._decoded: DecodedReports = {}  # newest reports decoded, by agent
        self._changed_sites: frozenset[str] | None = None
        self._cache = SnapshotCache()

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

    @contextlib.contextmanager
    def _cache_kept_only_if_built(self) -> Iterator[None]:
        """A build that fails midway may leave the cache holding part of this refresh's
        changes; the next ``changed_sites`` would not name them. Start it anew then."""
        try:
            yield
        except BaseException:
            self._cache = SnapshotCache()
            raise

    async def _build(self) -> Snapshot:
        now = self.clock()
        settings = self.settings
        since = now - dt.timedelta(seconds=settings.window_seconds)
        throughput_since = now - dt.timedelta(seconds=throughput_window(self.plans))
        first_day, today = window_days(now, settings)
        days = tuple(first_day + dt.timedelta(days=i) for i in range((today - first_day).days + 1))
        kept = self._kept
        with _no_cyclic_gc():  # assembling builds an AgentState per agent read
            reads = await self.store.refresh_reads(
                None if kept is None else kept.cursor,
                since,
                None if kept is None else kept.start,
                throughput_since,
                days,
                kept is None or days != kept.days,
                self._decoded,
            )
        self._kept = None  # until applied whole: a failure midway reads everything next time
        with _no_cyclic_gc():  # each AgentState read is many small objects that live on
            if kept is None or reads.full:
                kept = _Kept(reads)
                changed_sites: set[str] | None = None
            else:
                changed_sites = set()
            sites = kept.apply(reads, days, throughput_since.timestamp())
            if changed_sites is not None:
                changed_sites |= sites
        at = now.timestamp()
        # Periods start and end at local midnight: a millisecond is "now" for the overlap.
        declarations = await self.store.declarations(at, at + 0.001)
        if declarations != kept.declarations:
            changed_sites = None  # a unit's declarations may be any site's
            kept.declarations = declarations
        wanted = kept.protected_wanted()
        missing = [key for key in wanted if key not in kept.protected]
        if missing:
            found = await self.store.protected_until(missing)
            for key in missing:
                kept.protected[key] = found.get(key)
            if changed_sites is not None:
                changed_sites |= {site for site, _ in missing}
        protected_until = {k: v for k in wanted if (v := kept.protected.get(k)) is not None}
        self._kept = kept
        # Sites whose inputs may differ from the previous build (None: any), for an
        # incremental build_snapshot; the rest of the inputs are the full ones, kept.
        self._changed_sites = None if changed_sites is None else frozenset(changed_sites)
        with _no_cyclic_gc(), self._cache_kept_only_if_built():
            snapshot = build_snapshot(
                self.org,
                self.plans,
                settings,
                now,
                kept.agents.list(),
                kept.site_windows.list(),
                dict(kept.received),
                kept.windows.list(),
                kept.skipped,
                declarations=declarations,
                protected_until=protected_until,
                throughput=kept.throughput.list(),
                use_days=kept.use_days.list(),
                cache=self._cache,
                changed_sites=self._changed_sites,
            )
        # Optional in the protocol: stores made for indicator tests do not keep it.
        config_errors = getattr(self.store, "config_error_counts", None)
        if config_errors is None:
            return snapshot
        counts: dict[str, int] = await config_errors()
        return dataclasses.replace(snapshot, config_errors=tuple(sorted(counts.items())))
