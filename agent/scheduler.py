"""The agent daemon: sections on their own intervals, reports into the spool, a sender.

Each enabled section (``agent.sections``) runs in its own task: first at start, then
every interval plus a random offset of up to ``jitter`` × interval, so a province's
agents that booted together drift apart instead of hitting the collector at once.
Ticks follow a fixed grid, so the offsets never accumulate into drift. A section that
is still running when its next tick comes is not started twice (the tick is skipped
and logged), and a slow section never delays another.

Each completed ``networks`` run produces one report carrying the other sections
collected since the previous report; it is committed to the spool and the sender is
woken. A report is made even when the networks check failed internally (its networks
then read "not configured", never "down"), so the collector still sees the agent alive.
The sender runs as its own task. A stop request (``StopSignal``: SIGTERM/SIGINT on
POSIX, the service control manager's stop on Windows, which sends no signal) stops
scheduling, abandons an in-flight request safely (nothing unacknowledged is deleted;
what the collector already stored it will see again as a duplicate), closes the spool
and exits 0. Every way of stopping goes through that one path.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import random
import signal
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

from agent import __version__, memory
from agent.central import Refresher
from agent.config import AgentConfig, ConfigError, read_yaml, redact_url, security_warnings
from agent.log import configure, event, log_exception_limited
from agent.report import Report, utcnow
from agent.sections import Section, SectionName, collect, enabled_sections, make_report
from agent.sender import Sender
from agent.spool import Spool, SpoolCorrupt, SpoolError, open_spool

log = logging.getLogger(__name__)

EXIT_OK: Final = 0
EXIT_FAILURE: Final = 1
EXIT_CONFIG: Final = 2
# How long shutdown waits for the sender to notice the stop and return.
SHUTDOWN_GRACE_SECONDS: Final = 10.0
STATUS_EVERY_SECONDS: Final = 600.0


class StopSignal:
    """The one way to stop a running daemon, callable from any thread.

    POSIX signal handlers, the Windows service's ``SvcStop`` (on the service control
    thread) and tests call ``request``; it wakes the daemon's event loop thread-safely,
    and the daemon then takes its single shutdown path. A request made before the
    daemon started is kept and honoured as soon as it binds.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reason: str | None = None
        self._wake: Callable[[], None] | None = None

    @property
    def reason(self) -> str | None:
        """Why the stop was requested (``SIGTERM``, ``service stop``...), None if it was not."""
        return self._reason

    def request(self, reason: str) -> None:
        """Ask the daemon to stop (idempotent: the first reason is kept)."""
        with self._lock:
            if self._reason is None:
                self._reason = reason
            wake = self._wake
        if wake is not None:
            wake()

    def bind(
        self, loop: asyncio.AbstractEventLoop, stop: Callable[[str], None]
    ) -> Callable[[], None]:
        """Route requests to ``stop`` on ``loop``; return the function that unbinds it."""

        def wake() -> None:
            with contextlib.suppress(RuntimeError):  # the loop is already closed
                loop.call_soon_threadsafe(stop, self._reason or "stop")

        with self._lock:
            self._wake = wake
            pending = self._reason is not None
        if pending:
            wake()

        def unbind() -> None:
            with self._lock:
                self._wake = None

        return unbind


def _format_seconds(seconds: float) -> str:
    return f"{seconds:g}s"


