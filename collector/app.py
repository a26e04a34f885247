"""The collector application: ``create_app(config) -> web.Application``.

Resources are ``cleanup_ctx`` context managers (the store first, so it closes last;
then the background tasks that refresh the indicator snapshot and flush bookkeeping),
shared state sits on typed ``AppKey``s (declared in ``collector.api``), routes are one
table, and metrics live on the app's own ``CollectorRegistry`` so that two apps (or
two tests) never share counters.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import errno
import gc
import logging
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, Final

from aiohttp import ClientSession, ClientTimeout, web
from aiohttp.http_exceptions import HttpProcessingError
from prometheus_client import CollectorRegistry, Gauge

from agent import __version__
from agent.log import RateLimitedLog, event, log_exception_limited
from collector import api, central, enroll, throughput
from collector.auth import Authenticator
from collector.config import CollectorConfig
from collector.indicators import IndicatorSettings
from collector.late import LateRule
from collector.metrics import Exposition, ReservedNames, StoreFaultsCollector
from collector.org import Org, load_org
from collector.remote_write import RemoteWriteCollector, Sender
from collector.snapshot import SnapshotBuilder
from collector.store import Store, StoreError, StoreFaults, open_store
from collector.targets import Plan, load_targets

log = logging.getLogger(__name__)

BUILDER: Final = web.AppKey("builder", SnapshotBuilder)
SENDER: Final = web.AppKey("remote_write_sender", Sender)
# Serve the app with these (AppRunner/TestServer keyword arguments): the ingest handler
# inflates gzip bodies itself, under limits.max_decompressed, with exact error answers.
SERVER_KWARGS: Final[dict[str, Any]] = {"auto_decompress": False}


def server_kwargs(config: CollectorConfig) -> dict[str, Any]:
    """``SERVER_KWARGS`` plus the connection deadlines the config decides.

    aiohttp closes a connection whose request headers are not complete within
    ``keepalive_timeout`` of the connection opening (or of the previous answer), even
    when bytes keep trickling in: that is the header slowloris bound. The body deadline
    is the ingest handler's own (``limits.body_timeout``, answered with 408).
    """
    return {**SERVER_KWARGS, "keepalive_timeout": float(config.limits.header_timeout)}


FLUSH_EVERY: Final = 10.0
STOP_WAIT_SECONDS: Final = 30.0  # how long a shutdown waits for a running refresh
GC_FULL_EVERY: Final = 600.0  # seconds between full collections of a frozen heap
# How long a thread holding the GIL runs before one that waits for it is let in (Python's
# default 5 ms). The sqlite3 module gives up the GIL around every statement step and the
# loop around every socket call; each taking it back waited up to the whole interval while
# the refresh computed: at 20k agents p99 of ingest 0.7-1.4 s with 5 ms, 0.3-0.4 s with 0.5.
SWITCH_INTERVAL: Final = 0.0005
REFRESH_GAP_FACTOR: Final = 5.0  # after ingests, refreshes are >= 5x their duration apart


class _BadRequestFilter(logging.Filter):
    """Turn aiohttp's traceback for a request it could not parse into one short line.

    Oversized or malformed headers, request smuggling attempts, bad methods: the client
    got its 400 already; a traceback per request would let anyone flood the log.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            record.msg, record.args = "http.bad_request", ()
            record.exc_info, record.exc_text = None, None
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.status = exc.code
            record.error = " ".join(str(exc.message).split())[:200]
        return True


_BAD_REQUEST_FILTER: Final = _BadRequestFilter()


# Accept failures for lack of descriptors: asyncio reports each failed accept() with a
# traceback (tens of thousands a second under a connection flood); one line a minute
# with the count says the same.
_ACCEPT_ERRNOS: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
_accept_log: Final = RateLimitedLog(logging.getLogger("collector.http"), interval=60.0)
_loop_log: Final = logging.getLogger("asyncio")
_loop_limited: Final = RateLimitedLog(_loop_log, interval=60.0)


