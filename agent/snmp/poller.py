"""Poll office switches and routers over SNMP v2c/v3 with pysnmp 7's asyncio API.

Tables are walked column-wise with GETBULK, several columns per request (like
net-snmp's ``snmptable``), with numeric OIDs and ``lookupMib=False`` so no MIB files
are compiled on the office PC. Every walk is bounded by ``max_rows`` and the whole
poll by ``max_duration``; whatever the device does (silence, wrong credentials,
errors, endless tables) ends up as text in ``SnmpDevice.error``, never as an
exception out of ``poll_devices``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import socket
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from agent.config import ConfigError, SnmpConfig, SnmpDeviceConfig
from agent.log import event, log_exception_limited
from agent.probes.base import ProbeFailed, resolve
from agent.report import SnmpDevice, SnmpInterface
from agent.snmp import oids
from agent.snmp.usage import UsageTracker

log = logging.getLogger(__name__)

Index = tuple[int, ...]
_MAX_REPETITIONS = 25  # rows per GETBULK; small enough to stay under 1500-byte frames
_MAX_INTERFACES = 1024  # the report's bound on SnmpDevice.interfaces


class SnmpFailure(Exception):
    """A device-level failure whose message goes into the report as is."""


@dataclass
class Table:
    """Walked columns: ``columns[column_oid][index] = value``."""

    columns: dict[str, dict[Index, Any]] = field(default_factory=dict)
    truncated: bool = False

    def column(self, oid: str) -> dict[Index, Any]:
        """Return one column (empty when the device has none)."""
        return self.columns.get(oid, {})

    def indexes(self) -> list[Index]:
        """Every row index present in any column, sorted."""
        return sorted({i for col in self.columns.values() for i in col})


@dataclass(frozen=True, slots=True)
class Neighbours:
    """What a device knows of the LAN: ARP entries (ip, mac) and learned bridge MACs."""

    arp: list[tuple[str, str]]
    fdb: list[str]
    truncated: bool = False


def _parse_oid(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split("."))


def _label(device: SnmpDeviceConfig) -> str:
    return f"{device.address}:{device.port}"


def _auth_protocols() -> tuple[dict[str, Any], dict[str, Any]]:
    from pysnmp.hlapi.v3arch import asyncio as hl

    auth = {
        "md5": hl.usmHMACMD5AuthProtocol,
        "sha": hl.usmHMACSHAAuthProtocol,
        "sha224": hl.usmHMAC128SHA224AuthProtocol,
        "sha256": hl.usmHMAC192SHA256AuthProtocol,
        "sha384": hl.usmHMAC256SHA384AuthProtocol,
        "sha512": hl.usmHMAC384SHA512AuthProtocol,
    }
    priv = {
        "des": hl.usmDESPrivProtocol,
        "3des": hl.usm3DESEDEPrivProtocol,
        "aes": hl.usmAesCfb128Protocol,
        "aes192": hl.usmAesCfb192Protocol,
        "aes256": hl.usmAesCfb256Protocol,
    }
    return auth, priv


def _credentials(device: SnmpDeviceConfig) -> Any:
    """Build pysnmp auth data; key files are read now so rotated secrets apply."""
    from pysnmp.hlapi.v3arch.asyncio import CommunityData, UsmUserData

    try:
        if device.version == "2c":
            return CommunityData(device.read_community(), mpModel=1)  # noqa: S508 - v2c is what office switches speak
        assert device.v3 is not None
        auth_key, priv_key = device.v3.read_keys()
    except ConfigError as exc:
        raise SnmpFailure(f"credentials: {exc.path}: {exc.message}") from None
    auth_protocols, priv_protocols = _auth_protocols()
    v3 = device.v3
    kwargs: dict[str, Any] = {}
    if v3.auth_protocol is not None:
        kwargs["authKey"] = auth_key
        kwargs["authProtocol"] = auth_protocols[v3.auth_protocol]
    if v3.priv_protocol is not None:
        kwargs["privKey"] = priv_key
        kwargs["privProtocol"] = priv_protocols[v3.priv_protocol]
    return UsmUserData(v3.user, **kwargs)  # noqa: S509 - the security level is the operator's choice


def _describe_indication(indication: Any, device: SnmpDeviceConfig) -> str:
    """Turn a pysnmp error indication into a message that says what to check."""
    from pysnmp.proto import errind

    where = _label(device)
    user = device.v3.user if device.v3 else ""
    tries = device.retries + 1
    if isinstance(indication, errind.RequestTimedOut):
        hint = (
            "check the address, that UDP port is reachable, and the community"
            if device.version == "2c"
            else "check the address and that UDP port is reachable"
            + (
                ", or a wrong privacy key: agents drop what they cannot decrypt"
                if device.v3 is not None and device.v3.priv_protocol is not None
                else ""
            )
        )
        return (
            f"timeout: no SNMP answer from {where} after {tries} "
            f"{'try' if tries == 1 else 'tries'} of {device.timeout:g}s ({hint})"
        )
    if isinstance(indication, errind.UnknownUserName):
        return f"SNMP authentication failed: unknown user {user!r} on {where}"
    if isinstance(indication, errind.WrongDigest | errind.AuthenticationFailure):
        return (
            f"SNMP authentication failed: wrong authentication key or protocol "
            f"for user {user!r} on {where}"
        )
    if isinstance(indication, errind.DecryptionError):
        return (
            f"SNMP authentication failed: wrong privacy key or protocol "
            f"for user {user!r} on {where}"
        )
    if isinstance(indication, errind.UnsupportedSecurityLevel):
        return (
            f"SNMP authentication failed: security level not allowed for user {user!r} "
            f"on {where} (check auth_protocol/priv_protocol)"
        )
    if isinstance(indication, errind.UnknownCommunityName):
        return f"SNMP authentication failed: wrong community for {where}"
    return f"SNMP error from {where}: {indication}"


class Session:
    """One device's engine, credentials and transport; requests raise SnmpFailure."""

    def __init__(self, device: SnmpDeviceConfig, engine: Any, auth: Any, target: Any) -> None:
        from pysnmp.hlapi.v3arch.asyncio import ContextData

        self.device = device
        self.engine = engine
        self.auth = auth
        self.target = target
        self.context = ContextData()

    def _check(self, indication: Any, status: Any, index: Any, var_binds: Sequence[Any]) -> None:
        if indication:
            raise SnmpFailure(_describe_indication(indication, self.device))
        if status:
            what = ""
            if index and int(index) <= len(var_binds):
                what = f" at {var_binds[int(index) - 1][0]}"
            raise SnmpFailure(
                f"SNMP error from {_label(self.device)}: {status.prettyPrint()}{what}"
            )

    async def get(self, oid_list: Sequence[str]) -> dict[str, Any]:
        """GET scalars; absent objects (noSuchObject/noSuchInstance) are left out."""
        from pysnmp.hlapi.v3arch.asyncio import ObjectIdentity, ObjectType, get_cmd
        from pysnmp.proto.rfc1905 import EndOfMibView, NoSuchInstance, NoSuchObject

        indication, status, index, var_binds = await get_cmd(
            self.engine,
            self.auth,
            self.target,
            self.context,
            *(ObjectType(ObjectIdentity(o)) for o in oid_list),
            lookupMib=False,
        )
        self._check(indication, status, index, var_binds)
        result: dict[str, Any] = {}
        for name, value in var_binds:
            if isinstance(value, NoSuchObject | NoSuchInstance | EndOfMibView):
                continue
            result[str(name)] = value
        return result

    async def walk(self, columns: Sequence[str], max_rows: int | None = None) -> Table:
        """Walk table columns together with GETBULK, at most ``max_rows`` rows each."""
        from pysnmp.hlapi.v3arch.asyncio import ObjectIdentity, ObjectType, bulk_cmd
        from pysnmp.proto.rfc1905 import EndOfMibView, NoSuchInstance, NoSuchObject

        limit = max_rows if max_rows is not None else self.device.max_rows
        table = Table({c: {} for c in columns})
        prefixes = {c: _parse_oid(c) for c in columns}
        last = dict(prefixes)
        active = list(columns)
        while active:
            repetitions = max(1, min(_MAX_REPETITIONS, limit))
            indication, status, index, var_binds = await bulk_cmd(
                self.engine,
                self.auth,
                self.target,
                self.context,
                0,
                repetitions,
                *(ObjectType(ObjectIdentity(".".join(map(str, last[c])))) for c in active),
                lookupMib=False,
            )
            self._check(indication, status, index, var_binds)
            if not var_binds:
                break
            finished: set[str] = set()
            for n, (name, value) in enumerate(var_binds):
                column = active[n % len(active)]
                if column in finished:
                    continue
                oid = tuple(name.asTuple())
                prefix = prefixes[column]
                if (
                    isinstance(value, EndOfMibView | NoSuchObject | NoSuchInstance)
                    or oid[: len(prefix)] != prefix
                ):
                    finished.add(column)
                    continue
                if oid <= last[column]:
                    raise SnmpFailure(
                        f"SNMP agent {_label(self.device)} returned a non-increasing OID "
                        f"({'.'.join(map(str, oid))}); walk stopped"
                    )
                rows = table.columns[column]
                if len(rows) >= limit:
                    table.truncated = True
                    finished.add(column)
                    continue
                rows[oid[len(prefix) :]] = value
                last[column] = oid
            # A short response without end markers still advances every column.
            active = [c for c in active if c not in finished]
        return table


