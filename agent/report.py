"""The wire format between hatang-agent and hatang-collector: the one definition.

The agent builds these structs and encodes them; the collector decodes request bodies
into the same structs, so the two cannot drift apart. ``report.schema.json`` beside
this file is generated from them (``python -m agent.report``) and a test keeps it equal.

Compatibility rule: within one ``schema_version`` fields are only ever added, always
optional; decoders ignore fields they do not know, so a newer agent can report to an
older collector. Every string and list has a bound so that hostile input stays small.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Final, Literal, get_args

import msgspec

SCHEMA_VERSION: Final = 1
SCHEMA_PATH: Final = Path(__file__).with_name("report.schema.json")

# Each closed set of names is written once, as a Literal; the tuples that code iterates
# over are derived from it (get_args keeps the order), so the two cannot drift apart.
NetworkClass = Literal["lan", "wan", "dedicated", "internet"]
NETWORK_CLASSES: Final[tuple[NetworkClass, ...]] = get_args(NetworkClass)
ProbeKind = Literal["icmp", "tcp", "dns", "http"]  # agent.probes.PROBES has one entry each
PROBE_KINDS: Final[tuple[ProbeKind, ...]] = get_args(ProbeKind)
Role = Literal["host", "site-probe"]
Rule = Literal["any", "all"]  # any: one target answering is enough; all: every target

ErrorReason = Literal[
    "timeout",  # no answer within the target's timeout
    "refused",  # TCP RST / ICMP port unreachable
    "unreachable",  # no route, host or network unreachable, link down
    "dns_error",  # name did not resolve, or the DNS answer was an error rcode
    "tls_error",  # handshake or certificate verification failed
    "http_status",  # HTTP answered with a status outside the expected set
    "protocol_error",  # the peer answered something that is not the protocol
    "permission_denied",  # the OS refused the socket (e.g. raw ICMP without privilege)
    "network_error",  # any other socket-level failure
    "internal_error",  # a bug in hatang; details are in the agent log
]
ERROR_REASONS: Final[tuple[ErrorReason, ...]] = get_args(ErrorReason)

AvState = Literal["protected", "outdated", "disabled", "missing", "unknown"]
AV_STATES: Final[tuple[AvState, ...]] = get_args(AvState)
HostKind = Literal["computer", "printer", "network", "phone", "unknown"]
HostSource = Literal["arp", "snmp", "agent"]  # in order of trust when sources disagree
HOST_SOURCES: Final[tuple[HostSource, ...]] = get_args(HostSource)
AddressFamily = Literal["ipv4", "ipv6"]  # the IP version a probe used (ProbeResult.family)
ADDRESS_FAMILIES: Final[tuple[AddressFamily, ...]] = get_args(AddressFamily)
PatchSource = Literal[
    "windows-update",  # Windows Update Agent API history (Microsoft.Update.Session)
    "hotfix",  # Win32_QuickFixEngineering (Get-HotFix): Server 2016 and when the API fails
    "apt",  # dpkg/apt: apt-get -s upgrade, /var/log/dpkg.log
    "dnf",  # dnf/yum and rpm: dnf check-update, rpm -qa --last
    "unsupported",  # no package manager hatang knows on this system
]
PATCH_SOURCES: Final[tuple[PatchSource, ...]] = get_args(PatchSource)

# Bounded building blocks. Bounds are generous for real data and small for abuse.
# Id patterns are anchored with \A…\Z: msgspec matches with re.search, where ``$`` also
# matches before a final newline. JSON Schema patterns are ECMA-262, which has no \A or
# \Z and whose ``$`` is the end: ``schema_components`` writes them that way.
SiteId = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=200,
        pattern=r"\A[a-z0-9][a-z0-9-]*(/[a-z0-9][a-z0-9-]*)*\Z",
        description="Unit id from the org file, e.g. bac-kan/cho-don/bang-lung",
    ),
]
Id = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"\A[A-Za-z0-9._:-]+\Z")]
Name = Annotated[str, msgspec.Meta(max_length=256)]
Text = Annotated[str, msgspec.Meta(max_length=1024)]
Address = Annotated[str, msgspec.Meta(max_length=512)]
Ip = Annotated[str, msgspec.Meta(max_length=64)]
Mac = Annotated[str, msgspec.Meta(max_length=32)]
Seconds = Annotated[float, msgspec.Meta(ge=0)]
Ratio = Annotated[float, msgspec.Meta(ge=0, le=1)]
Count = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]  # fits a signed 64-bit SQL integer
# The accepted range of the times the collector files reports by (``observed_at``) and
# measures clocks with (``sent_at``), inclusive start, exclusive end; the collector
# answers 422 naming the field outside it. It starts at the Unix epoch because a PC whose
# clock battery died starts there (the clock-skew rule then moves its observations onto
# the collector's clock); beyond it only a broken or hostile sender goes, and year 1 or
# 9999 with a UTC offset is beyond what date arithmetic can hold. Other times (boot time,
# signature dates, LAN host first/last seen) are facts the collector keeps and shows but
# never computes with, so they are kept as sent: Windows reports an unset signature
# date as 1601-01-01, and refusing it would refuse every report of that PC.
TIMESTAMP_MIN: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
TIMESTAMP_MAX: Final = dt.datetime(2100, 1, 1, tzinfo=dt.UTC)
Timestamp = Annotated[dt.datetime, msgspec.Meta(extra_json_schema={"format": "date-time"})]
FilingTime = Annotated[
    dt.datetime,
    msgspec.Meta(
        extra_json_schema={
            "format": "date-time",
            "description": "accepted from 1970-01-01T00:00:00Z until 2100-01-01T00:00:00Z",
        }
    ),
]


class _Wire(msgspec.Struct, kw_only=True):
    """Base for wire structs: every field is written, so a reader sees ``null``, not absence."""


class _Compact(msgspec.Struct, omit_defaults=True, kw_only=True):
    """Base for structs that come in long lists: defaults are omitted to keep reports small."""


class ProbeResult(_Wire):
    """One probe of one target. Failure is data: ``up=False`` with a reason code."""

    kind: ProbeKind
    target: Address
    up: bool
    rtt_seconds: Seconds | None = None  # icmp: average RTT; tcp: connect; dns: query; http: total
    loss_ratio: Ratio | None = None
    error: ErrorReason | None = None
    detail: Text | None = (
        None  # human-readable English cause, e.g. "connect to 10.0.0.1:443: refused"
    )
    method: Name | None = None  # how it was probed, e.g. "icmp-unprivileged", "tcp-fallback:443"
    duration_seconds: Seconds | None = None  # wall time of the whole check
    # icmp
    sent: Count | None = None
    received: Count | None = None
    rtt_min_seconds: Seconds | None = None
    rtt_max_seconds: Seconds | None = None
    jitter_seconds: Seconds | None = None  # RFC 3550 interarrival jitter estimate
    # dns
    rcode: Name | None = None
    answers: Annotated[list[Text], msgspec.Meta(max_length=32)] | None = None
    # http
    status_code: Annotated[int, msgspec.Meta(ge=100, le=999)] | None = None
    ttfb_seconds: Seconds | None = None
    tls_days_to_expiry: float | None = None
    bytes_read: Count | None = None
    throughput_bytes_per_second: Seconds | None = None
    # The IP version the check went over, or was restricted to by the target's ``family``
    # option when it failed before a packet (e.g. no AAAA record); None: neither known.
    family: AddressFamily | None = None


class NetworkStatus(_Wire):
    """One network class: up when its targets answer according to ``rule``."""

    configured: bool = False
    up: bool | None = None  # None when not configured: never "down" for lack of targets
    rule: Rule | None = None
    targets: Annotated[list[ProbeResult], msgspec.Meta(max_length=64)] = []
    default_gateway: bool = False  # lan only: targets are the detected default gateway(s)


class Networks(_Wire):
    """The four network classes of the DESIGN contract, always all present."""

    lan: NetworkStatus = msgspec.field(default_factory=NetworkStatus)
    wan: NetworkStatus = msgspec.field(default_factory=NetworkStatus)
    dedicated: NetworkStatus = msgspec.field(default_factory=NetworkStatus)
    internet: NetworkStatus = msgspec.field(default_factory=NetworkStatus)

    def get(self, network: NetworkClass) -> NetworkStatus:
        """Return the status of one network class by name."""
        status: NetworkStatus = getattr(self, network)
        return status


class Disk(_Wire):
    mountpoint: Name
    total_bytes: Count
    used_bytes: Count
    fstype: Name | None = None


class Interface(_Wire):
    name: Name
    mac: Mac | None = None
    ipv4: Annotated[list[Ip], msgspec.Meta(max_length=64)] = []
    ipv6: Annotated[list[Ip], msgspec.Meta(max_length=64)] = []
    is_up: bool | None = None
    speed_mbps: Count | None = None


class HostInventory(_Wire):
    """What this computer is: enough to count and identify it, nothing personal."""

    hostname: Name
    os: Name  # platform.system(): "Windows", "Linux"
    os_release: Name | None = None  # "11 Professional", "Server 2025 Standard", "Debian ... 12"
    os_version: Name | None = None
    architecture: Name | None = None
    cpu_count: Count | None = None
    cpu_model: Name | None = None
    memory_bytes: Count | None = None
    disks: Annotated[list[Disk], msgspec.Meta(max_length=64)] = []
    interfaces: Annotated[list[Interface], msgspec.Meta(max_length=64)] = []
    boot_time: Timestamp | None = None
    agent_version: Name | None = None
    python_version: Name | None = None
    error: Text | None = None  # set when part of the inventory could not be read


class LanHost(_Compact):
    """A host seen on the office LAN, merged by MAC across sources."""

    mac: Mac
    ip: Ip | None = None
    vendor: Name | None = None
    kind: HostKind = "unknown"
    sources: Annotated[list[HostSource], msgspec.Meta(max_length=3)] = []
    hostname: Name | None = None
    agent_id: Id | None = None
    first_seen: Timestamp | None = None
    last_seen: Timestamp | None = None
    kind_reason: Name | None = None  # why this kind: "vendor Brother", "tcp/9100 open", ...
    other_macs: Annotated[list[Mac], msgspec.Meta(max_length=8)] | None = None  # same machine
    open_ports: (
        Annotated[list[Annotated[int, msgspec.Meta(ge=1, le=65535)]], msgspec.Meta(max_length=16)]
        | None
    ) = None


class LanHostCounts(_Wire):
    """Hosts by the source that saw them (a host seen by two sources counts in both)."""

    arp: Count = 0
    snmp: Count = 0
    agent: Count = 0
    total: Count = 0  # distinct MACs after merging
    computers: Count = 0  # distinct hosts classified as computers


class LanHosts(_Wire):
    """Site probe only: the office LAN as discovered by ARP sweep and SNMP."""

    hosts: Annotated[list[LanHost], msgspec.Meta(max_length=4096)] = []
    counts: LanHostCounts = msgspec.field(default_factory=LanHostCounts)
    subnets: Annotated[list[Name], msgspec.Meta(max_length=16)] = []
    error: Text | None = None
    interface: Name | None = None  # the interface swept
    duration_seconds: Seconds | None = None
    truncated: bool = False  # more hosts than the list bound; counts are still complete


class SnmpInterface(_Compact):
    index: Count
    name: Name | None = None
    descr: Name | None = None
    oper_status: Name | None = None  # IF-MIB ifOperStatus as text: up, down, testing, ...
    speed_bps: Count | None = None
    in_octets: Count | None = None
    out_octets: Count | None = None
    in_errors: Count | None = None
    out_errors: Count | None = None
    counter_bits: Literal[32, 64] | None = None  # octet counters wrap at 2**bits
    admin_status: Name | None = None
    alias: Name | None = None  # ifAlias: the description the administrator gave the port
    mac: Mac | None = None


class UplinkUsage(_Wire):
    """Traffic on the router port that carries one network class, since the last poll.

    ``in_bytes``/``out_bytes`` are None when the poll cannot say (the first poll, a
    router reboot, a counter reset, the port missing): never a spike, never negative.
    """

    network: NetworkClass
    in_bytes: Count | None = None
    out_bytes: Count | None = None
    interval_seconds: Seconds | None = None  # since the previous poll of this port
    if_index: Count | None = None
    if_name: Name | None = None
    counter_bits: Literal[32, 64] | None = None
    unknown: Name | None = None  # why the bytes are unknown, e.g. "device restarted"


class SnmpDevice(_Wire):
    """One polled switch or router."""

    address: Address
    up: bool
    sys_name: Name | None = None
    sys_descr: Text | None = None
    sys_uptime_seconds: Seconds | None = None
    interfaces: Annotated[list[SnmpInterface], msgspec.Meta(max_length=1024)] = []
    arp_entries: Count | None = None
    fdb_entries: Count | None = None
    error: Text | None = None
    truncated: bool = False  # a table was cut at the configured bound
    name: Name | None = None  # the label configured for the device
    sys_object_id: Name | None = None  # vendor/model OID, e.g. 1.3.6.1.4.1.9.1.1208
    duration_seconds: Seconds | None = None
    uplinks: Annotated[list[UplinkUsage], msgspec.Meta(max_length=3)] = []


class AntivirusProduct(_Wire):
    """One antivirus product as one source sees it."""

    name: Name
    source: Name  # "securitycenter2", "defender", "service", "process", "clamav", ...
    state: AvState
    vendor: Name | None = None
    enabled: bool | None = None
    up_to_date: bool | None = None
    real_time_protection: bool | None = None
    signature_age_seconds: Seconds | None = None
    signature_version: Name | None = None
    engine_version: Name | None = None
    product_state: Count | None = None  # Windows Security Center productState, raw
    signature_updated_at: Timestamp | None = None  # newest signature build/update time
    running: bool | None = None  # a service or process of the product was seen running
    detail: Text | None = None  # why the state is what it is, e.g. "Security Center: snoozed"
    # Central management (agent/inventory/antivirus/management.yaml): the product's
    # management agent is present and, where the product says when, reached its console
    # within antivirus.max_console_age. None: this product's management is not observable.
    managed: bool | None = None
    management_agent: Name | None = None  # e.g. "Kaspersky Network Agent"
    last_console_contact_at: Timestamp | None = None


class AntivirusStatus(_Wire):
    """The computer's one antivirus state and the per-product facts behind it."""

    state: AvState
    products: Annotated[list[AntivirusProduct], msgspec.Meta(max_length=32)] = []
    max_signature_age_seconds: Seconds | None = None  # the policy applied
    error: Text | None = None
    sources: Annotated[list[Name], msgspec.Meta(max_length=16)] = []  # sources that answered
    warnings: Annotated[list[Text], msgspec.Meta(max_length=16)] = []  # sources that failed
    # Centrally managed: true when some product is managed, false when none is (no product
    # at all included), None when no product's management could be observed.
    managed: bool | None = None
    last_console_contact_at: Timestamp | None = None  # newest contact of a managed product


