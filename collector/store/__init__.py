"""The store interface: what the API, the indicators and the evidence export need.

SQLite (``sqlite.py``) is the default; PostgreSQL (``postgres.py``, for several collector
replicas or more agents than one disk keeps up with) implements the same Protocol and is
run through the same test suite. SQL stays portable: no SQLite-only tricks leak
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
import logging
import math
import secrets
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, Protocol

import msgspec

from agent.log import event
from agent.report import (
    Address,
    AddressFamily,
    Count,
    Id,
    NetworkClass,
    ProbeKind,
    Ratio,
    Report,
    Role,
    Seconds,
    SiteId,
    unix_seconds,
)

_log = logging.getLogger(__name__)
POSTGRES_SCHEMES = ("postgresql://", "postgres://")
TOKEN_PREFIX = "hat_"  # noqa: S105 - a prefix, not a secret
_EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def new_token() -> tuple[str, str]:
    """Return ``(token_id, token)``: a public id for lists and revocation, and the secret."""
    token_id = secrets.token_hex(6)
    return token_id, f"{TOKEN_PREFIX}{token_id}_{secrets.token_urlsafe(32)}"


def hash_token(token: str) -> str:
    """The only form in which a token is stored (SHA-256, hex)."""
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


class StoreError(Exception):
    """The store cannot do what was asked (not a problem of the input)."""


class StoreDamaged(StoreError):
    """The store's own integrity check failed: the collector refuses to serve from it."""


class StoreUnavailable(StoreError):
    """The store cannot be written or read right now (locked, disk full, I/O error, closed).

    The API answers 503 with ``Retry-After``; the agent keeps the batch in its spool.
    """


# How a store failure is counted (``hatang_store_errors_total{operation,kind}``).
STORE_ERROR_KINDS: Final = ("full", "io", "corrupt", "locked", "unavailable")
STORE_OPERATIONS: Final = ("read", "write")


class StoreFaults:
    """What the store's own reads and writes found out at run time: errors counted by
    operation and kind, and the reason of the last failure of each operation until the
    next success. Damage (``corrupt``) stays until restart: one read that works does not
    heal a broken page that another read hit. /healthz and /metrics read it (no I/O)."""

    def __init__(self) -> None:
        self.errors: dict[tuple[str, str], int] = {
            (op, kind): 0 for op in STORE_OPERATIONS for kind in STORE_ERROR_KINDS
        }
        self.current: dict[str, str] = {}  # operation -> why it fails now
        self._sticky: set[str] = set()  # operations that hit damage

    def failed(self, operation: str, kind: str, reason: str) -> None:
        self.errors[(operation, kind)] = self.errors.get((operation, kind), 0) + 1
        if operation in self._sticky:
            return  # keep the first damage reported
        self.current[operation] = f"{kind}: {reason}"[:300]
        if kind == "corrupt":
            self._sticky.add(operation)

    def succeeded(self, operation: str) -> None:
        if operation not in self._sticky:
            self.current.pop(operation, None)

    def problem(self) -> str | None:
        """Why the store does not work now, or None."""
        if "write" in self.current:
            return f"the store cannot write ({self.current['write']})"
        if "read" in self.current:
            return f"the store cannot read ({self.current['read']})"
        return None


@dataclass(frozen=True, slots=True)
class IngestResult:
    """What one batch did: new rows, exact replays, and same-id-different-content rejects."""

    accepted: int
    duplicates: int
    conflicts: int
    clock_skewed: int = 0  # accepted reports filed under received_at (observed_at in the future)


@dataclass(frozen=True, slots=True)
class Claim:
    """Remote-write samples leased to one sender: (series, ts_ms, value, stale), oldest
    first per series; ``too_old`` pending samples were dropped (older than max_sample_age)."""

    samples: list[tuple[str, int, float, bool]]
    too_old: int = 0


@dataclass(frozen=True, slots=True)
class QueueStats:
    """The remote-write queue: pending samples, oldest pending time (ms), outcome counts."""

    pending: int
    oldest_ms: int | None
    counts: dict[str, int]


@dataclass(frozen=True, slots=True)
class TokenRecord:
    token_id: str
    site: str
    created_at: dt.datetime
    revoked_at: dt.datetime | None
    last_used_at: dt.datetime | None
    note: str | None
    agent_id: str | None = None  # set for a per-agent credential (enrollment): reports must match