@functools.cache
def _mib_view() -> Any:
    from pysnmp.smi import builder, view

    return view.MibViewController(builder.MibBuilder())


@contextlib.asynccontextmanager
async def open_session(device: SnmpDeviceConfig) -> Any:
    """Yield a Session for one device; its UDP socket is closed afterwards."""
    from pysnmp.hlapi.v3arch.asyncio import SnmpEngine, Udp6TransportTarget, UdpTransportTarget

    auth = _credentials(device)
    # Resolved in the probes' bounded resolve lane (a hung resolver cannot take
    # threads from other checks); pysnmp then only sees an address.
    try:
        (family, sockaddr), *_ = await resolve(device.address, device.port, kind=socket.SOCK_DGRAM)
    except ProbeFailed as exc:
        raise SnmpFailure(f"cannot resolve {device.address}: {exc.detail}") from None
    transport = Udp6TransportTarget if family == socket.AF_INET6 else UdpTransportTarget
    try:
        target = await transport.create(
            (sockaddr[0], device.port), timeout=device.timeout, retries=device.retries
        )
    except Exception as exc:  # a PySnmpError for an address the OS cannot use
        raise SnmpFailure(f"cannot open a socket to {device.address}: {exc}") from None
    engine = SnmpEngine()
    # pysnmp builds a MIB view per engine on first use (about 0.3 s of CPU each);
    # numeric OIDs need no more than the base MIBs, so all engines share one.
    engine.cache["mibViewController"] = _mib_view()
    try:
        yield Session(device, engine, auth, target)
    finally:
        engine.close_dispatcher()


