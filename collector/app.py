"""The collector application: ``create_app(config) -> web.Application``.

Resources are ``cleanup_ctx`` context managers (the store first, so it closes last;
then the background tasks that refresh the indicator snapshot and flush bookkeeping),
shared state sits on typed ``AppKey``s (declared in ``collector.api``), routes are one
table, and metrics live on the app's own ``CollectorRegistry`` so that two apps (or
two tests) never share counters.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any, Final

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from prometheus_client import CollectorRegistry, Gauge

from agent import __version__
from agent.log import event
from collector import api
from collector.auth import Authenticator
from collector.config import CollectorConfig
from collector.indicators import IndicatorSettings, SnapshotBuilder
from collector.metrics import HatangCollector
from collector.org import Org, load_org
from collector.store import Store, StoreError, open_store
from collector.targets import Plan, load_targets

log = logging.getLogger(__name__)

BUILDER: Final = web.AppKey("builder", SnapshotBuilder)
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


def indicator_settings(config: CollectorConfig) -> IndicatorSettings:
    """The indicator settings that the collector config decides."""
    return IndicatorSettings(
        window_seconds=config.window.duration,
        up_ratio=config.window.up_ratio,
        site_up_after_intervals=config.site_up_after_intervals,
        clock_skew_tolerance_seconds=config.clock_skew.max_future,
        bucket_seconds=config.window.bucket,
    )


def make_store(config: CollectorConfig) -> Store:
    """The store that the config names (not yet opened)."""
    return open_store(
        config.store.url,
        busy_timeout=config.store.busy_timeout,
        max_future=config.clock_skew.max_future,
        hourly_retention=config.store.hourly_retention,
        bucket_seconds=config.window.bucket,
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
    store = make_store(config) if store is None else store
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
    registry.register(HatangCollector(builder))

    app[api.CONFIG] = config
    app[api.STORE] = store
    app[api.AUTH] = Authenticator(store, config.auth.cache_ttl)
    app[api.ORG] = org
    app[api.REGISTRY] = registry
    app[api.METRICS] = metrics
    app[api.INGEST_STATE] = api.IngestState()
    app[api.REFRESH] = asyncio.Event()
    app[BUILDER] = builder

    app.cleanup_ctx.append(_store_ctx)
    app.cleanup_ctx.append(_background_ctx)
    app.router.add_routes(
        [
            web.post("/api/v1/reports", api.post_reports, name="reports"),
            web.get("/api/v1/openapi.yaml", api.get_openapi, name="openapi"),
            web.get("/healthz", api.get_healthz, name="healthz"),
            web.get("/metrics", api.get_metrics, name="metrics"),
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


async def _refresh_loop(app: web.Application) -> None:
    """Rebuild the snapshot every refresh_interval, and soon after ingests (coalesced)."""
    config, builder, wake = app[api.CONFIG], app[BUILDER], app[api.REFRESH]
    loop = asyncio.get_running_loop()
    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), timeout=config.metrics.refresh_interval)
        wake.clear()
        started = loop.time()
        await builder.refresh()  # failures are logged by the builder; old snapshot stays
        await asyncio.sleep(max(0.0, config.metrics.min_refresh_interval - (loop.time() - started)))


async def _flush_loop(app: web.Application) -> None:
    while True:
        await asyncio.sleep(FLUSH_EVERY)
        await _flush(app)


async def _background_ctx(app: web.Application) -> AsyncIterator[None]:
    await app[BUILDER].refresh()
    tasks = [
        asyncio.create_task(_refresh_loop(app), name="hatang-snapshot-refresh"),
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
