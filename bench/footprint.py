"""Agent footprint next to node_exporter + blackbox_exporter and zabbix_agent2.

One shared window (default 5 min, ``--quick`` 60 s) at the default 60 s interval:

* hatang host role (``hatang-agent run``) probing six loopback targets (2 icmp, 2 tcp,
  dns, http) and sending to a real collector on 127.0.0.1 over https, the certificate
  verified against a throwaway CA (``collector.ca_file``), as a deployment does; the
  same agent with a plain-http collector beside it (``hatang-http``), to show what TLS
  costs;
* node_exporter scraped by the bench every interval and blackbox_exporter asked by the
  bench (``/probe``) for the same six targets every interval, as Prometheus would;
* zabbix_agent2 (passive checks only, ``Server=127.0.0.1``) asked over the Zabbix
  protocol for the equivalent items (no ICMP item exists in the agent: Zabbix pings
  from the server with fping) plus five system items;
* two hatang site probes inside a namespace LAN (10.92.0.0/24, 30 hosts): one with
  discovery (its ARP sweep runs at start, in the daemon's short-lived child process),
  one without.

RSS is sampled every second from /proc (median of the samples; at the end of the
window /proc/<pid>/smaps_rollup splits it into private and shared pages, the shared
ones being libraries' pages that other processes may map too); CPU seconds over the
window are each thread's schedstat, followed at every sample so that threads which
exit during the window count too, with /proc/<pid>/stat ticks as the floor
(``common.Sampler``), divided by the probes done in the window. Start-up
time (process start to first result) and bytes per report (gzip) are measured apart,
median of 5. Run as root: ``python3 bench/footprint.py [--quick]``.
"""

from __future__ import annotations

import gzip
import socket
import sqlite3
import statistics
import struct
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from common import (
    BLACKBOX_YML,
    REPO,
    Row,
    Sampler,
    Targets,
    ensure_tools,
    finish,
    free_port,
    low_port,
    need_root,
    parser,
    port_open,
    ratio,
    start,
    stop,
    target_servers,
    tempdir,
    verdict,
    wait_for,
)

from agent.report import Batch, decode_report, encode
from tests import netns
from tests.receiver import make_certificates

INTERVAL = 60.0
SITE = "demo/xa-an-binh"
NODE = "/usr/bin/prometheus-node-exporter"
BLACKBOX = "/usr/bin/prometheus-blackbox-exporter"
ZABBIX = "/usr/sbin/zabbix_agent2"
LAN = "10.92.0"
LAN_HOSTS = 30
RUNS = 5
PY = sys.executable


# --- hatang -----------------------------------------------------------------------------


def agent_yaml(
    spool: Path,
    targets: Targets | None,
    *,
    role: str = "host",
    url: str = "",
    token: str = "",
    ca_file: Path | None = None,
) -> str:
    lines = [
        f"site: {SITE}",
        f"role: {role}",
        "interval: 60s",
        "jitter: 0",  # the references are driven on the exact interval too
        f"spool: {{path: {spool}}}",
        "log: {level: warning}",
    ]
    if url and ca_file is not None:  # https, verified as in a deployment
        lines.append(f"collector: {{url: '{url}', token: '{token}', ca_file: '{ca_file}'}}")
    elif url:
        lines.append(f"collector: {{url: '{url}', token: '{token}', verify_tls: false}}")
    if targets is not None:
        t = targets
        lines += [
            "networks:",
            "  lan: {targets: [{kind: icmp, address: 127.0.0.1}]}",
            f"  wan: {{targets: [{{kind: tcp, address: '127.0.0.1:{t.tcp_port}'}}]}}",
            "  dedicated: {targets: [{kind: icmp, address: 127.0.0.2},",
            f"                       {{kind: tcp, address: '127.0.0.2:{t.tcp_port}'}}]}}",
            f"  internet: {{targets: [{{kind: dns, address: '{t.dns_host}:{t.dns_port}', "
            "query: dichvucong.gov.vn},",
            f"                        {{kind: http, address: '{t.http_url}'}}]}}",
        ]
    else:
        lines += ["networks:", f"  lan: {{targets: [{{kind: icmp, address: {LAN}.1}}]}}"]
    return "\n".join(lines) + "\n"


HOST_PROBES = 6  # targets per round of the host role


@dataclass
class Collector:
    proc: subprocess.Popen[bytes]
    url: str
    token: str
    db: Path