class Daemon:
    """One running agent: its spool, section tasks and sender. ``stop()`` ends ``run()``."""

    def __init__(
        self,
        config: AgentConfig,
        config_path: str,
        *,
        sections: Sequence[Section] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        """``sections`` defaults to the enabled entries of ``agent.sections.SECTIONS``."""
        self.config = config
        self._own_sections = sections is None  # then a new central config may change them
        self.sections = list(sections) if sections is not None else enabled_sections(config)
        self.config_path = config_path
        self.spool: Spool | None = None
        self.sender: Sender | None = None
        self.agent_id: str | None = None
        self.reports_queued = 0
        self._rng = rng or random.Random()
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()
        self._pending: dict[SectionName, Any] = {}
        self._runs: set[asyncio.Task[None]] = set()
        self._loops: dict[SectionName, asyncio.Task[None]] = {}
        self._settled = False
        self.refresher: Refresher | None = None
        # Cycles that could not be spooled (disk full...): the next report that is
        # queued counts them as dropped and skips their seq numbers.
        self.unspooled = 0

    def stop(self, reason: str = "stop") -> None:
        """Shut down (idempotent); on the loop's thread: other threads use ``StopSignal``."""
        if not self._stop.is_set():
            event(log, logging.INFO, "agent.stopping", reason=reason)
        self._stop.set()

    async def run(self) -> int:
        """Run until ``stop()``; return the process exit code."""
        config = self.config
        try:
            token = config.collector.read_token() if config.collector else None
        except ConfigError as exc:
            return self._config_error(exc)
        try:
            self.spool = await asyncio.to_thread(
                open_spool, config.spool.path, int(config.spool.max_size)
            )
        except SpoolError as exc:
            event(log, logging.ERROR, "spool.unusable", error=str(exc))
            return EXIT_FAILURE
        try:
            if config.collector is not None and token is not None:
                self.sender = Sender(config.collector, self.spool, token)
            self.agent_id = await asyncio.to_thread(self.spool.identity, config.agent_id)
        except ConfigError as exc:
            await asyncio.to_thread(self.spool.close)
            return self._config_error(exc)
        except SpoolError as exc:
            event(log, logging.ERROR, "spool.unusable", error=str(exc))
            await asyncio.to_thread(self.spool.close)
            return EXIT_FAILURE

        if token is not None:
            self.refresher = self._make_refresher(token)
        if self.refresher is not None:
            cached = self.refresher.load_cache()  # the last good one, until the collector answers
            if cached is not None:
                self.apply_config(cached.config)
            elif not await self.refresher.first(self._stop):
                await asyncio.to_thread(self.spool.close)
                return EXIT_OK
        sections = self.sections
        self._log_start(sections)
        for section in sections:
            self._start_loop(section)
        tasks = [asyncio.create_task(self._status_loop(), name="status")]
        if self.refresher is not None:
            tasks.append(asyncio.create_task(self.refresher.run(self._stop), name="central"))
        sender_task = (
            asyncio.create_task(self.sender.run(self._stop, self._wake), name="sender")
            if self.sender
            else None
        )
        try:
            await self._stop.wait()
        finally:
            await self._shutdown(tasks, sender_task)
        return EXIT_OK

    def _make_refresher(self, token: str) -> Refresher | None:
        """The central-config refresher when the local file asks for one (``central:``)."""
        config = self.config
        if config.central is None or not config.central.enabled or config.collector is None:
            return None
        try:
            local = read_yaml(self.config_path)
        except ConfigError as exc:
            event(log, logging.ERROR, "central.disabled", error=str(exc))
            return None
        assert self.agent_id is not None
        return Refresher(local, config, self.config_path, token, self.agent_id, self.apply_config)

    def apply_config(self, config: AgentConfig) -> None:
        """Run ``config`` from now on: each section's next tick uses its targets and interval;
        sections it turns on start, sections it turns off stop (no restart)."""
        self.config = config
        if not self._own_sections:
            return
        self.sections = enabled_sections(config)
        if not self._loops:
            return  # not running yet: run() starts the loops
        wanted = {s.name: s for s in self.sections}
        for name, task in list(self._loops.items()):
            if name not in wanted:
                task.cancel()
                del self._loops[name]
        for name, section in wanted.items():
            if name not in self._loops:
                self._start_loop(section)

    def _start_loop(self, section: Section) -> None:
        task = asyncio.create_task(self._section_loop(section), name=f"section-{section.name}")
        self._loops[section.name] = task

    def _config_error(self, exc: ConfigError) -> int:
        file = exc.file or self.config_path
        text = f"{file}: {exc.path}: {exc.message}" if exc.path else f"{file}: {exc.message}"
        event(log, logging.ERROR, "config.invalid", error=text)
        return EXIT_CONFIG

    def _log_start(self, sections: list[Section]) -> None:
        config = self.config
        event(
            log,
            logging.INFO,
            "agent.started",
            version=__version__,
            pid=os.getpid(),
            config=self.config_path,
            site=config.site,
            role=config.role,
            agent_id=self.agent_id,
            sections=",".join(f"{s.name}={_format_seconds(s.interval(config))}" for s in sections),
            jitter=config.jitter,
            spool=config.spool.path,
            collector=",".join(map(redact_url, config.collector.urls))
            if config.collector
            else "none",
        )
        for key, warning in security_warnings(config):
            event(log, logging.WARNING, "config.insecure", key=key, warning=warning)
        if config.collector is None:
            event(
                log,
                logging.WARNING,
                "sender.disabled",
                hint="no collector configured: reports are kept in the spool until one is",
            )

    # -- sections ---------------------------------------------------------------------------

    async def _section_loop(self, section: Section) -> None:
        """Start ``section`` on every tick of its grid unless its previous run is still going."""
        loop = asyncio.get_running_loop()
        interval = float(section.interval(self.config))
        spread = self.config.jitter * interval
        start = loop.time()
        tick = 0
        running: asyncio.Task[None] | None = None
        while not self._stop.is_set():
            current = float(section.interval(self.config))
            if current != interval:  # a new central config: a new grid from now
                interval, spread = current, self.config.jitter * current
                start, tick = loop.time(), 0
            if running is not None and not running.done():
                event(
                    log,
                    logging.WARNING,
                    "section.overrun",
                    section=section.name,
                    interval_seconds=interval,
                    hint="the previous run is still going; this tick is skipped",
                )
            else:
                running = asyncio.create_task(self._run_section(section))
                self._runs.add(running)
                running.add_done_callback(self._runs.discard)
            tick += 1
            now = loop.time()
            if start + tick * interval < now - interval:
                # The loop was blocked (or the machine slept): skip the missed ticks.
                tick = int((now - start) // interval) + 1
            due = start + tick * interval + self._rng.uniform(0.0, spread)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), max(0.0, due - loop.time()))

    async def _run_section(self, section: Section) -> None:
        observed_at = utcnow()
        started = time.monotonic()
        value = await collect(self.config, section)
        if section.name == "networks":
            await self._emit_report(value, observed_at, time.monotonic() - started)
            self._release_memory()
        elif value is not None:
            self._pending[section.name] = value

    def _release_memory(self) -> None:
        """After a cycle: give freed heap back; after the first, freeze what start-up built."""
        if not self._settled and len(self._runs) <= 1:
            # Only this run is left: every section has imported what it needs.
            memory.settle()
            self._settled = True
        memory.trim()

    async def _emit_report(
        self, networks: Any | None, observed_at: dt.datetime, duration: float
    ) -> None:
        """Commit one report with the sections collected since the last one; wake the sender."""
        assert self.spool is not None and self.agent_id is not None
        taken = dict(self._pending)
        self._pending.clear()
        results: dict[SectionName, Any] = dict(taken)
        if networks is not None:
            results["networks"] = networks
        agent_id = self.agent_id

        def build(seq: int, dropped: int) -> Report:
            return make_report(
                self.config,
                agent_id=agent_id,
                seq=seq,
                observed_at=observed_at,
                results=results,
                spool_dropped=dropped,
                duration_seconds=duration,
            )

        try:
            appended = await asyncio.to_thread(self.spool.append, build, self.unspooled)
        except Exception as exc:
            # Keep what was collected for the next report unless a newer value arrived.
            for name, value in taken.items():
                self._pending.setdefault(name, value)
            self.unspooled += 1
            if isinstance(exc, SpoolError):
                event(
                    log,
                    logging.ERROR,
                    "report.not_queued",
                    error=str(exc),
                    unspooled=self.unspooled,
                    hint="this cycle is lost; the next queued report counts it in "
                    "spool_dropped and skips its seq",
                )
            else:
                log_exception_limited(log, "report.not_queued", exc)
            if isinstance(exc, SpoolCorrupt) or self.spool.closed:
                await self._replace_spool()
            return
        self.unspooled = 0
        self.reports_queued += 1
        event(
            log,
            logging.DEBUG,
            "report.queued",
            report_id=appended.report.id,
            seq=appended.report.seq,
            bytes=appended.size,
            sections=",".join(sorted(results)) or "none",
            spool_dropped=appended.report.spool_dropped,
        )
        self._wake.set()

    async def _replace_spool(self) -> None:
        """The spool got damaged while running: reopen it, which moves it aside."""
        old = self.spool
        assert old is not None
        await asyncio.to_thread(old.close)
        try:
            spool = await asyncio.to_thread(
                open_spool, self.config.spool.path, int(self.config.spool.max_size), self.agent_id
            )
        except SpoolError as exc:
            # Keep the closed one: every later cycle fails, is counted, and tries again.
            event(log, logging.ERROR, "spool.unusable", error=str(exc))
            return
        self.spool = spool
        if self.sender is not None:
            self.sender.spool = spool

    async def _status_loop(self) -> None:
        """Log the spool and sender counters now and then, for people reading the log."""
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), STATUS_EVERY_SECONDS)
            if not self._stop.is_set():
                await self._log_status("agent.status")

    async def _log_status(self, name: str) -> None:
        fields: dict[str, Any] = {"reports_queued": self.reports_queued}
        if self.spool is not None:
            try:
                stats = await asyncio.to_thread(self.spool.stats)
            except SpoolError as exc:
                fields["spool_error"] = str(exc)
            else:
                fields.update(
                    spool_queued=stats.queued,
                    spool_bytes=stats.queued_bytes,
                    spool_oldest=stats.oldest_observed_at,
                    spool_dropped_total=stats.dropped_total,
                    spool_rejected_total=stats.rejected_total,
                )
        if self.sender is not None:
            s = self.sender.stats
            fields.update(
                sent_reports=s.sent_reports,
                failed_attempts=s.failed_attempts,
                rejected_reports=s.rejected_reports,
                last_error=s.last_error,
            )
        event(log, logging.INFO, name, **fields)

    # -- shutdown ---------------------------------------------------------------------------

    async def _shutdown(
        self, tasks: list[asyncio.Task[None]], sender_task: asyncio.Task[None] | None
    ) -> None:
        """Stop scheduling, let the sender notice, close the spool."""
        self._stop.set()
        doomed = [*tasks, *self._loops.values(), *self._runs]
        for task in doomed:
            task.cancel()
        await asyncio.gather(*doomed, return_exceptions=True)
        if sender_task is not None:
            done, _ = await asyncio.wait({sender_task}, timeout=SHUTDOWN_GRACE_SECONDS)
            if not done:
                sender_task.cancel()
                await asyncio.gather(sender_task, return_exceptions=True)
            elif (exc := sender_task.exception()) is not None:
                log_exception_limited(log, "sender.crashed", exc)
        await self._log_status("agent.stopped")
        if self.spool is not None:
            await asyncio.to_thread(self.spool.close)