def raise_fd_limit() -> tuple[int, int] | None:
    """Raise the soft RLIMIT_NOFILE to the hard limit (each connection costs a descriptor;
    distributions start services at a soft 1,024); return the (soft, hard) in force, or
    None where the platform has no such limit."""
    try:
        import resource
    except ImportError:  # not a POSIX system
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        # An unlimited hard limit still needs a number: the kernel's usual nr_open.
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def loop_exception_handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """The serving loop's handler: accept failures for lack of descriptors are counted in
    one rate-limited line; anything else is logged with its traceback, rate-limited too.

    asyncio schedules one accept retry per failed accept() of a backlog round; after
    shutdown each of those fails on the closed socket (thousands of "Invalid file
    descriptor" tracebacks): rate-limited by kind, they are one line.
    """
    exc = context.get("exception")
    if isinstance(exc, OSError) and exc.errno in _ACCEPT_ERRNOS:
        limits = raise_fd_limit()  # also picks up a hard limit raised since start
        _accept_log.event(
            logging.ERROR,
            "http.accept_failed",
            error=exc.strerror or str(exc),
            fd_limit=limits[0] if limits else "-",
            hint="too many open connections: raise LimitNOFILE or put a proxy with"
            " limit_conn in front (docs/security.md)",
        )
        return
    message = str(context.get("message") or "unexpected error in the event loop")
    # The kind of failure, without the reprs (addresses, handles) that make each unique.
    kind = message.split("(", 1)[0].split("\n", 1)[0][:120]
    if isinstance(exc, BaseException):
        log_exception_limited(_loop_log, "asyncio.error", exc, message=kind)
    else:
        _loop_limited.event(logging.ERROR, "asyncio.error", key=kind, message=message[:300])


def indicator_settings(config: CollectorConfig) -> IndicatorSettings:
    """The indicator settings that the collector config decides."""
    return IndicatorSettings(
        window_seconds=config.window.duration,
        up_ratio=config.window.up_ratio,
        site_up_after_intervals=config.site_up_after_intervals,
        clock_skew_tolerance_seconds=config.clock_skew.max_future,
        bucket_seconds=config.window.bucket,
        fresh_observations_only=config.remote_write is not None,
        patch_max_age_seconds=config.posture.patch_max_age,
    )


def late_rule(config: CollectorConfig) -> LateRule | None:
    """The one rule's settings (docs/late-data.md), when remote write is configured."""
    remote = config.remote_write
    if remote is None:
        return None
    return LateRule(
        horizon_intervals=config.site_up_after_intervals,
        grace_seconds=config.metrics.refresh_interval + remote.scrape_interval,
        job=remote.job,
        max_pending=remote.max_pending,
    )


def make_store(config: CollectorConfig, *, start_check: bool = True) -> Store:
    """The store that the config names (not yet opened); ``start_check``: run the
    configured integrity check when it opens (``serve``; the short CLI commands skip it)."""
    check = start_check and config.store.start_check == "quick"
    return open_store(
        config.store.url,
        busy_timeout=config.store.busy_timeout,
        max_future=config.clock_skew.max_future,
        hourly_retention=config.store.hourly_retention,
        bucket_seconds=config.window.bucket,
        late_rule=late_rule(config),
        start_check_timeout=float(config.store.start_check_timeout) if check else None,
    )


