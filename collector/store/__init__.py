"""The store interface: what the API, the indicators and the evidence export need.

SQLite (``sqlite.py``) is the default; PostgreSQL (``postgres.py``) implements the same
Protocol and is run through the same test suite. SQL stays portable: no SQLite-only
tricks leak through this interface.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from agent.report import NetworkClass, Report


@dataclass(frozen=True, slots=True)
class IngestResult:
    """What one batch did: new rows, exact replays, and same-id-different-content rejects."""

    accepted: int
    duplicates: int
    conflicts: int


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


class Store(Protocol):
    """Durable storage of reports, tokens, latest state and roll-ups."""

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def healthy(self) -> bool: ...

    async def ingest(self, site: str, reports: Sequence[tuple[Report, bytes]]) -> IngestResult:
        """Store a batch atomically (``bytes`` is the report's canonical JSON); return
        only after it is durable. Each report id is stored once."""
        ...

    async def create_token(self, site: str, note: str | None = None) -> tuple[str, str]: ...
    async def lookup_token(self, token: str) -> TokenRecord | None: ...
    async def list_tokens(self) -> list[TokenRecord]: ...
    async def revoke_token(self, token_id: str) -> bool: ...

    async def agent_states(self) -> list[AgentState]: ...
    async def network_windows(self, since: dt.datetime) -> list[NetworkWindow]: ...
    async def received_counts(self, since: dt.datetime) -> dict[tuple[str, str], int]:
        """Reports per (site, agent_id) observed since ``since`` (late ones included)."""
        ...

    def reports(
        self, site: str | None, start: dt.datetime, end: dt.datetime
    ) -> AsyncIterator[Report]: ...

    async def digest(self) -> str:
        """A hash over all stored content: equal before and after a rejected request."""
        ...
