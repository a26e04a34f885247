"""Structured logs: one line per event, ``ts=… level=… event=… key=value``.

Events are stable dotted names (``spool.dropped``, ``send.rejected``) so that a log
shipper or a person with grep can follow them. Never pass secrets (tokens, keys).
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable
from typing import Annotated, Any, Literal

import msgspec

from agent.units import Section, Size

LogLevel = Literal["debug", "info", "warning", "error"]


class LogConfig(Section, frozen=True):
    """The ``log`` section of the agent and collector configs.

    A log file rotates by size: an office PC runs the agent for years, and a log that
    only grows ends by filling the disk.
    """

    level: LogLevel = "info"
    file: str | None = None  # default: standard error (the Windows service: ProgramData)
    max_size: Size = Size(10_000_000)  # rotate when the file reaches this size
    backups: Annotated[int, msgspec.Meta(ge=1, le=100)] = 5  # rotated files kept

    def __post_init__(self) -> None:
        if self.max_size < 10_000:
            raise ValueError(f"max_size: {self.max_size} bytes is too small (at least 10kB)")


_RESERVED = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


def _quote(value: Any) -> str:
    text = str(value)
    if text == "" or any(c in text for c in ' "=\n\t'):
        text = '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    return text


class LogfmtFormatter(logging.Formatter):
    """Render a record as logfmt; ``extra`` fields become key=value pairs."""

    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        parts = [
            f"ts={ts}.{int(record.msecs):03d}Z",
            f"level={record.levelname.lower()}",
            f"logger={record.name}",
            f"event={_quote(record.getMessage())}",
        ]
        parts += [f"{k}={_quote(v)}" for k, v in record.__dict__.items() if k not in _RESERVED]
        if record.exc_info:
            parts.append(f"exception={_quote(self.formatException(record.exc_info))}")
        return " ".join(parts)


def event(logger: logging.Logger, level: int, name: str, **fields: Any) -> None:
    """Log one structured event: ``event(log, logging.INFO, "report.sent", count=3)``."""
    logger.log(level, name, extra=fields)


def setup(
    level: LogLevel | str = "info",
    file: str | None = None,
    *,
    max_bytes: int = 10_000_000,
    backups: int = 5,
) -> None:
    """Configure the root logger for the agent or collector process.

    A file rotates at ``max_bytes`` keeping ``backups`` old files: an office PC runs the
    agent for years, and a log that only grows ends by filling the disk.
    """
    handler: logging.Handler
    if file:
        from logging.handlers import RotatingFileHandler

        from agent.files import create_private

        create_private(file)  # logs name hosts, addresses and errors: owner-only
        handler = RotatingFileHandler(
            file, maxBytes=max_bytes, backupCount=max(1, backups), encoding="utf-8"
        )
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(LogfmtFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def configure(log: LogConfig, file: str | None = None) -> None:
    """``setup`` from a config's ``log`` section (``file`` overrides ``log.file``)."""
    setup(log.level, file or log.file, max_bytes=log.max_size, backups=log.backups)


class RateLimitedLog:
    """At most one record per key and interval: a repeating failure (a bug hit by every
    cycle or request, a full descriptor table) leaves one line a minute, not a flood.

    Every record that gets through carries ``repeats_suppressed``: how many of that key
    were held back since the previous one (not lost, counted). Keys are bounded (the
    oldest is forgotten first); safe to call from several threads.
    """

    MAX_KEYS = 4096

    def __init__(
        self,
        logger: logging.Logger,
        interval: float = 60.0,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger, self.interval, self.clock = logger, interval, clock
        self._seen: dict[str, tuple[float, int]] = {}  # key -> (last logged, suppressed)
        self._lock = threading.Lock()

    def event(
        self,
        level: int,
        name: str,
        *,
        key: str | None = None,
        exc: BaseException | None = None,
        interval: float | None = None,
        **fields: Any,
    ) -> bool:
        """Log one event (with ``exc``'s traceback) unless ``key`` (default: the event
        name) was logged within the interval; return whether it was logged."""
        key = name if key is None else key
        interval = self.interval if interval is None else interval
        now = self.clock()
        with self._lock:
            last = self._seen.get(key)
            if last is not None and now - last[0] < interval:
                self._seen[key] = (last[0], last[1] + 1)
                return False
            self._seen.pop(key, None)
            if len(self._seen) >= self.MAX_KEYS:
                del self._seen[next(iter(self._seen))]
            self._seen[key] = (now, 0)
        fields["repeats_suppressed"] = last[1] if last is not None else 0
        exc_info = (type(exc), exc, exc.__traceback__) if exc is not None else None
        self.logger.log(level, name, extra=fields, exc_info=exc_info)
        return True


_LIMITERS: dict[str, RateLimitedLog] = {}
_LIMITERS_LOCK = threading.Lock()


def log_exception_limited(
    logger: logging.Logger, key: str, exc: BaseException, interval: float = 60.0, **fields: Any
) -> bool:
    """Log an unexpected error (event ``key``) with its traceback at ERROR, at most once per
    ``interval`` per ``key`` and ``fields`` (which say where: section, target, device...);
    the repeats in between are counted in the next line, not lost.

    A bug that fails every cycle must be visible without DEBUG, but must not fill the disk.
    """
    with _LIMITERS_LOCK:
        limiter = _LIMITERS.get(logger.name)
        if limiter is None:
            limiter = _LIMITERS[logger.name] = RateLimitedLog(logger)
    where = "\x1f".join((key, *(f"{k}={v}" for k, v in sorted(fields.items()))))
    error = f"{type(exc).__name__}: {exc}"[:300]
    return limiter.event(
        logging.ERROR, key, key=where, exc=exc, interval=interval, error=error, **fields
    )