def _text(value: Any) -> str | None:
    if value is None:
        return None
    raw = bytes(value.asOctets()) if hasattr(value, "asOctets") else str(value).encode()
    return raw.decode("utf-8", errors="replace").strip("\x00").strip()[:1000] or None


def _mac(value: Any) -> str | None:
    """Format a 6-octet PhysAddress as aa:bb:cc:dd:ee:ff; other lengths are ignored."""
    raw = bytes(value.asOctets()) if hasattr(value, "asOctets") else b""
    if len(raw) != 6 or raw == b"\x00" * 6:
        return None
    return ":".join(f"{b:02x}" for b in raw)


def _mac_from_index(index: Index) -> str | None:
    if len(index) != 6 or not all(0 <= b <= 255 for b in index) or not any(index):
        return None
    return ":".join(f"{b:02x}" for b in index)


def _int(value: Any) -> int | None:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def parse_interfaces(if_table: Table, if_x_table: Table) -> list[SnmpInterface]:
    """Merge ifTable and ifXTable rows; 64-bit counters win when present."""
    result: list[SnmpInterface] = []
    indexes = sorted({i for i in if_table.indexes() + if_x_table.indexes() if len(i) == 1})
    for index in indexes[:_MAX_INTERFACES]:
        hc_in = _int(if_x_table.column(oids.IF_HC_IN_OCTETS).get(index))
        hc_out = _int(if_x_table.column(oids.IF_HC_OUT_OCTETS).get(index))
        hc = hc_in is not None and hc_out is not None
        high = _int(if_x_table.column(oids.IF_HIGH_SPEED).get(index))
        speed = _int(if_table.column(oids.IF_SPEED).get(index))
        # ifSpeed saturates at 2**32-1 (above 4.29 Gbit/s); ifHighSpeed is in Mbit/s.
        if high and (speed is None or speed >= 4294967295 or high * 1_000_000 > speed):
            speed = high * 1_000_000
        oper = _int(if_table.column(oids.IF_OPER_STATUS).get(index))
        admin = _int(if_table.column(oids.IF_ADMIN_STATUS).get(index))
        result.append(
            SnmpInterface(
                index=index[0],
                name=_text(if_x_table.column(oids.IF_NAME).get(index)),
                descr=_text(if_table.column(oids.IF_DESCR).get(index)),
                alias=_text(if_x_table.column(oids.IF_ALIAS).get(index)),
                oper_status=oids.IF_STATUS.get(oper, str(oper)) if oper is not None else None,
                admin_status=oids.IF_STATUS.get(admin, str(admin)) if admin is not None else None,
                speed_bps=speed,
                mac=_mac(if_table.column(oids.IF_PHYS_ADDRESS).get(index)),
                in_octets=hc_in if hc else _int(if_table.column(oids.IF_IN_OCTETS).get(index)),
                out_octets=hc_out if hc else _int(if_table.column(oids.IF_OUT_OCTETS).get(index)),
                in_errors=_int(if_table.column(oids.IF_IN_ERRORS).get(index)),
                out_errors=_int(if_table.column(oids.IF_OUT_ERRORS).get(index)),
                counter_bits=64
                if hc
                else (32 if if_table.column(oids.IF_IN_OCTETS).get(index) is not None else None),
            )
        )
    return result