def create_app(
    config: CollectorConfig,
    *,
    org: Org | None = None,
    plans: Sequence[Plan] | None = None,
    store: Store | None = None,
) -> web.Application:
    """Build the application; org and targets load now so that their errors stop start-up."""
    org = load_org(config.org) if org is None else org
    plans = load_targets(config.targets) if plans is None else plans
    if store is None:
        store = make_store(config)
    elif config.remote_write is not None and getattr(store, "late_rule", False) is None:
        store.late_rule = late_rule(config)  # type: ignore[attr-defined]  # a store given by a caller
    app = web.Application(
        client_max_size=config.limits.max_body, middlewares=[api.error_middleware]
    )
    logging.getLogger("aiohttp.server").addFilter(_BAD_REQUEST_FILTER)  # once: same object
    registry = CollectorRegistry(auto_describe=True)
    metrics = api.IngestMetrics(registry)
    build_info = Gauge(
        "hatang_collector_build_info",
        "Always 1; the collector version as a label.",
        ["version"],
        registry=registry,
    )
    build_info.labels(__version__).set(1)
    builder = SnapshotBuilder(org, plans, store, indicator_settings(config))
    # The snapshot's families are served by the Exposition (rendered once per snapshot);
    # the registry keeps their names so that no self-metric can take one.
    registry.register(ReservedNames())
    faults = getattr(store, "faults", None)  # stores given by tests may not keep them
    if isinstance(faults, StoreFaults):
        registry.register(StoreFaultsCollector(faults))

    app[api.CONFIG] = config
    app[api.STORE] = store
    app[api.AUTH] = Authenticator(store, config.auth.cache_ttl)
    app[api.ORG] = org
    app[api.REGISTRY] = registry
    app[api.METRICS] = metrics
    app[api.INGEST_STATE] = api.IngestState()
    app[api.REFRESH] = asyncio.Event()
    app[BUILDER] = builder
    app[api.EXPOSITION] = Exposition(builder, registry)
    layers = config.agent_config.dir if config.agent_config is not None else None
    app[central.CENTRAL] = central.CentralHolder(layers, org)  # ConfigError stops start-up
    app[enroll.ENROLL] = enroll.EnrollState(
        config.enroll.throttle_burst, config.enroll.throttle_per_minute, config.enroll.max_failures
    )
    app[throughput.STATE] = throughput.ThroughputState()

    app.cleanup_ctx.append(_store_ctx)
    app.cleanup_ctx.append(_background_ctx)
    if config.remote_write is not None:
        app.cleanup_ctx.append(_remote_write_ctx)
    app.router.add_routes(
        [
            web.post("/api/v1/reports", api.post_reports, name="reports"),
            web.post("/api/v1/enroll", enroll.post_enroll, name="enroll"),
            web.get("/api/v1/config", central.get_config, name="config"),
            web.post("/api/v1/config/status", central.post_config_status, name="config_status"),
            web.get("/api/v1/openapi.yaml", api.get_openapi, name="openapi"),
            web.get("/healthz", api.get_healthz, name="healthz"),
            web.get(
                "/api/v1/evidence/public-key", api.get_evidence_public_key, name="evidence_key"
            ),
            web.get("/metrics", api.get_metrics, name="metrics"),
            web.get("/api/v1/throughput", throughput.get_throughput, name="throughput"),
        ]
    )
    return app


async def _store_ctx(app: web.Application) -> AsyncIterator[None]:
    store, metrics = app[api.STORE], app[api.METRICS]
    await store.open()

    def observe(seconds: float, reports: int) -> None:
        metrics.store_write.observe(seconds)
        metrics.commit_reports.observe(reports)

    store.on_commit = observe
    try:
        yield
    finally:
        await store.close()


async def _flush(app: web.Application) -> None:
    """Write bookkeeping that must not slow requests: token last use, rejection counts."""
    state = app[api.INGEST_STATE]
    try:
        await app[api.AUTH].flush()
        if state.pending_rejections:
            pending, state.pending_rejections = state.pending_rejections, {}
            await app[api.STORE].record_rejections(pending)
    except StoreError as exc:
        event(log, logging.WARNING, "store.flush_failed", error=str(exc)[:300])


class SnapshotThread:
    """Snapshot refreshes on an event loop of their own, in a thread of their own.

    Building the snapshot is CPU work that grows with the province (hundreds of ms for
    thousands of sites); on the serving loop every ingest and scrape would wait for it.
    The thread refreshes a private ``SnapshotBuilder`` (so no asyncio object is shared
    between loops) and the serving loop only swaps the result into the app's builder,
    which is what /metrics reads.
    """

    def __init__(
        self, target: SnapshotBuilder, after_refresh: Callable[[], None] | None = None
    ) -> None:
        self.target = target
        # Called right after each refresh, in the thread that refreshed (HeapFreezer).
        self.after_refresh = after_refresh
        # Only a store whose reads work from any event loop (SQLite: its own threads) can be
        # read from the thread; others (asyncpg: loop-bound pools) refresh on the serving loop.
        self.threaded = bool(getattr(target.store, "reads_from_any_loop", False))
        self._shadow = SnapshotBuilder(
            target.org,
            target.plans,
            target.store,
            target.settings,
            clock=target.clock,
            initial=target.snapshot,
        )
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="hatang-snapshot", daemon=True
        )
        self._pending: concurrent.futures.Future[bool] | None = None

    def start(self) -> None:
        if self.threaded:
            self._thread.start()

    async def refresh(self) -> bool:
        """Refresh in the thread; publish the snapshot unless a newer one is served already."""
        if not self.threaded:
            return await self._refresh(self.target)
        pending = asyncio.run_coroutine_threadsafe(self._refresh(self._shadow), self._loop)
        self._pending = pending
        # Shielded: cancelling the caller (shutdown) lets a running refresh finish cleanly.
        ok = await asyncio.shield(asyncio.wrap_future(pending))
        shadow, target = self._shadow, self.target
        if shadow.snapshot.generated_at >= target.snapshot.generated_at:
            # Every public attribute: the snapshot and its bookkeeping (refreshes, failures,
            # durations) travel together, as /metrics reads them together.
            for name, value in vars(shadow).items():
                if not name.startswith("_"):
                    setattr(target, name, value)
        return ok

    async def _refresh(self, builder: SnapshotBuilder) -> bool:
        ok = await builder.refresh()
        if self.after_refresh is not None:
            self.after_refresh()
        return ok

    async def stop(self) -> None:
        """Wait for a running refresh (bounded: a shutdown must end), then stop the
        thread's loop."""
        if self._pending is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                done, _ = await asyncio.wait(
                    [asyncio.wrap_future(self._pending)], timeout=STOP_WAIT_SECONDS
                )
                if not done:
                    event(log, logging.WARNING, "snapshot.refresh_abandoned_at_stop")
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            await asyncio.to_thread(self._thread.join)
        self._loop.close()