class PatchStatus(_Wire):
    """Patch currency of this computer: when updates were last installed, what is pending."""

    source: PatchSource
    last_installed_at: Timestamp | None = None  # newest update or package installation
    pending_updates: Count | None = None  # None: not known from this source (Windows)
    pending_security_updates: Count | None = None
    reboot_pending: bool | None = None
    # Windows: the installed updates seen (newest first), e.g. "KB5044281"; bounded.
    recent: Annotated[list[Name], msgspec.Meta(max_length=16)] = []
    error: Text | None = None  # set when part of it could not be read
    warnings: Annotated[list[Text], msgspec.Meta(max_length=16)] = []


class FirewallProfile(_Wire):
    name: Name  # Windows: domain/private/public; Linux: nftables, iptables, ufw, firewalld
    enabled: bool | None = None
    rules: Count | None = None  # Linux: filtering rules found
    detail: Text | None = None  # e.g. "3 rules in 2 filter chains", "Status: inactive"
    active: bool | None = None  # Windows: a connected network uses this profile now


class FirewallStatus(_Wire):
    enabled: bool | None = None
    profiles: Annotated[list[FirewallProfile], msgspec.Meta(max_length=16)] = []
    source: Name | None = None
    error: Text | None = None
    warnings: Annotated[list[Text], msgspec.Meta(max_length=16)] = []  # tools that failed


