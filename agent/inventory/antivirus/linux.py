"""Antivirus on Linux: ClamAV read directly, other products by their processes.

ClamAV: clamd is *enabled* when it answers ``PING`` on the socket its ``clamd.conf``
names, or (while it is still loading signatures) when a clamd process runs with that
config. Signature age comes from the databases themselves: ``.cvd``/``.cld``/``.cud``
containers carry a 512-byte header ``ClamAV-VDB:<build time>:<version>:<sigs>:<flevel>:
<md5>:<dsig>:<builder>:<build unix time>``, plain databases (``.hdb``, ``.ndb``, ...) only
their modification time. The newest database decides, because freshclam replaces
``daily`` while ``main`` stays months old by design.

Other products (Kaspersky KESL, ESET, Sophos, Trend Micro Deep Security, Defender for
Endpoint, BKAV) are recognised by process name; their update state is read from the
modification time of their signature files where the path is known.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from agent.inventory.antivirus.command import Runner, run_command, which
from agent.inventory.antivirus.policy import evaluate, product_state
from agent.inventory.antivirus.vendors import (
    ProcessInfo,
    VendorMatch,
    list_processes,
    match_vendors,
    newest_mtime,
)
from agent.inventory.settings import AntivirusConfig
from agent.report import AntivirusProduct, AntivirusStatus, AvState

DEFAULT_DATABASE_DIR: Final = "/var/lib/clamav"
DEFAULT_CLAMD_CONF: Final = "/etc/clamav/clamd.conf"
CONTAINER_EXTENSIONS: Final = frozenset({".cvd", ".cld", ".cud"})
# Files that carry signatures (allow lists, configs and ignore lists do not count).
PLAIN_EXTENSIONS: Final = frozenset(
    {
        ".db", ".hdb", ".hdu", ".hsb", ".hsu", ".mdb", ".mdu", ".msb", ".msu", ".ndb",
        ".ndu", ".ldb", ".ldu", ".idb", ".cdb", ".gdb", ".wdb", ".pdb", ".cbc", ".yar",
        ".yara", ".imp", ".ioc", ".zmd", ".rmd", ".sdb",
    }
)  # fmt: skip
HEADER_SIZE: Final = 512


class ParseError(ValueError):
    """A file that is not in ClamAV's documented format."""


# --- clamd.conf ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClamdConfig:
    """The parts of clamd.conf that tell where signatures and the socket are."""

    database_dir: str = DEFAULT_DATABASE_DIR
    local_socket: str | None = None
    tcp_socket: int | None = None
    tcp_addr: tuple[str, ...] = ()
    example: bool = False  # the "Example" line is still there: clamd refuses to start


def parse_clamd_conf(text: str) -> ClamdConfig:
    """Parse clamd.conf (``Key value`` lines, ``#`` comments; unknown keys ignored)."""
    values: dict[str, list[str]] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, _, value = line.partition(" ")
        if "\t" in key:
            key, _, rest = key.partition("\t")
            value = f"{rest} {value}"
        values.setdefault(key.lower(), []).append(value.strip().strip('"'))
    tcp_socket = None
    if values.get("tcpsocket"):
        try:
            tcp_socket = int(values["tcpsocket"][-1])
        except ValueError:
            tcp_socket = None
    return ClamdConfig(
        database_dir=(values.get("databasedirectory") or [DEFAULT_DATABASE_DIR])[-1],
        local_socket=values["localsocket"][-1] if values.get("localsocket") else None,
        tcp_socket=tcp_socket,
        tcp_addr=tuple(values.get("tcpaddr", [])),
        example="example" in values,
    )


# --- databases -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CvdHeader:
    """The header of a ``.cvd``/``.cld``/``.cud`` signature container."""

    build_time: dt.datetime
    version: int
    signatures: int | None
    functionality_level: int | None
    builder: str | None


def parse_cvd_header(data: bytes) -> CvdHeader:
    """Parse the first 512 bytes of a container (``sigtool --info`` reads the same)."""
    text = data[:HEADER_SIZE].decode("ascii", errors="replace").rstrip(" \0\n")
    if not text.startswith("ClamAV-VDB:"):
        raise ParseError("not a ClamAV database header (expected ClamAV-VDB:)")
    fields = text.split(":")
    if len(fields) < 3:
        raise ParseError("truncated ClamAV database header")

    def number(i: int) -> int | None:
        try:
            return int(fields[i])
        except (IndexError, ValueError):
            return None

    version = number(2)
    if version is None:
        raise ParseError(f"invalid version {fields[2]!r} in ClamAV database header")
    build_time = None
    stime = number(8)
    if stime is not None and stime > 0:
        build_time = dt.datetime.fromtimestamp(stime, dt.UTC)
    else:
        # "21 Nov 2026 19-45 +0000": sigtool writes the minutes with a dash so that the
        # colon stays a field separator.
        for fmt in ("%d %b %Y %H-%M %z", "%d %b %Y %H:%M %z"):
            try:
                build_time = dt.datetime.strptime(fields[1].strip(), fmt).astimezone(dt.UTC)
                break
            except ValueError:
                continue
    if build_time is None:
        raise ParseError(f"invalid build time {fields[1]!r} in ClamAV database header")
    return CvdHeader(
        build_time=build_time,
        version=version,
        signatures=number(3),
        functionality_level=number(4),
        builder=fields[7].strip() if len(fields) > 7 and fields[7].strip() else None,
    )


