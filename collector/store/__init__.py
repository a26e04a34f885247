"""The store interface: what the API, the indicators and the evidence export need.

SQLite (``sqlite.py``) is the default; a PostgreSQL backend implements the same Protocol
and is run through the same test suite. SQL stays portable: no SQLite-only tricks leak
through this interface.

Time rule (clock skew): every report keeps its ``observed_at`` as sent, but windows,
buckets, roll-ups and "newest section" ordering use its *effective time*: ``observed_at``,
or ``received_at`` when ``observed_at`` is more than ``max_future`` ahead of the
collector's clock. A PC with a wrong clock is counted, never lost, and never pins the
windows to the future.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from agent.report import NetworkClass, Report

TOKEN_PREFIX = "hat_"  # noqa: S105 - a prefix, not a secret


def new_token() -> tuple[str, str]:
    """Return ``(token_id, token)``: a public id for lists and revocation, and the secret."""
    token_id = secrets.token_hex(6)
    return token_id, f"{TOKEN_PREFIX}{token_id}_{secrets.token_urlsafe(32)}"


def hash_token(token: str) -> str:
    """The only form in which a token is stored (SHA-256, hex)."""
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


class StoreError(Exception):
    """The store cannot do what was asked (not a problem of the input)."""


class StoreUnavailable(StoreError):
    """The store cannot be written or read right now (locked, disk full, I/O error, closed).

    The API answers 503 with ``Retry-After``; the agent keeps the batch in its spool.
    """


@dataclass(frozen=True, slots=True)
class IngestResult:
    """What one batch did: new rows, exact replays, and same-id-different-content rejects."""

    accepted: int
    duplicates: int
    conflicts: int
    clock_skewed: int = 0  # accepted reports filed under received_at (observed_at in the future)


@dataclass(frozen=True, slots=True)
class TokenRecord:
    token_id: str
    site: str
    created_at: dt.datetime
    revoked_at: dt.datetime | None
    last_used_at: dt.datetime | None
    note: str | None


@dataclass(frozen=True, slots=True)
class AgentState:
    """The latest of everything one agent reported (each section from its newest report)."""

    site: str
    agent_id: str
    role: str
    interval_seconds: float
    first_seen: dt.datetime  # received_at of its first report
    last_observed_at: dt.datetime  # observed_at of its newest report
    last_received_at: dt.datetime
    reports_received: int
    spool_dropped: int
    latest: Report  # newest report; sections it lacks are filled from older ones below
    host: object | None  # agent.report.HostInventory
    antivirus: object | None  # agent.report.AntivirusStatus
    firewall: object | None  # agent.report.FirewallStatus
    lan_hosts: object | None  # agent.report.LanHosts
    snmp: object | None  # list[agent.report.SnmpDevice]


@dataclass(frozen=True, slots=True)
class NetworkWindow:
    """Checks of one network class of one site within a window (configured checks only)."""

    site: str
    network: NetworkClass
    checks: int
    up_checks: int


@dataclass(frozen=True, slots=True)
class AgentNetworkWindow:
    """Checks of one network class by one agent within a window (per-computer "connected")."""

    site: str
    agent_id: str
    network: NetworkClass
    checks: int
    up_checks: int


@dataclass(frozen=True, slots=True)
class DailyNetwork:
    """One day of one agent's checks of one network class (the yearly-evidence roll-up)."""

    day: dt.date
    site: str
    agent_id: str
    network: NetworkClass
    checks: int
    up_checks: int
    seconds_up: float  # sum of the intervals of up checks, capped at one day


@dataclass(frozen=True, slots=True)
class DailyHost:
    """One day of one agent: reports received and its last antivirus state that day."""

    day: dt.date
    site: str
    agent_id: str
    hostname: str | None
    reports: int
    antivirus_state: str | None


class Store(Protocol):
    """Durable storage of reports, tokens, latest state and roll-ups.

    Window queries (``network_windows``, ``received_counts``) are answered from buckets
    (hourly unless ``window.bucket`` says otherwise): the bucket that contains ``since`` is
    counted whole, so a window may reach up to one bucket further back than asked. That
    keeps a scrape cheap on a year of history.
    """

    # Called after each durable write with (seconds, reports written): store latency metric.
    on_commit: Callable[[float, int], None] | None

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def healthy(self) -> bool: ...

    async def ingest(self, site: str, reports: Sequence[tuple[Report, bytes]]) -> IngestResult:
        """Store a batch atomically (``bytes`` is the report's canonical JSON); return
        only after it is durable. Each report id is stored once."""
        ...

    async def create_token(self, site: str, note: str | None = None) -> tuple[str, str]:
        """Create a token for ``site``; return ``(token_id, token)``. Only a hash is kept."""
        ...

    async def lookup_token(self, token: str) -> TokenRecord | None: ...
    async def list_tokens(self) -> list[TokenRecord]: ...
    async def revoke_token(self, token_id: str) -> bool: ...
    async def touch_tokens(self, last_used: dict[str, dt.datetime]) -> None:
        """Record when tokens were last used (batched by the caller; not part of digest)."""
        ...

    async def agent_states(self) -> list[AgentState]: ...
    async def network_windows(self, since: dt.datetime) -> list[NetworkWindow]: ...
    async def agent_network_windows(self, since: dt.datetime) -> list[AgentNetworkWindow]: ...
    async def received_counts(self, since: dt.datetime) -> dict[tuple[str, str], int]:
        """Reports per (site, agent_id) observed since ``since`` (late ones included)."""
        ...

    async def daily_networks(self, start: dt.date, end: dt.date) -> list[DailyNetwork]:
        """Daily network roll-ups with ``start <= day < end``."""
        ...

    async def daily_hosts(self, start: dt.date, end: dt.date) -> list[DailyHost]:
        """Daily per-host roll-ups with ``start <= day < end``."""
        ...

    def reports(
        self, site: str | None, start: dt.datetime, end: dt.datetime
    ) -> AsyncIterator[Report]:
        """Stored reports with ``start <= observed_at < end``, oldest first."""
        ...

    async def report_count(self) -> int: ...

    async def record_rejections(self, counts: dict[str, int]) -> None:
        """Add to the persistent rejected-request counters (not part of digest)."""
        ...

    async def rejection_counts(self) -> dict[str, int]: ...

    async def digest(self) -> str:
        """A hash over all stored content: equal before and after a rejected request.

        Operational bookkeeping (token ``last_used_at``, rejection counters) is excluded.
        """
        ...


def open_store(
    url: str,
    *,
    busy_timeout: float = 5.0,
    max_future: float = 300.0,
    hourly_retention: float = 35 * 86400.0,
    bucket_seconds: float = 3600.0,
) -> Store:
    """Return the (not yet opened) store for a ``store.url``."""
    if url.startswith("sqlite:"):
        from collector.config import sqlite_path
        from collector.store.sqlite import SQLiteStore

        return SQLiteStore(
            sqlite_path(url),
            busy_timeout=busy_timeout,
            max_future=max_future,
            hourly_retention=hourly_retention,
            bucket_seconds=bucket_seconds,
        )
    raise StoreError(f"unsupported store url {url!r}")