class ThroughputResult(_Wire):
    """One bounded download over one network class: the line speed, or why there is none.

    A failed test has ``up=False`` and a reason, never a zero rate; a skipped one
    (another test of the site was running) is neither a measurement nor a failure.
    """

    network: NetworkClass
    target: Address
    up: bool
    observed_at: Timestamp
    bytes_per_second: Seconds | None = None  # body bytes ÷ time from first to last byte
    bytes_read: Count | None = None  # data used by this test (body bytes)
    duration_seconds: Seconds | None = None  # from connect to the end of the body
    ended_by: Literal["complete", "max_bytes", "max_duration"] | None = None
    error: ErrorReason | None = None
    detail: Text | None = None
    skipped: bool = False


class Report(_Wire, kw_only=True):
    """One check cycle of one agent, as stored in the spool and sent to the collector."""

    schema_version: Annotated[int, msgspec.Meta(ge=1)] = SCHEMA_VERSION
    id: Id  # unique per report (UUID4); the collector stores each id once
    agent_id: Id  # stable per installation
    site: SiteId
    role: Role
    seq: Count  # per agent, +1 per report, survives restarts
    observed_at: FilingTime  # when the checks started (UTC)
    interval_seconds: Annotated[float, msgspec.Meta(gt=0)]
    agent_version: Name
    duration_seconds: Seconds | None = None
    networks: Networks = msgspec.field(default_factory=Networks)
    host: HostInventory | None = None
    lan_hosts: LanHosts | None = None
    snmp: Annotated[list[SnmpDevice], msgspec.Meta(max_length=16)] | None = None
    antivirus: AntivirusStatus | None = None
    firewall: FirewallStatus | None = None
    throughput: Annotated[list[ThroughputResult], msgspec.Meta(max_length=8)] | None = None
    patches: PatchStatus | None = None
    # Reports this agent lost (cumulative): dropped when the spool was full, never queued
    # because its disk was full, or damaged on disk; their seq numbers are gaps.
    spool_dropped: Count = 0
    # Reports the collector refused for good (4xx, or a 5xx only they cause), cumulative;
    # they are kept in the spool's dead_letter table.
    spool_rejected: Count = 0
    spool_resets: Count = 0  # times a damaged spool was moved aside and a fresh one started


