"""Site probe LAN discovery: ARP sweep + SNMP ARP/FDB tables + this agent, merged by MAC.

``discover`` never raises for what the network or the OS did: a refused subnet, a
missing interface, no raw-socket privilege or a silent switch end up in
``LanHosts.error`` (Vietnamese first, then English), and whatever could be seen is
still reported.

The daemon runs each discovery in a short-lived child process (``discover_in_child``:
``python -m agent.discovery``, the request on its standard input, the ``LanHosts`` back
as JSON on its standard output, bounded in size and time): scapy's 20-30 MiB then
leave with the child, and the site probe returns to the host role's memory between
sweeps. ``check`` is short-lived itself and runs ``discover`` in its own process.
First and last seen stay in the daemon (``_history``), applied to the child's result.

SNMP data for discovery is read here, from the configured devices' ARP and bridge
tables, rather than reused from the ``snmp`` section: the two sections run on their
own intervals (and concurrently on the first cycle), so reuse would make the counts
depend on scheduling; the two table walks cost a few GETBULK packets.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import ipaddress
import logging
import math
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field

import msgspec

from agent import subproc
from agent.config import AgentConfig, ConfigError, DiscoveryConfig, parse_config
from agent.discovery.arp import UNSPECIFIED
from agent.discovery.reconcile import History, MergedHost, Sighting, count, merge, to_lan_hosts
from agent.log import event, log_exception_limited
from agent.report import HostKind, LanHosts

log = logging.getLogger(__name__)

MAX_HOSTS = 4096  # the report's bound on LanHosts.hosts
# A full LanHosts is about 1.5 MiB of JSON (4096 hosts of ~350 bytes): twice that is
# a generous bound for what the child may write back.
CHILD_OUTPUT_LIMIT = 4 << 20
CHILD_START_SECONDS = 30.0  # interpreter, scapy and psutil imports on a slow office PC
_history = History()  # first/last seen for the life of the daemon process


@dataclass(slots=True)
class SweepPlan:
    """Where and what to sweep, and why some subnets are not swept."""

    interface: str | None = None
    mac: str | None = None
    own_ips: list[str] = field(default_factory=list)
    own_networks: list[ipaddress.IPv4Network] = field(default_factory=list)
    targets: list[tuple[ipaddress.IPv4Network, str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def _default_interface() -> str | None:
    linux = sys.platform.startswith("linux")
    if linux:
        # /proc/net/route, as the lan check reads it: no scapy import (~0.35 s) to plan.
        from agent.route import RouteError, default_routes

        try:
            routes = [r for r in default_routes() if r.family == 4 and r.interface]
        except RouteError:
            return None
        return routes[0].interface if routes else None
    import scapy.route  # noqa: F401 - sets conf.route
    from scapy.config import conf

    conf.route.resync()  # routes may have changed since scapy was imported
    iface, _, gateway = conf.route.route(UNSPECIFIED, verbose=0)
    no_gateway = ipaddress.IPv4Address(gateway or 0).is_unspecified
    if not iface or (no_gateway and str(iface) in ("lo", conf.loopback_name)):
        return None
    return str(iface)


def plan_sweep(config: DiscoveryConfig) -> SweepPlan:
    """Pick the interface and subnets to sweep; refusals go to ``errors``."""
    import psutil

    plan = SweepPlan()
    iface = config.interface or _default_interface()
    if iface is None:
        plan.errors.append(
            "Không tìm thấy tuyến mặc định / no default route: set discovery.interface"
        )
        return plan
    addresses = psutil.net_if_addrs().get(iface)
    if addresses is None:
        plan.errors.append(
            f"Không có giao diện {iface} / interface {iface} not found on this computer"
        )
        return plan
    plan.interface = iface
    for address in addresses:
        if address.family == psutil.AF_LINK and address.address:
            plan.mac = address.address.lower().replace("-", ":")
        elif address.family == socket.AF_INET and address.netmask:
            interface = ipaddress.IPv4Interface(f"{address.address}/{address.netmask}")
            if interface.ip.is_loopback or interface.ip.is_link_local:
                continue
            plan.own_ips.append(str(interface.ip))
            plan.own_networks.append(interface.network)
    if plan.mac is None:
        plan.errors.append(f"Giao diện {iface} không có địa chỉ MAC / {iface} has no MAC address")
        return plan
    if config.subnets:
        for text in config.subnets:
            network = ipaddress.IPv4Network(text, strict=False)  # validated at load
            source = next(
                (ip for ip in plan.own_ips if ipaddress.IPv4Address(ip) in network),
                UNSPECIFIED,  # no own address there: ask with ARP probes (RFC 5227)
            )
            plan.targets.append((network, source))
        return plan
    if not plan.own_networks:
        plan.errors.append(
            f"Giao diện {iface} không có địa chỉ IPv4 / {iface} has no IPv4 address: "
            "set discovery.subnets"
        )
    for network, ip in zip(plan.own_networks, plan.own_ips, strict=True):
        if network.prefixlen < config.max_prefix:
            plan.errors.append(
                f"Không quét mạng {network} vì lớn hơn giới hạn /{config.max_prefix} / "
                f"subnet {network} on {iface} is larger than the sweep bound "
                f"/{config.max_prefix} (discovery.max_prefix): not swept; "
                "set discovery.subnets to the part to sweep"
            )
        elif all(network != n for n, _ in plan.targets):
            plan.targets.append((network, ip))
    return plan


def _run_sweep(plan: SweepPlan, config: DiscoveryConfig) -> dict[str, set[str]]:
    from agent.discovery import arp

    assert plan.interface is not None and plan.mac is not None
    targets = [arp.SweepTarget(network, source) for network, source in plan.targets]
    result = arp.sweep(
        plan.interface,
        plan.mac,
        targets,
        rate=config.rate,
        retries=config.retries,
        timeout=config.timeout,
    )
    event(
        log,
        logging.INFO,
        "discovery.swept",
        interface=plan.interface,
        sent=result.sent,
        rounds=result.rounds,
        answered=len(result.replies),
        seconds=round(result.duration_seconds, 3),
    )
    return result.replies


def _sweep_error(iface: str | None, exc: OSError) -> str:
    if isinstance(exc, PermissionError):
        return (
            "Quét ARP cần quyền quản trị / the ARP sweep needs administrator rights "
            "(root or CAP_NET_RAW on Linux, Npcap on Windows)"
        )
    return f"Quét ARP lỗi / ARP sweep on {iface} failed: {exc.strerror or exc}"


async def _snmp_sightings(
    config: AgentConfig, networks: list[ipaddress.IPv4Network]
) -> tuple[list[Sighting], list[str]]:
    """ARP-table and FDB sightings from the configured SNMP devices."""
    if not config.snmp.devices:
        return [], []
    from agent.snmp.poller import SnmpFailure, walk_neighbours

    sightings: list[Sighting] = []
    errors: list[str] = []
    results = await asyncio.gather(
        *(walk_neighbours(d) for d in config.snmp.devices), return_exceptions=True
    )
    for device, result in zip(config.snmp.devices, results, strict=True):
        if isinstance(result, SnmpFailure):
            errors.append(f"SNMP {device.address}: {result}")
            continue
        if isinstance(result, BaseException):
            event(log, logging.ERROR, "discovery.snmp_failed", error=repr(result)[:300])
            errors.append(f"SNMP {device.address}: internal error: {type(result).__name__}")
            continue
        outside: set[str] = set()
        for ip, mac in result.arp:
            if any(ipaddress.IPv4Address(ip) in n for n in networks):
                sightings.append(Sighting("snmp", (mac,), ip=ip))
            else:
                outside.add(mac)  # another router interface's neighbour: not this LAN
        for mac in result.fdb:
            if mac not in outside:
                sightings.append(Sighting("snmp", (mac,)))
        if result.truncated:
            errors.append(f"SNMP {device.address}: a table was cut at max_rows")
    return sightings, errors


def _self_sighting(config: AgentConfig, plan: SweepPlan) -> Sighting | None:
    """This probe itself: it never answers its own sweep, but it is on the LAN."""
    import psutil

    macs: list[str] = [plan.mac] if plan.mac else []
    stats = psutil.net_if_stats()
    for name, addresses in psutil.net_if_addrs().items():
        if name == plan.interface or not (stats.get(name) and stats[name].isup):
            continue
        has_ipv4 = any(
            a.family == socket.AF_INET and not a.address.startswith("127.") for a in addresses
        )
        for a in addresses:
            if has_ipv4 and a.family == psutil.AF_LINK and a.address:
                macs.append(a.address.lower().replace("-", ":"))
    if not macs:
        return None
    return Sighting(
        "agent",
        tuple(macs),
        ip=plan.own_ips[0] if plan.own_ips else None,
        hostname=socket.gethostname()[:256] or None,
        agent_id=config.agent_id,
    )


async def discover(config: AgentConfig) -> LanHosts:
    """Sweep the LAN, read the switch/router tables, merge by MAC and count."""
    started = time.monotonic()
    now = dt.datetime.now(dt.UTC)
    settings = config.discovery
    try:
        plan = await asyncio.to_thread(plan_sweep, settings)
    except Exception as exc:  # a bug or an OS surprise: reported, never raised
        log_exception_limited(log, "discovery.plan_failed", exc)
        plan = SweepPlan(errors=[f"internal error planning the sweep: {type(exc).__name__}"])
    errors = list(plan.errors)
    sightings: list[Sighting] = []
    if plan.targets:
        try:
            replies = await asyncio.to_thread(_run_sweep, plan, settings)
        except OSError as exc:
            errors.append(_sweep_error(plan.interface, exc))
            replies = {}
        except Exception as exc:
            log_exception_limited(log, "discovery.sweep_failed", exc)
            errors.append(f"internal error in the ARP sweep: {type(exc).__name__}")
            replies = {}
        for ip, macs in replies.items():
            sightings += [Sighting("arp", (mac,), ip=ip) for mac in sorted(macs)]
            if len(macs) > 1:
                errors.append(f"Xung đột địa chỉ / IP conflict: {ip} is claimed by {sorted(macs)}")
    networks = [n for n, _ in plan.targets] or plan.own_networks
    snmp_sightings, snmp_errors = await _snmp_sightings(config, networks)
    sightings += snmp_sightings
    errors += snmp_errors
    if (me := _self_sighting(config, plan)) is not None:
        sightings.append(me)
    merged = merge(sightings)

    open_ports: dict[str, list[int]] | None = None
    if settings.port_check:
        from agent.discovery.classify import check_ports

        live = sorted({h.ips["arp"] for h in merged if "arp" in h.ips})
        open_ports = await check_ports(live, connect_timeout=settings.port_timeout)

    hosts = to_lan_hosts(
        merged,
        classify=functools.partial(_classify, config, open_ports),
        vendor=_vendor,
        history=_history,
        now=now,
        open_ports=open_ports,
    )
    result = LanHosts(
        hosts=hosts[:MAX_HOSTS],
        counts=count(hosts),
        subnets=[str(n) for n, _ in plan.targets],
        error="; ".join(errors)[:1000] or None,
        interface=plan.interface,
        duration_seconds=round(time.monotonic() - started, 3),
        truncated=len(hosts) > MAX_HOSTS,
    )
    _log_done(result)
    return result


def _log_done(result: LanHosts, **fields: object) -> None:
    event(
        log,
        logging.INFO if not result.error else logging.WARNING,
        "discovery.done",
        total=result.counts.total,
        arp=result.counts.arp,
        snmp=result.counts.snmp,
        computers=result.counts.computers,
        error=result.error,
        **fields,
    )


@functools.lru_cache(maxsize=8192)
def _vendor(mac: str) -> str | None:
    from agent.discovery.classify import vendor

    return vendor(mac)


def _classify(
    config: AgentConfig, open_ports: dict[str, list[int]] | None, host: MergedHost
) -> tuple[HostKind, str | None]:
    from agent.discovery.classify import classify

    snmp_addresses = {d.address for d in config.snmp.devices}
    ports = None
    if open_ports is not None and "arp" in host.ips:
        ports = open_ports.get(host.ips["arp"], [])
    verdict = classify(
        host.mac,
        _vendor(host.mac),
        ports,
        snmp_device=any(ip in snmp_addresses for ip in host.ips.values()),
        has_agent="agent" in host.sources,
    )
    return verdict.kind, verdict.reason


# --- in a child process (the daemon) ----------------------------------------------------


def child_request(config: AgentConfig) -> bytes:
    """What the child needs of the config (discovery, snmp, who we are), as JSON."""
    return msgspec.json.encode(
        {
            "site": config.site,
            "role": "site-probe",
            "agent_id": config.agent_id,
            "discovery": config.discovery,
            "snmp": config.snmp,
            "inventory": {"enabled": False},
            "antivirus": {"enabled": False},
        },
        enc_hook=float,  # Duration: seconds, as the config also accepts them
    )


def child_timeout(config: AgentConfig) -> float:
    """A generous bound on one discovery: start-up, then twice the slowest plausible
    sweep, SNMP walk and port check of the configured subnets and devices."""
    settings = config.discovery
    if settings.subnets:
        addresses = sum(
            ipaddress.IPv4Network(s, strict=False).num_addresses for s in settings.subnets
        )
    else:
        addresses = 2 ** (32 - settings.max_prefix)
    rounds = settings.retries + 1
    work = addresses * rounds / settings.rate + rounds * settings.timeout
    work += max((float(d.max_duration) for d in config.snmp.devices), default=0.0)
    if settings.port_check:
        from agent.discovery.classify import CHECK_PORTS

        work += math.ceil(addresses * len(CHECK_PORTS) / 32) * settings.port_timeout
    return CHILD_START_SECONDS + 2 * work


def _child_failed(detail: str, started: float) -> LanHosts:
    return LanHosts(
        error=f"Quét mạng LAN không hoàn tất / discovery did not complete: {detail}"[:1000],
        duration_seconds=round(time.monotonic() - started, 3),
    )


def _run_child(request: bytes, timeout: float) -> subprocess.CompletedProcess[bytes]:
    return subproc.run(
        [subproc.python_executable(), "-m", "agent.discovery"],
        timeout=timeout,
        env=subproc.module_env(),
        input=request,
        max_output=CHILD_OUTPUT_LIMIT,
    )


async def discover_in_child(config: AgentConfig) -> LanHosts:
    """``discover`` in a short-lived ``python -m agent.discovery`` (the daemon's way)."""
    from agent.probes.blocking import DISCOVERY

    started = time.monotonic()
    now = dt.datetime.now(dt.UTC)
    timeout = child_timeout(config)
    try:
        proc = await DISCOVERY.run(
            "discover", functools.partial(_run_child, child_request(config), timeout)
        )
    except subprocess.TimeoutExpired:
        return _child_failed(f"no answer within {timeout:.0f}s (killed)", started)
    except subproc.OutputTooLarge:
        return _child_failed(f"answer larger than {CHILD_OUTPUT_LIMIT} bytes", started)
    except OSError as exc:
        return _child_failed(f"cannot start the sweep process: {exc.strerror or exc}", started)
    said = proc.stderr.decode("utf-8", "replace").strip()
    if said:
        event(log, logging.WARNING, "discovery.child_said", text=said[-2000:])
    try:
        result = msgspec.json.decode(proc.stdout, type=LanHosts)
    except msgspec.DecodeError as exc:
        detail = f"exit {proc.returncode}, unreadable answer ({str(exc)[:200]})"
        return _child_failed(detail, started)
    for host in result.hosts:
        host.first_seen, host.last_seen = _history.observe(host.mac, now)
    result.duration_seconds = round(time.monotonic() - started, 3)
    _log_done(result, child=True)
    return result


def child_main(stdin: bytes) -> tuple[int, bytes]:
    """The child's work: the request in, (exit code, ``LanHosts`` JSON) out."""
    try:
        config = parse_config(msgspec.json.decode(stdin), "<discovery request>")
    except (msgspec.DecodeError, ConfigError) as exc:
        sys.stderr.write(f"discovery request refused: {exc}\n")
        return 2, b""
    return 0, msgspec.json.encode(asyncio.run(discover(config)))