def start_collector(
    directory: Path, ns: netns.Namespace | None = None, tls: tuple[Path, Path] | None = None
) -> Collector:
    """A real collector on (the namespace's) 127.0.0.1 with one token for SITE; over
    https with ``tls`` (certificate, key)."""
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port() if ns is None else 18080
    config = directory / "collector.yaml"
    listen = f"host: 127.0.0.1, port: {port}"
    if tls is not None:
        listen += f", cert_file: '{tls[0]}', key_file: '{tls[1]}'"
    config.write_text(
        f"org: {REPO / 'configs' / 'org.demo.yaml'}\nstore: {{url: 'sqlite:collector.db'}}\n"
        f"listen: {{{listen}}}\nlog: {{level: warning}}\n",
        encoding="utf-8",
    )
    cli = [PY, "-m", "collector"]
    token = subprocess.run(
        [*cli, "token", "create", "--config", str(config), "--site", SITE],
        capture_output=True, text=True, check=True, cwd=REPO,
    ).stdout.splitlines()[-1]  # fmt: skip
    args = [*cli, "serve", "--config", str(config)]
    if ns is None:
        proc = start(args, cwd=REPO)
        wait_for(lambda: port_open(port), what="collector")
    else:
        proc = ns.popen(args, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    scheme = "https" if tls is not None else "http"
    return Collector(proc, f"{scheme}://127.0.0.1:{port}", token, directory / "collector.db")


def stored_reports(db: Path) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            return int(conn.execute("SELECT count(*) FROM reports").fetchone()[0])
    except sqlite3.Error:
        return 0


def smaps_mib(pid: int) -> dict[str, float]:
    """Private and shared resident MiB of a process (``/proc/<pid>/smaps_rollup``)."""
    fields: dict[str, float] = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup", encoding="ascii") as f:
            for line in f:
                parts = line.split()
                if len(parts) == 3 and parts[2] == "kB":
                    fields[parts[0].rstrip(":")] = int(parts[1]) / 1024
    except OSError:
        return {}
    return {
        "private": fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0),
        "shared": fields.get("Shared_Clean", 0) + fields.get("Shared_Dirty", 0),
        "anonymous": fields.get("Anonymous", 0),
    }


def spooled(path: Path) -> int:
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1) as conn:
            return int(conn.execute("SELECT count(*) FROM queue").fetchone()[0])
    except sqlite3.Error:
        return 0


# --- references ---------------------------------------------------------------------------


def blackbox_targets(t: Targets) -> list[tuple[str, str]]:
    return [
        ("icmp", "127.0.0.1"),
        ("tcp", f"127.0.0.1:{t.tcp_port}"),
        ("icmp", "127.0.0.2"),
        ("tcp", f"127.0.0.2:{t.tcp_port}"),
        ("dns", f"{t.dns_host}:{t.dns_port}"),
        ("http", t.http_url),
    ]


def zabbix_network_items(t: Targets) -> list[str]:
    items = [
        f"net.tcp.port[127.0.0.1,{t.tcp_port}]",
        f"net.tcp.port[127.0.0.2,{t.tcp_port}]",
        f"web.page.perf[{t.http_url}]",
    ]
    if t.dns_port == 53:
        items.append(f"net.dns[{t.dns_host},dichvucong.gov.vn,A,2,1]")
    return items


ZABBIX_SYSTEM_ITEMS = [
    "system.hostname",
    "system.uname",
    "vm.memory.size[total]",
    "vfs.fs.size[/,total]",
    "system.cpu.num",
]


def zabbix_conf(directory: Path, port: int) -> Path:
    conf = directory / "zabbix_agent2.conf"
    conf.write_text(
        "\n".join(
            [
                f"PidFile={directory / 'zabbix_agent2.pid'}",
                f"LogFile={directory / 'zabbix_agent2.log'}",
                "LogFileSize=0",
                "Server=127.0.0.1",
                "ServerActive=",  # no active checks: nothing leaves loopback
                "ListenIP=127.0.0.1",
                f"ListenPort={port}",
                "Hostname=hatang-bench",
                f"ControlSocket={directory / 'agent.sock'}",
                f"PluginSocket={directory / 'agent.plugin.sock'}",
                "",
            ]
        ),
        encoding="utf-8",
    )
    return conf