class Batch(msgspec.Struct, kw_only=True):
    """The body of ``POST /api/v1/reports``."""

    reports: Annotated[list[Report], msgspec.Meta(min_length=1, max_length=1000)]
    # The agent's clock when it sent the request: against the collector's clock it gives
    # the agent's clock offset, which tells a clock that is behind from a late replay.
    sent_at: FilingTime | None = None


def batch_body(reports: list[bytes], sent_at: dt.datetime) -> bytes:
    """Frame already-encoded reports (spool rows) as a ``Batch`` without decoding them."""
    return b'{"reports":[' + b",".join(reports) + b'],"sent_at":' + _encoder.encode(sent_at) + b"}"


def unix_seconds(value: dt.datetime) -> float:
    """Unix seconds of a report time (a time without offset is UTC); total for any value."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.timestamp()


_LOW, _HIGH = unix_seconds(TIMESTAMP_MIN), unix_seconds(TIMESTAMP_MAX)


def times_out_of_range(batch: Batch) -> Iterator[tuple[str, dt.datetime]]:
    """(JSON path, value) of each ``observed_at`` and ``sent_at`` of the batch outside
    TIMESTAMP_MIN .. TIMESTAMP_MAX."""
    if batch.sent_at is not None and not _LOW <= unix_seconds(batch.sent_at) < _HIGH:
        yield "$.sent_at", batch.sent_at
    for i, report in enumerate(batch.reports):
        if not _LOW <= unix_seconds(report.observed_at) < _HIGH:
            yield f"$.reports[{i}].observed_at", report.observed_at


def new_report_id() -> str:
    """Return a fresh report id."""
    return str(uuid.uuid4())


def utcnow() -> dt.datetime:
    """Return the current time, timezone-aware UTC (the only kind reports carry)."""
    return dt.datetime.now(dt.UTC)


_encoder = msgspec.json.Encoder()


def encode(obj: msgspec.Struct) -> bytes:
    """Encode a report or batch as compact JSON."""
    return _encoder.encode(obj)


def decode_batch(body: bytes) -> Batch:
    """Parse and validate a request body; raises ``msgspec.ValidationError`` naming the path."""
    return msgspec.json.decode(body, type=Batch)


def decode_report(body: bytes) -> Report:
    """Parse and validate one report (spool rows, evidence)."""
    return msgspec.json.decode(body, type=Report)


def _ecma_patterns(node: Any) -> Any:
    r"""The schema with Python's ``\A…\Z`` anchors written as ECMA-262's ``^…$``."""
    if isinstance(node, dict):
        out = {k: _ecma_patterns(v) for k, v in node.items()}
        pattern = out.get("pattern")
        if isinstance(pattern, str) and pattern.startswith("\\A") and pattern.endswith("\\Z"):
            out["pattern"] = f"^{pattern[2:-2]}$"
        return out
    if isinstance(node, list):
        return [_ecma_patterns(v) for v in node]
    return node


def schema_components(ref_template: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(reference, components) of the batch schema, as msgspec's ``schema_components``
    gives them but with JSON Schema's spelling of the id patterns."""
    (ref,), components = msgspec.json.schema_components((Batch,), ref_template=ref_template)
    return _ecma_patterns(ref), _ecma_patterns(components)


def json_schema() -> dict[str, object]:
    """Return the JSON Schema of a batch, generated from the structs above."""
    schema: dict[str, object] = _ecma_patterns(msgspec.json.schema(Batch))
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = f"hatang report batch, schema_version {SCHEMA_VERSION}"
    return schema


def render_schema() -> str:
    """Return the schema as the text stored in ``report.schema.json``."""
    return json.dumps(json_schema(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    SCHEMA_PATH.write_text(render_schema(), encoding="utf-8")
    sys.stdout.write(f"wrote {SCHEMA_PATH}\n")