class HeapFreezer:
    """Keeps the cyclic GC from walking the whole heap at every refresh.

    At 20k agents the heap holds millions of long-lived objects (the snapshot, the decoded
    newest reports); each refresh allocates about as many, so a generation-2 pass ran
    about once per refresh, 0.2-0.3 s with the GIL held in whichever thread allocated
    (the serving loop, the writer) and found nothing: that was the p99 of ingest.
    After each refresh the objects alive are frozen (``gc.freeze``: passes skip them;
    reference counting still frees them, so the old snapshot goes as before). Only cycles
    among frozen objects that die later would wait: a full collection every
    ``full_every`` seconds bounds those.
    """

    def __init__(
        self, full_every: float = GC_FULL_EVERY, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.full_every = full_every
        self.clock = clock
        self._last_full = clock()

    def after_refresh(self) -> None:
        now = self.clock()
        if now - self._last_full >= self.full_every:
            self._last_full = now
            gc.unfreeze()
            gc.collect()
        gc.freeze()


FREEZER: Final = web.AppKey("heap_freezer", HeapFreezer)


def tune_for_serving(app: web.Application) -> None:
    """Interpreter settings for a serving collector process (``serve``; not in tests or
    short commands, which share their process with other work): a short GIL switch
    interval and the heap frozen after each refresh (``HeapFreezer``)."""
    sys.setswitchinterval(SWITCH_INTERVAL)
    app[FREEZER] = HeapFreezer()


async def _refresh_loop(app: web.Application, refresher: SnapshotThread) -> None:
    """Rebuild the snapshot every refresh_interval, and soon after ingests (coalesced).

    After ingests, refreshes are at least ``min_refresh_interval`` apart and at least
    REFRESH_GAP_FACTOR times their own duration: under load a big province's refresh
    then takes a bounded share of the CPU that ingest needs.
    """
    config, wake = app[api.CONFIG], app[api.REFRESH]
    loop = asyncio.get_running_loop()
    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), timeout=config.metrics.refresh_interval)
        wake.clear()
        started = loop.time()
        await refresher.refresh()  # failures are logged by the builder; old snapshot stays
        took = loop.time() - started
        gap = max(config.metrics.min_refresh_interval, REFRESH_GAP_FACTOR * took)
        await asyncio.sleep(max(0.0, gap - took))


async def _flush_loop(app: web.Application) -> None:
    while True:
        await asyncio.sleep(FLUSH_EVERY)
        await _flush(app)


async def _remote_write_ctx(app: web.Application) -> AsyncIterator[None]:
    """The remote-write sender: its own HTTP session, a task until shutdown."""
    config = app[api.CONFIG].remote_write
    assert config is not None
    async with ClientSession(timeout=ClientTimeout(total=config.timeout)) as session:
        sender = Sender(app[api.STORE], config, session)  # type: ignore[arg-type]
        app[SENDER] = sender
        app[api.REGISTRY].register(RemoteWriteCollector(sender))
        task = asyncio.create_task(sender.run(), name="hatang-remote-write")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def _background_ctx(app: web.Application) -> AsyncIterator[None]:
    freezer = app.get(FREEZER)
    refresher = SnapshotThread(app[BUILDER], None if freezer is None else freezer.after_refresh)
    refresher.start()
    try:
        await refresher.refresh()
        tasks = [
            asyncio.create_task(_refresh_loop(app, refresher), name="hatang-snapshot-refresh"),
            asyncio.create_task(_flush_loop(app), name="hatang-flush"),
        ]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await _flush(app)
    finally:
        await refresher.stop()