def zabbix_get(port: int, key: str) -> str:
    """One passive check over the Zabbix protocol (what zabbix_get does)."""
    data = key.encode()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"ZBXD\x01" + struct.pack("<Q", len(data)) + data)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    raw = b"".join(chunks)
    return raw[13:].decode("utf-8", "replace") if raw.startswith(b"ZBXD") else ""


def http_get(url: str, gzip_ok: bool = False) -> bytes:
    headers = {"Accept-Encoding": "gzip"} if gzip_ok else {}
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=30) as r:
        return bytes(r.read())


def probe_url(port: int, module: str, target: str) -> str:
    from urllib.parse import quote

    return f"http://127.0.0.1:{port}/probe?module={module}&target={quote(target, safe='')}"


# --- start-up -----------------------------------------------------------------------------


def time_until(args: list[str], ready: Callable[[], bool], cleanup: Callable[[], None]) -> float:
    """Seconds from process start until ``ready()``; the process is stopped after."""
    cleanup()
    started = time.perf_counter()
    proc = start(args, cwd=REPO)
    try:
        wait_for(lambda: ready() or proc.poll() is not None, timeout=60)
        if proc.poll() is not None and not ready():
            raise RuntimeError(f"{args[0]} exited ({proc.returncode}) before it was ready")
        return time.perf_counter() - started
    finally:
        stop(proc)


def startup(tmp: Path, t: Targets) -> dict[str, float]:
    """Median of RUNS start-up times for each program."""
    check_cfg = tmp / "check.yaml"
    check_cfg.write_text(agent_yaml(tmp / "check-spool.db", t), encoding="utf-8")
    spool = tmp / "startup-spool.db"
    run_cfg = tmp / "startup.yaml"
    # A closed port: the first report stays in the spool, where the bench sees it.
    run_cfg.write_text(
        agent_yaml(spool, t, url=f"http://127.0.0.1:{free_port()}", token="x" * 32),
        encoding="utf-8",
    )

    def clear_spool() -> None:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{spool}{suffix}").unlink(missing_ok=True)

    def check_once() -> float:
        began = time.perf_counter()
        subprocess.run(
            [PY, "-m", "agent", "check", "--config", str(check_cfg), "--json"],
            cwd=REPO, capture_output=True, check=False,
        )  # fmt: skip
        return time.perf_counter() - began

    port = free_port()
    bb_conf = tmp / "blackbox.yml"
    zport = low_port()
    (tmp / "zstart").mkdir()
    zconf = zabbix_conf(tmp / "zstart", zport)

    def answers(url: str) -> Callable[[], bool]:
        def ready() -> bool:
            try:
                return b"probe_success 1" in http_get(url) or url.endswith("/metrics")
            except OSError:
                return False

        return ready

    def zabbix_ready() -> bool:
        try:
            return zabbix_get(zport, f"net.tcp.port[127.0.0.1,{t.tcp_port}]") == "1"
        except OSError:
            return False

    results: dict[str, list[float]] = {k: [] for k in ("check", "run", "node", "bb", "zbx")}
    for _ in range(RUNS):
        results["check"].append(check_once())
        results["run"].append(
            time_until(
                [PY, "-m", "agent", "run", "--config", str(run_cfg)],
                lambda: spooled(spool) > 0,
                clear_spool,
            )
        )
        results["node"].append(
            time_until(
                [NODE, f"--web.listen-address=127.0.0.1:{port}"],
                answers(f"http://127.0.0.1:{port}/metrics"),
                lambda: None,
            )
        )
        results["bb"].append(
            time_until(
                [BLACKBOX, f"--config.file={bb_conf}", f"--web.listen-address=127.0.0.1:{port}"],
                answers(probe_url(port, "tcp", f"127.0.0.1:{t.tcp_port}")),
                lambda: None,
            )
        )
        results["zbx"].append(
            time_until([ZABBIX, "-c", str(zconf), "-f"], zabbix_ready, lambda: None)
        )
    return {k: statistics.median(v) for k, v in results.items()}


# --- report size --------------------------------------------------------------------------


def report_bytes(stdout: str) -> tuple[int, int]:
    """(JSON bytes, gzip bytes) of one report sent alone, as the sender sends it."""
    raw = encode(Batch(reports=[decode_report(stdout.encode())]))
    return len(raw), len(gzip.compress(raw, 6, mtime=0))


# --- namespace LAN for the site probes ----------------------------------------------------