def _install_signal_handlers(
    loop: asyncio.AbstractEventLoop, stop: StopSignal
) -> Callable[[], None]:
    """Route SIGTERM/SIGINT to ``stop``; return a function that restores the old handlers."""
    signals = [signal.SIGTERM, signal.SIGINT]
    try:
        for sig in signals:
            loop.add_signal_handler(sig, stop.request, sig.name)
    except (NotImplementedError, RuntimeError, ValueError):
        # Windows (or not the main thread): plain handlers; outside the main thread
        # (the Windows service) there are none, and SvcStop requests the stop instead.
        previous: dict[int, Any] = {}
        for sig in signals:
            with contextlib.suppress(ValueError, OSError):
                previous[sig] = signal.signal(
                    sig, lambda n, _: stop.request(signal.Signals(n).name)
                )

        def restore_plain() -> None:
            for sig, handler in previous.items():
                with contextlib.suppress(ValueError, OSError):
                    signal.signal(sig, handler)

        return restore_plain

    def restore() -> None:
        for sig in signals:
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)

    return restore


async def run_daemon(
    config: AgentConfig, config_path: str | Path, stop: StopSignal | None = None
) -> int:
    """Run the agent daemon until ``stop`` (or SIGTERM/SIGINT); return the exit code."""
    if not logging.getLogger().handlers:
        configure(config.log)
    memory.limit_arenas()  # before the first worker thread exists
    stop = stop or StopSignal()
    daemon = Daemon(config, str(config_path))
    loop = asyncio.get_running_loop()
    unbind = stop.bind(loop, daemon.stop)
    restore = _install_signal_handlers(loop, stop)
    try:
        return await daemon.run()
    finally:
        restore()
        unbind()