def _ipv4_from_physical_index(index: Index) -> str | None:
    # ifIndex . addrType(1=ipv4) . length(4) . a.b.c.d
    if len(index) == 7 and index[1] == 1 and index[2] == 4:
        return ".".join(map(str, index[3:]))
    return None


def parse_arp_physical(table: Table) -> Iterator[tuple[str, str]]:
    """(ip, mac) from ipNetToPhysicalTable, skipping invalid and incomplete entries."""
    types = table.column(oids.IP_NET_TO_PHYSICAL_TYPE)
    states = table.column(oids.IP_NET_TO_PHYSICAL_STATE)
    for index, value in table.column(oids.IP_NET_TO_PHYSICAL_PHYS_ADDRESS).items():
        ip, mac = _ipv4_from_physical_index(index), _mac(value)
        if ip is None or mac is None:
            continue
        if _int(types.get(index)) == 2 or _int(states.get(index)) in (5, 7):
            continue
        yield ip, mac


def parse_arp_media(table: Table) -> Iterator[tuple[str, str]]:
    """(ip, mac) from the older ipNetToMediaTable."""
    types = table.column(oids.IP_NET_TO_MEDIA_TYPE)
    for index, value in table.column(oids.IP_NET_TO_MEDIA_PHYS_ADDRESS).items():
        mac = _mac(value)
        if len(index) != 5 or mac is None or _int(types.get(index)) == 2:
            continue
        yield ".".join(map(str, index[1:])), mac


def parse_fdb(table: Table, status_oid: str, mac_offset: int) -> Iterator[str]:
    """Learned MACs from a dot1d/dot1q FDB status column (the MAC is in the index)."""
    for index, status in table.column(status_oid).items():
        if _int(status) != oids.FDB_LEARNED:
            continue
        mac = _mac_from_index(index[mac_offset:])
        if mac is not None and not int(mac[:2], 16) & 1:  # skip multicast
            yield mac


async def walk_arp(session: Session) -> tuple[list[tuple[str, str]], bool]:
    """The device's ARP table: ipNetToPhysicalTable, else ipNetToMediaTable."""
    table = await session.walk(
        [
            oids.IP_NET_TO_PHYSICAL_PHYS_ADDRESS,
            oids.IP_NET_TO_PHYSICAL_TYPE,
            oids.IP_NET_TO_PHYSICAL_STATE,
        ]
    )
    entries = sorted(set(parse_arp_physical(table)))
    if not entries and not table.truncated:
        table = await session.walk([oids.IP_NET_TO_MEDIA_PHYS_ADDRESS, oids.IP_NET_TO_MEDIA_TYPE])
        entries = sorted(set(parse_arp_media(table)))
    return entries, table.truncated


async def walk_fdb(session: Session) -> tuple[list[str], bool]:
    """Learned MACs of the bridge: dot1qTpFdbTable and dot1dTpFdbTable, merged."""
    q = await session.walk([oids.DOT1Q_TP_FDB_STATUS])
    d = await session.walk([oids.DOT1D_TP_FDB_STATUS])
    macs = set(parse_fdb(q, oids.DOT1Q_TP_FDB_STATUS, 1))
    macs |= set(parse_fdb(d, oids.DOT1D_TP_FDB_STATUS, 0))
    return sorted(macs), q.truncated or d.truncated