def build_lan(topo: netns.Topology) -> tuple[netns.Namespace, netns.Namespace]:
    switch = topo.add("sw")
    bridge = topo.bridge(switch)
    router = topo.add("rtr")
    topo.attach(switch, bridge, router, f"{LAN}.1/24")
    probes = []
    for n, name in ((2, "pdisc"), (3, "pnodisc")):
        p = topo.add(name)
        topo.attach(switch, bridge, p, f"{LAN}.{n}/24")
        p.ip("route", "add", "default", "via", f"{LAN}.1")
        probes.append(p)
    for i in range(LAN_HOSTS):
        host = topo.add(f"h{i:02d}")
        topo.attach(switch, bridge, host, f"{LAN}.{20 + i * 5}/24")
    return probes[0], probes[1]


# --- the window ---------------------------------------------------------------------------


def main() -> None:
    args = parser(__doc__).parse_args()
    need_root()
    reason = netns.available()
    if reason:
        sys.exit(reason)
    ensure_tools("prometheus-node-exporter", "prometheus-blackbox-exporter", "zabbix_agent2")
    window = 60.0 if args.quick else 300.0
    procs: list[subprocess.Popen[bytes]] = []
    with tempdir() as tmp, target_servers() as t, netns.topology("-fp") as topo:
        (tmp / "blackbox.yml").write_text(BLACKBOX_YML, encoding="utf-8")
        print("start-up times ...", file=sys.stderr)
        boot = startup(tmp, t)

        check_cfg = tmp / "check.yaml"
        host_out = subprocess.run(
            [PY, "-m", "agent", "check", "--config", str(check_cfg), "--json"],
            cwd=REPO, capture_output=True, text=True, check=False,
        ).stdout  # fmt: skip
        host_size = report_bytes(host_out)

        print("building the namespace LAN ...", file=sys.stderr)
        pdisc, pnodisc = build_lan(topo)
        site_cfg = tmp / "site-check.yaml"
        site_cfg.write_text(
            agent_yaml(tmp / "site-check.db", None, role="site-probe"), encoding="utf-8"
        )
        site_out = pdisc.exec(
            PY, "-m", "agent", "check", "--config", str(site_cfg), "--json",
            check=False, timeout=120,
        ).stdout  # fmt: skip
        site_size = report_bytes(site_out)
        lan_hosts = decode_report(site_out.encode()).lan_hosts
        site_hosts = len(lan_hosts.hosts) if lan_hosts else 0

        print(f"footprint window of {window:g}s ...", file=sys.stderr)
        ca, cert, key = make_certificates(tmp / "tls")
        collector = start_collector(tmp / "collector", tls=(cert, key))
        plain = start_collector(tmp / "collector-http")
        procs += [collector.proc, plain.proc]
        host_cfg = tmp / "host.yaml"
        host_cfg.write_text(
            agent_yaml(
                tmp / "host-spool.db", t, url=collector.url, token=collector.token, ca_file=ca
            ),
            encoding="utf-8",
        )
        http_cfg = tmp / "host-http.yaml"
        http_cfg.write_text(
            agent_yaml(tmp / "host-http-spool.db", t, url=plain.url, token=plain.token),
            encoding="utf-8",
        )
        site_collectors = []
        site_agents = []
        for ns, discovery in ((pdisc, True), (pnodisc, False)):
            c = start_collector(tmp / f"collector-{ns.short}", ns)
            site_collectors.append(c)
            cfg = tmp / f"{ns.short}.yaml"
            text = agent_yaml(tmp / f"{ns.short}.db", None, role="site-probe", url=c.url,
                              token=c.token)  # fmt: skip
            if not discovery:
                text += "discovery: {enabled: false}\n"
            cfg.write_text(text, encoding="utf-8")
            site_agents.append(
                ns.popen(
                    [PY, "-m", "agent", "run", "--config", str(cfg)],
                    cwd=REPO,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        node_port, bb_port, z_port = free_port(), free_port(), low_port()
        (tmp / "z").mkdir()
        agent = start([PY, "-m", "agent", "run", "--config", str(host_cfg)], cwd=REPO)
        agent_http = start([PY, "-m", "agent", "run", "--config", str(http_cfg)], cwd=REPO)
        node = start([NODE, f"--web.listen-address=127.0.0.1:{node_port}"])
        bb = start(
            [BLACKBOX, f"--config.file={tmp / 'blackbox.yml'}",
             f"--web.listen-address=127.0.0.1:{bb_port}"]
        )  # fmt: skip
        zbx = start([ZABBIX, "-c", str(zabbix_conf(tmp / "z", z_port)), "-f"])
        procs += [agent, agent_http, node, bb, zbx]
        try:
            wait_for(lambda: port_open(node_port) and port_open(bb_port) and port_open(z_port),
                     what="reference tools")  # fmt: skip
            wait_for(
                lambda: stored_reports(collector.db) > 0 and stored_reports(plain.db) > 0,
                timeout=60,
                what="first reports (https and http)",
            )
            wait_for(
                lambda: all(stored_reports(c.db) > 0 for c in site_collectors),
                timeout=120,
                what="first site-probe reports",
            )
            bb_items = blackbox_targets(t)
            z_net = zabbix_network_items(t)
            sampler = Sampler(
                {
                    "hatang": agent.pid,
                    "hatang-http": agent_http.pid,
                    "node": node.pid,
                    "blackbox": bb.pid,
                    "zabbix": zbx.pid,
                    "site+disc": site_agents[0].pid,
                    "site": site_agents[1].pid,
                }
            )
            reports_before = stored_reports(collector.db)
            plain_before = stored_reports(plain.db)
            counts = {"blackbox": 0, "zabbix": 0, "node": 0}
            sizes = {"node": 0, "blackbox": 0}
            began = time.monotonic()
            next_round = began
            while (now := time.monotonic()) < began + window + 2:
                if now >= next_round:
                    next_round += INTERVAL
                    sizes["node"] = len(http_get(f"http://127.0.0.1:{node_port}/metrics", True))
                    counts["node"] += 1
                    bb_bytes = 0
                    for module, target in bb_items:
                        body = http_get(probe_url(bb_port, module, target), True)
                        bb_bytes += len(body)
                        counts["blackbox"] += 1
                    sizes["blackbox"] = bb_bytes
                    for key in z_net:
                        zabbix_get(z_port, key)
                        counts["zabbix"] += 1
                    for key in ZABBIX_SYSTEM_ITEMS:
                        zabbix_get(z_port, key)
                sampler.sample()
                time.sleep(1.0)
            sampler.stop()
            smaps = {name: smaps_mib(pid) for name, pid in sampler.pids.items()}
            hatang_rounds = stored_reports(collector.db) - reports_before
            plain_rounds = stored_reports(plain.db) - plain_before
            z_check = {key: zabbix_get(z_port, key) for key in z_net}
        finally:
            stop(*procs, *site_agents, *(c.proc for c in site_collectors))

    hatang_probes = max(hatang_rounds, 1) * HOST_PROBES
    plain_probes = max(plain_rounds, 1) * HOST_PROBES
    cpu_probe = {
        "hatang": sampler.cpu["hatang"] / hatang_probes * 1000,
        "hatang-http": sampler.cpu["hatang-http"] / plain_probes * 1000,
        "blackbox": sampler.cpu["blackbox"] / max(counts["blackbox"], 1) * 1000,
        "zabbix": sampler.cpu["zabbix"] / max(counts["zabbix"], 1) * 1000,
    }
    mib = {name: sampler.median_mib(name) for name in sampler.pids}
    pair = mib["node"] + mib["blackbox"]
    rows = [
        Row("footprint", "host role RSS (MiB, median of 1 s samples)", f"{mib['hatang']:.1f}",
            f"node {mib['node']:.1f} + blackbox {mib['blackbox']:.1f} = {pair:.1f}",
            ratio(mib["hatang"], pair), "≤ 25 MiB", verdict(mib["hatang"] <= 25)),
        Row("footprint", "host role RSS vs zabbix_agent2 (MiB)", f"{mib['hatang']:.1f}",
            f"zabbix_agent2 {mib['zabbix']:.1f}", ratio(mib["hatang"], mib["zabbix"]),
            "≤ 1.4x", verdict(mib["hatang"] <= 1.4 * mib["zabbix"])),
        Row("footprint", "host role RSS with a plain-http collector (MiB)",
            f"{mib['hatang-http']:.1f}", f"zabbix_agent2 {mib['zabbix']:.1f}",
            ratio(mib["hatang-http"], mib["zabbix"])),
        Row("footprint", "host role private / shared pages at the end (MiB, smaps_rollup)",
            "{private:.1f} / {shared:.1f}".format(**smaps["hatang"]) if smaps["hatang"] else "-",
            "zabbix_agent2 {private:.1f} / {shared:.1f}".format(**smaps["zabbix"])
            if smaps["zabbix"] else "-"),
        Row("footprint", "host role peak RSS (MiB)", f"{sampler.max_mib('hatang'):.1f}",
            f"node+blackbox {sampler.max_mib('node') + sampler.max_mib('blackbox'):.1f}",
            ratio(sampler.max_mib("hatang"),
                  sampler.max_mib("node") + sampler.max_mib("blackbox"))),
        Row("footprint", f"CPU per probe (ms; whole process over {window:g} s / probes)",
            f"{cpu_probe['hatang']:.2f} ({sampler.cpu['hatang']:.2f} s / {hatang_probes})",
            f"blackbox {cpu_probe['blackbox']:.2f} ({sampler.cpu['blackbox']:.2f} s / "
            f"{counts['blackbox']})", ratio(cpu_probe["hatang"], cpu_probe["blackbox"]),
            "≤ blackbox", verdict(cpu_probe["hatang"] <= cpu_probe["blackbox"])),
        Row("footprint", "CPU per probe with a plain-http collector (ms)",
            f"{cpu_probe['hatang-http']:.2f} ({sampler.cpu['hatang-http']:.2f} s / {plain_probes})",
            f"blackbox {cpu_probe['blackbox']:.2f}",
            ratio(cpu_probe["hatang-http"], cpu_probe["blackbox"])),
        Row("footprint", "CPU per probe vs zabbix_agent2 (ms)", f"{cpu_probe['hatang']:.2f}",
            f"zabbix {cpu_probe['zabbix']:.2f} ({sampler.cpu['zabbix']:.2f} s / "
            f"{counts['zabbix']} items)", ratio(cpu_probe["hatang"], cpu_probe["zabbix"])),
        Row("footprint", "node_exporter CPU over the window (s, scraped every 60 s)", "-",
            f"{sampler.cpu['node']:.2f} ({counts['node']} scrapes)"),
        Row("footprint", f"site probe RSS, no discovery (MiB; LAN of {LAN_HOSTS} hosts)",
            f"{mib['site']:.1f}", f"node+blackbox {pair:.1f}", ratio(mib["site"], pair)),
        Row("footprint", "site probe RSS after a discovery run (MiB)", f"{mib['site+disc']:.1f}",
            f"node+blackbox {pair:.1f}", ratio(mib["site+disc"], pair)),
        Row("start-up", "`check` to completion (s; 6 targets, inventory, antivirus)",
            f"{boot['check']:.2f}", f"blackbox first /probe {boot['bb']:.2f}",
            ratio(boot["check"], boot["bb"])),
        Row("start-up", "`run` to first report in the spool (s)", f"{boot['run']:.2f}",
            f"blackbox {boot['bb']:.2f}; node /metrics {boot['node']:.2f}; "
            f"zabbix first item {boot['zbx']:.2f}", ratio(boot["run"], boot["bb"])),
        Row("report size", "host role report, gzip (bytes; JSON)",
            f"{host_size[1]} ({host_size[0]})",
            f"node /metrics {sizes['node']} + blackbox 6 /probe {sizes['blackbox']} (gzip)",
            ratio(host_size[1], sizes["node"] + sizes["blackbox"]), "≤ 2 KB",
            verdict(host_size[1] <= 2048)),
        Row("report size", f"site probe report with {site_hosts} LAN hosts, gzip (bytes; JSON)",
            f"{site_size[1]} ({site_size[0]})", "-", "-", "≤ 2 KB",
            verdict(site_size[1] <= 2048)),
    ]  # fmt: skip
    notes = [
        f"Window {window:g} s (hatang rounds in it: {hatang_rounds}); the host role sends "
        "over https (certificate verified against the bench's CA); "
        "hatang icmp sends 5 echoes per probe, blackbox 1.",
        "CPU seconds over the window, threads' schedstat followed every second / "
        "/proc/<pid>/stat ticks (exited threads included): "
        + ", ".join(
            f"{n} {sampler.cpu_threads[n]:.3f} / {sampler.cpu_ticks[n]:.2f}"
            for n in ("hatang", "hatang-http", "blackbox", "zabbix")
        )
        + " (the larger is used).",
        "zabbix items answered: "
        + ", ".join(f"{k}={v[:30]!r}" for k, v in z_check.items())
        + " (no ICMP item in zabbix_agent2).",
    ]
    finish(args, rows, notes)


if __name__ == "__main__":
    main()