@dataclass(frozen=True, slots=True)
class Database:
    """One signature database file and when its signatures were made."""

    name: str  # file name, e.g. daily.cvd
    time: dt.datetime  # build time for containers, modification time for plain files
    version: int | None = None


@dataclass(slots=True)
class DatabaseScan:
    """What the database directory holds."""

    directory: str
    databases: list[Database] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def newest(self) -> Database | None:
        """The most recently built or updated database."""
        return max(self.databases, key=lambda d: d.time, default=None)

    def version_text(self) -> str | None:
        """``daily:27100 main:62`` for containers, else the number of plain files."""
        versions = [f"{Path(d.name).stem}:{d.version}" for d in self.databases if d.version]
        if versions:
            return " ".join(sorted(versions))[:256]
        return f"{len(self.databases)} local database files" if self.databases else None


def scan_databases(directory: str) -> DatabaseScan:
    """Read the headers and times of every signature database in ``directory``."""
    scan = DatabaseScan(directory)
    try:
        entries = sorted(os.scandir(directory), key=lambda e: e.name)
    except OSError as exc:
        scan.errors.append(f"cannot read {directory}: {exc.strerror or exc}")
        return scan
    for entry in entries:
        ext = os.path.splitext(entry.name)[1].lower()
        if ext not in CONTAINER_EXTENSIONS and ext not in PLAIN_EXTENSIONS:
            continue
        try:
            if not entry.is_file():
                continue
            if ext in CONTAINER_EXTENSIONS:
                with open(entry.path, "rb") as f:
                    header = parse_cvd_header(f.read(HEADER_SIZE))
                scan.databases.append(Database(entry.name, header.build_time, header.version))
            else:
                mtime = dt.datetime.fromtimestamp(entry.stat().st_mtime, dt.UTC)
                scan.databases.append(Database(entry.name, mtime))
        except (OSError, ParseError) as exc:
            scan.errors.append(f"{entry.name}: {getattr(exc, 'strerror', None) or exc}")
    return scan


# --- clamd ---------------------------------------------------------------------------


def query_clamd(config: ClamdConfig, command: str, timeout: float) -> str | None:
    """Send one ``z``-command to clamd's socket; None when it does not answer.

    Only the local socket or a loopback TCP socket is used: the agent never reaches
    another machine's clamd.
    """
    targets: list[tuple[socket.AddressFamily, str | tuple[str, int]]] = []
    if config.local_socket:
        targets.append((socket.AF_UNIX, config.local_socket))
    if config.tcp_socket:
        addrs = [a for a in config.tcp_addr if a in ("127.0.0.1", "localhost", "::1")]
        if not config.tcp_addr:
            addrs = ["127.0.0.1"]
        for addr in addrs:
            family = socket.AF_INET6 if ":" in addr else socket.AF_INET
            targets.append((family, (addr.replace("localhost", "127.0.0.1"), config.tcp_socket)))
    for family, address in targets:
        try:
            with socket.socket(family, socket.SOCK_STREAM) as sock:
                sock.settimeout(timeout)
                sock.connect(address)
                sock.sendall(f"z{command}\0".encode("ascii"))
                chunks = []
                while True:
                    chunk = sock.recv(4096)
                    if not chunk:
                        break
                    chunks.append(chunk)
                    if chunk.endswith(b"\0"):
                        break
            return b"".join(chunks).rstrip(b"\0\n").decode("utf-8", errors="replace")
        except OSError:
            continue
    return None


def parse_clamav_version(text: str) -> tuple[str | None, int | None]:
    """``ClamAV 1.4.6/27100/Tue Nov 21 ...`` → (engine ``1.4.6``, daily version 27100)."""
    text = text.strip()
    if not text.startswith("ClamAV "):
        return None, None
    parts = text[len("ClamAV ") :].split("/")
    engine = parts[0].strip() or None
    try:
        daily = int(parts[1]) if len(parts) > 1 else None
    except ValueError:
        daily = None
    return engine, daily


def _config_arg(cmdline: Sequence[str]) -> str | None:
    for i, arg in enumerate(cmdline):
        if arg in ("-c", "--config-file") and i + 1 < len(cmdline):
            return cmdline[i + 1]
        if arg.startswith("--config-file="):
            return arg.split("=", 1)[1]
    return None


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.abspath(a) == os.path.abspath(b)


def clamd_processes(processes: Sequence[ProcessInfo], conf_path: str) -> list[ProcessInfo]:
    """clamd processes started with ``conf_path`` (no ``-c``: the packaged default)."""
    found = []
    for proc in processes:
        if proc.name != "clamd":
            continue
        used = _config_arg(proc.cmdline) or DEFAULT_CLAMD_CONF
        if _same_file(used, conf_path):
            found.append(proc)
    return found


# --- detect --------------------------------------------------------------------------