async def _poll(session: Session, result: SnmpDevice) -> None:
    device = session.device
    system = await session.get([oids.SYS_DESCR, oids.SYS_OBJECT_ID, oids.SYS_UPTIME, oids.SYS_NAME])
    result.up = True
    result.sys_descr = _text(system.get(oids.SYS_DESCR))
    result.sys_name = _text(system.get(oids.SYS_NAME))
    if (oid := system.get(oids.SYS_OBJECT_ID)) is not None:
        result.sys_object_id = str(oid)
    if (ticks := _int(system.get(oids.SYS_UPTIME))) is not None:
        result.sys_uptime_seconds = ticks / 100
    interface_rows = min(device.max_rows, _MAX_INTERFACES)
    if_table = await session.walk(
        [
            oids.IF_DESCR,
            oids.IF_SPEED,
            oids.IF_PHYS_ADDRESS,
            oids.IF_ADMIN_STATUS,
            oids.IF_OPER_STATUS,
            oids.IF_IN_OCTETS,
            oids.IF_IN_ERRORS,
            oids.IF_OUT_OCTETS,
            oids.IF_OUT_ERRORS,
        ],
        interface_rows,
    )
    if_x_table = await session.walk(
        [
            oids.IF_NAME,
            oids.IF_HC_IN_OCTETS,
            oids.IF_HC_OUT_OCTETS,
            oids.IF_HIGH_SPEED,
            oids.IF_ALIAS,
        ],
        interface_rows,
    )
    result.interfaces = parse_interfaces(if_table, if_x_table)
    result.truncated = if_table.truncated or if_x_table.truncated
    arp, arp_truncated = await walk_arp(session)
    result.arp_entries = len(arp)
    fdb, fdb_truncated = await walk_fdb(session)
    result.fdb_entries = len(fdb)
    result.truncated = result.truncated or arp_truncated or fdb_truncated


def _budget_error(device: SnmpDeviceConfig) -> str:
    return (
        f"SNMP poll of {_label(device)} did not finish within max_duration "
        f"{device.max_duration:g}s; partial data reported"
    )


async def poll_device(device: SnmpDeviceConfig) -> SnmpDevice:
    """Poll one device; every failure becomes ``error`` text in the result."""
    result = SnmpDevice(address=device.address, up=False, name=device.name)
    started = time.monotonic()
    try:
        async with asyncio.timeout(device.max_duration), open_session(device) as session:
            await _poll(session, result)
    except SnmpFailure as exc:
        result.error = str(exc)
    except TimeoutError:
        result.error = _budget_error(device)
    except Exception as exc:  # a bug or an unexpected pysnmp failure: reported, not raised
        log_exception_limited(log, "snmp.poll_failed", exc, device=_label(device))
        result.error = f"internal error polling {_label(device)}: {type(exc).__name__}"
    if result.truncated and result.error is None:
        result.error = f"a table was cut at max_rows={device.max_rows}"
    result.duration_seconds = round(time.monotonic() - started, 3)
    level = logging.INFO if result.error is None else logging.WARNING
    event(log, level, "snmp.polled", device=_label(device), up=result.up, error=result.error)
    return result


async def poll_devices(config: SnmpConfig, tracker: UsageTracker | None = None) -> list[SnmpDevice]:
    """Poll every configured device concurrently; never raises for device problems.

    ``tracker`` holds the previous counter samples: with it, each device's configured
    uplinks get their bytes since the previous poll (``SnmpDevice.uplinks``).
    """
    results = list(await asyncio.gather(*(poll_device(d) for d in config.devices)))
    if tracker is not None:
        now = time.monotonic()
        for device, result in zip(config.devices, results, strict=True):
            result.uplinks = tracker.update(device, result, now)
    return results


async def walk_neighbours(device: SnmpDeviceConfig) -> Neighbours:
    """Read one device's ARP table and bridge FDB for LAN discovery; raises SnmpFailure."""
    try:
        async with asyncio.timeout(device.max_duration), open_session(device) as session:
            arp, arp_truncated = await walk_arp(session)
            fdb, fdb_truncated = await walk_fdb(session)
    except TimeoutError:
        raise SnmpFailure(_budget_error(device)) from None
    return Neighbours(arp=arp, fdb=fdb, truncated=arp_truncated or fdb_truncated)