def token_record(row: Sequence[Any]) -> TokenRecord:
    """A ``tokens`` row (token_id, site, created_at, revoked_at, last_used_at, note[, agent_id])."""
    return TokenRecord(
        token_id=row[0],
        site=row[1],
        created_at=from_unix(row[2]),
        revoked_at=None if row[3] is None else from_unix(row[3]),
        last_used_at=None if row[4] is None else from_unix(row[4]),
        note=row[5],
        agent_id=row[6] if len(row) > 6 else None,
    )


@dataclass(frozen=True, slots=True)
class EnrollCode:
    """One enrollment code as stored (never the code itself: ``code_hash``)."""

    code_id: str
    code_hash: str
    site: str
    max_uses: int
    uses: int
    failures: int
    created_at: float
    expires_at: float
    revoked_at: float | None = None
    locked_at: float | None = None
    note: str | None = None


ENROLL_CODE_COLUMNS = (
    "code_id, code_hash, site, max_uses, uses, failures, created_at, expires_at,"
    " revoked_at, locked_at, note"
)


def enroll_code(row: Sequence[Any]) -> EnrollCode:
    """An ``enroll_codes`` row in ``ENROLL_CODE_COLUMNS`` order."""
    return EnrollCode(
        str(row[0]), str(row[1]), str(row[2]), int(row[3]), int(row[4]), int(row[5]),
        float(row[6]), float(row[7]),
        None if row[8] is None else float(row[8]),
        None if row[9] is None else float(row[9]),
        row[10],
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class NewAgent:
    """What an enrollment records: the agent, its credential's id and hash."""

    agent_id: str  # proposed; the store makes it unique (``-xxxx`` suffix when taken)
    hostname: str
    role: str
    agent_version: str
    token_id: str
    token_hash: str
    peer: str | None = None


@dataclass(frozen=True, slots=True)
class EnrolledAgent:
    """One enrolled agent with what ``agents list`` shows."""

    agent_id: str
    site: str
    hostname: str
    role: str
    agent_version: str
    enrolled_at: float
    token_id: str
    code_id: str
    revoked_at: float | None
    last_report_at: float | None
    config_version: str | None
    config_error: str | None
    config_rejected: str | None


ENROLLED_AGENTS_QUERY = (
    "SELECT e.agent_id, e.site, e.hostname, e.role, e.agent_version, e.enrolled_at,"
    " e.token_id, e.code_id, t.revoked_at, a.last_received_at, s.version, s.error, s.rejected"
    " FROM enrolled_agents e LEFT JOIN tokens t ON t.token_id = e.token_id"
    " LEFT JOIN agents a ON a.site = e.site AND a.agent_id = e.agent_id"
    " LEFT JOIN agent_config_status s ON s.site = e.site AND s.agent_id = e.agent_id"
    " ORDER BY e.site, e.agent_id"
)
CONFIG_ERRORS_QUERY = (
    "SELECT site, SUM(CASE WHEN error IS NULL THEN 0 ELSE 1 END) FROM agent_config_status"
    " GROUP BY site ORDER BY site"
)


def enrolled_agent(row: Sequence[Any]) -> EnrolledAgent:
    """A row of ``ENROLLED_AGENTS_QUERY``."""

    def when(value: Any) -> float | None:
        return None if value is None else float(value)

    return EnrolledAgent(
        agent_id=str(row[0]),
        site=str(row[1]),
        hostname=str(row[2]),
        role=str(row[3]),
        agent_version=str(row[4]),
        enrolled_at=float(row[5]),
        token_id=str(row[6]),
        code_id=str(row[7]),
        revoked_at=when(row[8]),
        last_report_at=when(row[9]),
        config_version=row[10],
        config_error=row[11],
        config_rejected=row[12],
    )


RedeemOutcome = Literal["ok", "unknown", "used_up", "expired", "revoked", "locked"]


def distinct_agent_id(agent_id: str) -> str:
    """``agent_id`` made distinct when taken (cloned PCs share a machine id): ``<id>-<4 hex>``."""
    return f"{agent_id[:59]}-{secrets.token_hex(2)}"


def redeem_refusal(code: EnrollCode | None, now: float) -> RedeemOutcome:
    """Why a code cannot be redeemed now ("ok" when it can): the one rule for both stores."""
    if code is None:
        return "unknown"
    if code.revoked_at is not None:
        return "revoked"
    if code.locked_at is not None:
        return "locked"
    if code.expires_at <= now:
        return "expired"
    if code.uses >= code.max_uses:
        return "used_up"
    return "ok"


def to_unix(value: dt.datetime) -> float:
    """Unix seconds, the stores' time format (a naive time is taken as UTC)."""
    return unix_seconds(value)


_MIN_DATETIME: Final = dt.datetime.min.replace(tzinfo=dt.UTC)
_MAX_DATETIME: Final = dt.datetime.max.replace(tzinfo=dt.UTC)
_MIN_UNIX: Final = _MIN_DATETIME.timestamp()
_MAX_UNIX: Final = _MAX_DATETIME.timestamp()


def from_unix(value: float) -> dt.datetime:
    """The UTC time of Unix seconds; total: beyond what a datetime holds it is clamped to
    year 1 or 9999 (a stored time from a hostile or older writer must not make a row
    unreadable), NaN reads as the earliest time."""
    value = float(value)
    if not value > _MIN_UNIX:  # also NaN
        return _MIN_DATETIME
    if value >= _MAX_UNIX:
        return _MAX_DATETIME
    try:
        return dt.datetime.fromtimestamp(value, dt.UTC)
    except (OverflowError, ValueError, OSError):  # the platform's own range is smaller
        return _EPOCH + dt.timedelta(seconds=value)


class LatestTarget(msgspec.Struct, frozen=True, gc=False):
    """What a snapshot reads of one probe result (``agent.report.ProbeResult``)."""

    kind: ProbeKind
    target: Address
    up: bool
    rtt_seconds: Seconds | None = None
    loss_ratio: Ratio | None = None
    family: AddressFamily | None = None


class LatestStatus(msgspec.Struct, frozen=True, gc=False):
    """What a snapshot reads of one network class (``agent.report.NetworkStatus``)."""

    configured: bool = False
    up: bool | None = None
    targets: tuple[LatestTarget, ...] = ()


class LatestNetworks(msgspec.Struct, frozen=True, gc=False):
    lan: LatestStatus = LatestStatus()
    wan: LatestStatus = LatestStatus()
    dedicated: LatestStatus = LatestStatus()
    internet: LatestStatus = LatestStatus()

    def get(self, network: NetworkClass) -> LatestStatus:
        """The status of one network class by name, as ``agent.report.Networks.get``."""
        status: LatestStatus = getattr(self, network)
        return status


class LatestReport(msgspec.Struct, frozen=True, gc=False):
    """The part of an agent's newest report that the collector keeps between snapshot
    refreshes, decoded straight from the stored body (unknown fields are skipped).

    A refresh keeps every agent's newest report; as a whole ``Report`` that was 3.7 KiB
    per agent (74 MiB at 20k agents) and the largest part of start-up's decoding. The
    stored body was validated as a whole ``Report`` when it was ingested and never
    changes; the identity fields are checked again as ``Report`` checks them, so a body
    edited by hand is still a bad row. Frozen and outside the cyclic GC: nothing here
    refers back to anything.
    """

    id: Id
    agent_id: Id
    site: SiteId
    role: Role
    networks: LatestNetworks = LatestNetworks()
    spool_rejected: Count = 0
    spool_resets: Count = 0


_LATEST: Final = msgspec.json.Decoder(LatestReport)


def decode_latest(body: str | bytes) -> LatestReport:
    """A stored report body as the snapshot keeps it."""
    return _LATEST.decode(body)


@dataclass(frozen=True, slots=True)
class AgentState:
    """The latest of everything one agent reported (each section from its newest report)."""

    site: str
    agent_id: str
    role: str
    interval_seconds: float
    first_seen: dt.datetime  # received_at of its first report
    last_observed_at: dt.datetime  # observed_at of its newest report (the agent's clock)
    last_received_at: dt.datetime
    reports_received: int
    spool_dropped: int
    # Newest report (a LatestReport when read from the store); sections it lacks are
    # filled from older ones below.
    latest: Report | LatestReport
    host: object | None  # agent.report.HostInventory
    antivirus: object | None  # agent.report.AntivirusStatus
    firewall: object | None  # agent.report.FirewallStatus
    lan_hosts: object | None  # agent.report.LanHosts
    snmp: object | None  # list[agent.report.SnmpDevice]
    last_effective_at: dt.datetime | None = None  # the same on the collector's clock
    patches: object | None = None  # agent.report.PatchStatus


class AgentStates(list[AgentState]):
    """What ``agent_states()`` answers: the agents that could be read, and how many stored
    rows could not (each logged as ``store.bad_row``). One bad row must not hide the rest.
    ``skipped_by`` holds the same count per (site, agent id): a refresh that re-reads only
    some agents replaces just their share."""

    skipped: int = 0

    def __init__(self, states: Iterable[AgentState] = ()) -> None:
        super().__init__(states)
        self.skipped_by: dict[tuple[str, str], int] = {}

    def skip(self, site: Any, agent_id: Any) -> None:
        self.skipped += 1
        key = (str(site), str(agent_id))
        self.skipped_by[key] = self.skipped_by.get(key, 0) + 1


DecodedReports = dict[tuple[str, str], tuple[Any, LatestReport]]
"""Per (site, agent id): the id of its newest report and that report decoded."""


def assemble_agent_states(
    agents: Iterable[Sequence[Any]],
    sections: Iterable[Sequence[Any]],
    section_types: Mapping[str, Any],
    decoded: DecodedReports | None = None,
) -> AgentStates:
    """Build ``AgentState``s from the rows every backend reads the same way.

    ``agents`` rows are (site, agent_id, role, interval_seconds, first_seen,
    last_observed_at, last_received_at, reports_received, spool_dropped, latest body,
    last_effective_at, latest report id);
    ``sections`` rows are (site, agent_id, section, body); times are Unix seconds, bodies
    JSON text or bytes. A row that does not decode or validate (written by an older
    version, edited by hand, damaged) is logged and skipped: an undecodable section leaves
    its agent without that section, an undecodable agent row leaves the agent out.

    ``decoded`` (kept by the caller between calls) spares decoding a newest report again:
    a stored report never changes (ids are unique, a different body under the same id is
    refused as a conflict), so the report decoded under that id is the same report. It is
    replaced by the agents of this call.
    """
    states = AgentStates()
    previous = dict(decoded) if decoded is not None else {}
    if decoded is not None:
        decoded.clear()
    by_agent: dict[tuple[str, str], dict[str, Any]] = {}
    for site, agent_id, name, body in sections:
        kind = section_types.get(name)
        if kind is None:
            continue
        try:
            value = msgspec.json.decode(body, type=kind)
        except (msgspec.DecodeError, ValueError, TypeError) as exc:
            states.skip(site, agent_id)
            _bad_row("agent_sections", site, agent_id, exc, section=name)
            continue
        by_agent.setdefault((site, agent_id), {})[name] = value
    for row in agents:
        (
            site,
            agent_id,
            role,
            interval,
            first,
            observed,
            received,
            count,
            dropped,
            body,
            effective,
            report_id,
        ) = row
        try:
            parts = by_agent.get((site, agent_id), {})
            known = previous.get((site, agent_id))
            if known is not None and known[0] == report_id:
                latest = known[1]
            else:
                latest = decode_latest(body)
            state = AgentState(
                site=str(site),
                agent_id=str(agent_id),
                role=str(role),
                interval_seconds=_finite_positive(interval),
                first_seen=from_unix(first),
                last_observed_at=from_unix(observed),
                last_received_at=from_unix(received),
                reports_received=int(count),
                spool_dropped=int(dropped),
                latest=latest,
                host=parts.get("host"),
                antivirus=parts.get("antivirus"),
                firewall=parts.get("firewall"),
                lan_hosts=parts.get("lan_hosts"),
                snmp=parts.get("snmp"),
                patches=parts.get("patches"),
                last_effective_at=from_unix(effective),
            )
        except (msgspec.DecodeError, ValueError, TypeError, OverflowError, OSError) as exc:
            states.skip(site, agent_id)
            _bad_row("agents", site, agent_id, exc)
            continue
        if decoded is not None:
            decoded[(site, agent_id)] = (report_id, latest)
        states.append(state)
    return states


def _finite_positive(value: Any) -> float:
    number = float(value)
    if not (math.isfinite(number) and number > 0):
        raise ValueError(f"interval_seconds must be a positive number, got {value!r}")
    return number


def _bad_row(table: str, site: Any, agent_id: Any, exc: Exception, **extra: str) -> None:
    event(
        _log,
        logging.WARNING,
        "store.bad_row",
        table=table,
        site=str(site)[:200],
        agent_id=str(agent_id)[:200],
        error=f"{type(exc).__name__}: {str(exc)[:300]}",
        **extra,
    )


WindowRow = tuple[str, str, str, int, int, int]
"""(site, agent_id, network, checks, up_checks, buckets): one agent's sums over buckets."""
ReceivedRow = tuple[str, str, int, int]
"""(site, agent_id, reports, buckets): one agent's report count over buckets."""


@dataclass(frozen=True, slots=True)
class RefreshReads:
    """What one snapshot refresh reads (``Store.refresh_reads``), in ONE read transaction.

    ``full``: every agent was read (the first refresh, or the window moved in a way the
    kept sums cannot follow); otherwise only the agents written since the previous call's
    ``cursor``. Per agent read (``keys``, its states in ``agents``, rows that did not
    decode in ``agents.skipped_by``): its window sums and received count from ``start``
    on (``windows``, ``received``; buckets counts included so an emptied sum is told from
    a zero one). ``left_windows`` / ``left_received``: every agent's sums over the buckets
    that left the window since the previous call (``[previous start, start)``), which
    the caller subtracts from the agents it did not re-read. ``throughput`` and
    ``use_days``: complete for the sites of the agents read (for every site when
    ``full``; ``use_days`` for every site too when ``all_days`` was asked).
    """

    cursor: Any
    start: int
    full: bool
    keys: list[tuple[str, str]]
    agents: AgentStates
    windows: list[WindowRow]
    received: list[ReceivedRow]
    left_windows: list[WindowRow]
    left_received: list[ReceivedRow]
    throughput: list[ThroughputRecord]
    use_days: list[NetworkUseDay]


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
class ThroughputRecord:
    """One stored throughput test of a site (skipped tests included, marked)."""

    site: str
    network: NetworkClass
    target: str
    effective_at: float
    up: bool
    skipped: bool
    bytes_per_second: float | None
    error: str | None


@dataclass(frozen=True, slots=True)
class NetworkUseDay:
    """One day of one site's use of one network class (its agents summed)."""

    day: dt.date
    site: str
    network: NetworkClass
    in_bytes: int
    out_bytes: int
    counted_polls: int  # SNMP polls of the class's uplink with known bytes
    unknown_polls: int  # polls whose bytes could not be known (reboot, reset, ...)
    app_checks_up: int  # successful http/dns checks over the class

    @property
    def has_counters(self) -> bool:
        """Whether an uplink of this class was polled that day (known or not)."""
        return self.counted_polls + self.unknown_polls > 0


@dataclass(frozen=True, slots=True)
class DailyHost:
    """One day of one agent: reports received and its last antivirus state that day."""

    day: dt.date
    site: str
    agent_id: str
    hostname: str | None
    reports: int
    antivirus_state: str | None


@dataclass(frozen=True, slots=True)
class NewDeclaration:
    """One fact a unit declares for a period (``value`` is canonical JSON, see
    ``collector.declarations``); the store adds the revision and the time."""

    unit: str
    period: str
    period_start: float  # unix seconds
    period_end: float
    key: str
    value: str
    declared_by: str
    source: str  # where it came from, e.g. 'form.xlsx: sheet "Sở TTTT", row 7'
    attachment_name: str | None = None
    attachment_sha256: str | None = None


@dataclass(frozen=True, slots=True)
class StoredDeclaration:
    """A stored revision of one declaration; the highest revision is the one in force."""

    unit: str
    period: str
    period_start: float
    period_end: float
    key: str
    revision: int
    value: str
    declared_by: str
    declared_at: dt.datetime
    source: str
    attachment_name: str | None
    attachment_sha256: str | None


def stored_declaration(row: Sequence[Any]) -> StoredDeclaration:
    """A ``declarations`` row in ``DECLARATION_COLUMNS`` order."""
    unit, period, key, revision, start, end, value, by, at, source, name, sha = row
    return StoredDeclaration(
        unit=str(unit),
        period=str(period),
        period_start=float(start),
        period_end=float(end),
        key=str(key),
        revision=int(revision),
        value=str(value),
        declared_by=str(by),
        declared_at=from_unix(at),
        source=str(source),
        attachment_name=name,
        attachment_sha256=sha,
    )


DECLARATION_COLUMNS = (
    "unit, period, fact, revision, period_start, period_end, value, declared_by,"
    " declared_at, source, attachment_name, attachment_sha256"
)


def new_revisions(
    new: Sequence[NewDeclaration],
    stored: Iterable[Sequence[Any]],
    declared_at: float,
) -> list[tuple[Any, ...]]:
    """The rows to insert for ``new`` given the stored ``(unit, period, fact, revision,
    value, attachment_sha256)`` rows: only what differs from the revision in force, each
    as the next revision. Both backends decide here, so re-importing a form is a no-op
    on either."""
    newest: dict[tuple[str, str, str], tuple[int, str, str | None]] = {}
    for unit, period, key, revision, value, sha in stored:
        held = newest.get((unit, period, key))
        if held is None or int(revision) > held[0]:
            newest[(unit, period, key)] = (int(revision), str(value), sha)
    rows: list[tuple[Any, ...]] = []
    for d in new:
        held = newest.get((d.unit, d.period, d.key))
        if held is not None and (held[1], held[2]) == (d.value, d.attachment_sha256):
            continue
        revision = 1 if held is None else held[0] + 1
        newest[(d.unit, d.period, d.key)] = (revision, d.value, d.attachment_sha256)
        rows.append(
            (
                d.unit,
                d.period,
                d.key,
                revision,
                d.period_start,
                d.period_end,
                d.value,
                d.declared_by,
                declared_at,
                d.source,
                d.attachment_name,
                d.attachment_sha256,
            )
        )
    return rows


class Store(Protocol):
    """Durable storage of reports, tokens, latest state and roll-ups.

    Window queries (``network_windows``, ``received_counts``) are answered from buckets
    (hourly unless ``window.bucket`` says otherwise): the bucket that contains ``since`` is
    counted whole, so a window may reach up to one bucket further back than asked. That
    keeps a scrape cheap on a year of history.
    """

    # Called after each durable write with (seconds, reports written): store latency metric.
    on_commit: Callable[[float, int], None] | None
    faults: StoreFaults  # run-time read/write failures (hatang_store_*, /healthz)

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def healthy(self) -> bool: ...
    async def health(self) -> str | None:
        """None while the store reads and writes; otherwise the reason (for /healthz)."""
        ...

    async def ingest(
        self, site: str, reports: Sequence[tuple[Report, bytes]], clock_offset: float = 0.0
    ) -> IngestResult:
        """Store a batch atomically (``bytes`` is the report's canonical JSON); return
        only after it is durable. Each report id is stored once. ``clock_offset``: the
        sending agent's clock error in seconds (collector − agent), see
        ``collector.store.ingest.triage``."""
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

    async def add_enroll_codes(self, codes: Sequence[EnrollCode]) -> None:
        """Store new enrollment codes in one transaction (a taken code_id is a StoreError)."""
        ...

    async def list_enroll_codes(self) -> list[EnrollCode]: ...
    async def get_enroll_code(self, code_id: str) -> EnrollCode | None: ...
    async def revoke_enroll_code(self, code_id: str) -> bool: ...
    async def enroll_failed(self, code_id: str, max_failures: int) -> None:
        """Count a wrong guess at ``code_id``; lock the code at ``max_failures``."""
        ...

    async def redeem_enroll_code(
        self, code_id: str, agent: NewAgent, now: float
    ) -> tuple[RedeemOutcome, str]:
        """Atomically use one use of the code and record the agent and its credential;
        return the outcome and the agent id given (unique across the province)."""
        ...

    async def enrolled_agents(self) -> list[EnrolledAgent]: ...
    async def revoke_agent(self, agent_id: str) -> bool:
        """Revoke an enrolled agent's credential (effective on its next request)."""
        ...

    async def record_config_status(
        self,
        site: str,
        agent_id: str,
        version: str | None,
        error: str | None,
        rejected: str | None,
    ) -> None:
        """Record which central config version an agent runs and what it last rejected."""
        ...

    async def config_error_counts(self) -> dict[str, int]:
        """Per site: agents whose latest central configuration status is an error."""
        ...

    async def agent_states(self) -> list[AgentState]: ...
    async def refresh_reads(
        self,
        after: Any | None,
        since: dt.datetime,
        previous_start: int | None,
        throughput_since: dt.datetime,
        days: Sequence[dt.date],
        all_days: bool,
        decoded: DecodedReports,
    ) -> RefreshReads:
        """What changed since ``after`` (a previous answer's cursor; None: everything),
        see ``RefreshReads``; ``decoded`` (the caller's, kept between calls) spares
        decoding a newest report again and is updated for the agents read."""
        ...

    async def network_windows(self, since: dt.datetime) -> list[NetworkWindow]: ...
    async def agent_network_windows(self, since: dt.datetime) -> list[AgentNetworkWindow]: ...
    async def received_counts(self, since: dt.datetime) -> dict[tuple[str, str], int]:
        """Reports per (site, agent_id) observed since ``since`` (late ones included)."""
        ...

    async def daily_networks(self, start: dt.date, end: dt.date) -> list[DailyNetwork]:
        """Daily network roll-ups with ``start <= day < end``."""
        ...

    async def throughput_results(self, since: dt.datetime) -> list[ThroughputRecord]:
        """Throughput tests filed at or after ``since``, oldest first per site and class."""
        ...

    async def network_use_days(self, start: dt.date, end: dt.date) -> list[NetworkUseDay]:
        """Daily use per site and class with ``start <= day < end``."""
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
    async def chain_heads(self) -> dict[str, tuple[int, str]]:
        """Each site's newest hash-chain (seq, hash), see ``collector.store.chain``."""
        ...

    async def protected_until(
        self, agents: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], float]:
        """For (site, agent_id) pairs: the end of the last day (store roll-up days) whose
        last antivirus state was ``protected``, unix seconds; agents never protected are
        left out. Day precision: the unprotected stretch is known to the day."""
        ...

    async def declare(
        self, declarations: Sequence[NewDeclaration], files: Mapping[str, bytes]
    ) -> int:
        """Store declarations and their attached files (by SHA-256) in one transaction;
        return how many new revisions were stored (0 when nothing changed)."""
        ...

    async def declarations(
        self, since: float, until: float, units: Collection[str] | None = None
    ) -> list[StoredDeclaration]:
        """Every revision of the declarations whose period overlaps ``(since, until)``
        (unix seconds), by unit, period, key and revision."""
        ...

    async def declaration_file(self, sha256: str) -> bytes | None:
        """An attached file by its SHA-256 (hex), or None."""
        ...

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
    late_rule: Any = None,
    start_check_timeout: float | None = None,
) -> Store:
    """Return the (not yet opened) store for a ``store.url``.

    ``late_rule`` (a ``collector.late.LateRule``, when remote write is configured) makes
    ingest queue late samples for Prometheus in the same transaction. ``start_check_timeout``:
    run SQLite's quick_check on open, for at most that long (None: no check).
    """
    if url.startswith("sqlite:"):
        from collector.config import sqlite_path
        from collector.store.sqlite import SQLiteStore

        store: Any = SQLiteStore(
            sqlite_path(url),
            busy_timeout=busy_timeout,
            max_future=max_future,
            hourly_retention=hourly_retention,
            bucket_seconds=bucket_seconds,
            start_check_timeout=start_check_timeout,
        )
        store.late_rule = late_rule
        return store  # type: ignore[no-any-return]
    if url.startswith(POSTGRES_SCHEMES):
        try:
            from collector.store.postgres import PostgresStore
        except ImportError as exc:  # asyncpg is the optional ``postgres`` extra
            raise StoreError(
                f"the PostgreSQL store needs asyncpg ({exc}); "
                "install it with: pip install 'hatang[postgres]'"
            ) from exc
        pg: Any = PostgresStore(
            url,
            busy_timeout=busy_timeout,
            max_future=max_future,
            hourly_retention=hourly_retention,
            bucket_seconds=bucket_seconds,
        )
        pg.late_rule = late_rule
        return pg  # type: ignore[no-any-return]
    raise StoreError(f"unsupported store url {url!r}")