def detect_clamav(
    config: AntivirusConfig,
    processes: Sequence[ProcessInfo],
    *,
    runner: Runner = run_command,
    now: dt.datetime,
) -> AntivirusProduct | None:
    """ClamAV's product entry, or None when ClamAV is not installed."""
    timeout = float(config.command_timeout)
    conf_path = config.clamav_config
    notes: list[str] = []
    try:
        clamd_conf = parse_clamd_conf(Path(conf_path).read_text(encoding="utf-8", errors="replace"))
        conf_found = True
    except FileNotFoundError:
        clamd_conf, conf_found = ClamdConfig(), False
    except OSError as exc:
        clamd_conf, conf_found = ClamdConfig(), False
        notes.append(f"cannot read {conf_path}: {exc.strerror or exc}")
    if clamd_conf.example:
        notes.append(f"{conf_path} still has the 'Example' line: clamd will not start")
    database_dir = config.clamav_database_dir or clamd_conf.database_dir
    scan = scan_databases(database_dir)
    daemons = clamd_processes(processes, conf_path)
    installed = (
        conf_found
        or bool(daemons)
        or bool(scan.databases)
        or any(which(tool) for tool in ("clamd", "clamscan", "clamdscan"))
    )
    if not installed:
        return None

    reply = query_clamd(clamd_conf, "VERSION", timeout) if conf_found else None
    answering = reply is not None and query_clamd(clamd_conf, "PING", timeout) == "PONG"
    engine, _ = parse_clamav_version(reply or "")
    if engine is None and which("clamscan"):
        result = runner(["clamscan", "--version"], timeout)
        if result.ok:
            engine, _ = parse_clamav_version(result.stdout)
    enabled = answering or bool(daemons)
    if answering:
        notes.append("clamd answers on its socket")
    elif daemons:
        notes.append(f"clamd running (pid {daemons[0].pid}) but not answering yet")
    else:
        notes.append("clamd is not running")
    if any(p.name == "freshclam" and ({"-d", "--daemon"} & set(p.cmdline)) for p in processes):
        notes.append("freshclam daemon running")
    on_access = any(p.name == "clamonacc" for p in processes)
    notes += scan.errors[:3]

    newest = scan.newest
    age = None if newest is None else max(0.0, (now - newest.time).total_seconds())
    state: AvState
    if newest is None:
        # Without signatures ClamAV detects nothing: it counts as no product at all.
        state = "missing"
        notes.append(f"no signature database in {database_dir}")
    else:
        state = product_state(
            enabled=enabled,
            up_to_date=None,
            signature_age_seconds=age,
            max_signature_age_seconds=float(config.max_signature_age),
        )
    return AntivirusProduct(
        name="ClamAV",
        source="clamav",
        state=state,
        vendor="Cisco Talos",
        enabled=enabled,
        up_to_date=None if age is None else age <= float(config.max_signature_age),
        real_time_protection=True if on_access else None,
        signature_age_seconds=age,
        signature_version=scan.version_text(),
        engine_version=engine,
        signature_updated_at=newest.time if newest else None,
        running=enabled,
        detail="; ".join(notes)[:1024] or None,
    )


def _from_vendor(match: VendorMatch, config: AntivirusConfig, now: dt.datetime) -> AntivirusProduct:
    updated = newest_mtime(match.vendor.signature_globs)
    updated_at = dt.datetime.fromtimestamp(updated, dt.UTC) if updated is not None else None
    age = None if updated_at is None else max(0.0, (now - updated_at).total_seconds())
    detail = match.evidence()
    if age is None:
        detail += "; update state not readable from this source"
    return AntivirusProduct(
        name=match.vendor.product,
        source="process",
        state=product_state(
            enabled=match.running,
            up_to_date=None,
            signature_age_seconds=age,
            max_signature_age_seconds=float(config.max_signature_age),
        ),
        vendor=match.vendor.vendor,
        enabled=match.running,
        signature_age_seconds=age,
        signature_updated_at=updated_at,
        running=match.running,
        detail=detail[:1024],
    )


def detect(
    config: AntivirusConfig,
    *,
    processes: Callable[[], Sequence[ProcessInfo]] = list_processes,
    runner: Runner = run_command,
    now: dt.datetime | None = None,
) -> AntivirusStatus:
    """Detect the antivirus products of this Linux computer and judge its one state."""
    now = now or dt.datetime.now(dt.UTC)
    sources: list[str] = []
    warnings: list[str] = []
    try:
        running = list(processes())
        sources.append("process")
        processes_ok = True
    except Exception as exc:  # psutil can fail on hardened /proc; detection goes on
        running, processes_ok = [], False
        warnings.append(f"process: {type(exc).__name__}: {exc}"[:300])
    products: list[AntivirusProduct] = []
    clamav = detect_clamav(config, running, runner=runner, now=now)
    if clamav is not None:
        products.append(clamav)
        sources.append("clamav")
    products += [_from_vendor(m, config, now) for m in match_vendors("linux", (), running)]
    return evaluate(
        products,
        max_signature_age_seconds=float(config.max_signature_age),
        sources=sources,
        warnings=warnings,
        detection_failed=not processes_ok and clamav is None,
    )
