"""Shared parts of the benchmarks: reference tools, /proc sampling, servers, tables.

Benchmarks are not tests: they print figures for people. Every script here runs alone
(``python3 bench/<name>.py [--quick] [--json FILE]``) and prints a markdown table;
``bench/run_all.py`` runs them all and writes the table into docs/benchmarks.md.

Network rule: every reference tool is started bound to 127.0.0.1 (or inside a namespace
the bench builds), and every probe it runs targets loopback or such a namespace.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# Debian package that provides each reference program.
PACKAGES: dict[str, str] = {
    "prometheus-node-exporter": "prometheus-node-exporter",
    "prometheus-blackbox-exporter": "prometheus-blackbox-exporter",
    "zabbix_agent2": "zabbix-agent2",
    "fping": "fping",
    "arp-scan": "arp-scan",
    "nmap": "nmap",
    "promtool": "prometheus",
    "dnsmasq": "dnsmasq-base",
    "nft": "nftables",
}
POLICY_RC = Path("/usr/sbin/policy-rc.d")


@dataclass
class Row:
    """One line of the results table: a hatang figure next to its reference."""

    area: str
    measure: str
    hatang: str
    reference: str = "-"
    ratio: str = "-"
    goal: str = "-"
    verdict: str = "-"


def ratio(ours: float, reference: float) -> str:
    """``ours / reference`` as ``1.23x`` ("-" when the reference is zero)."""
    return f"{ours / reference:.2f}x" if reference else "-"


def verdict(met: bool | None) -> str:
    return "-" if met is None else ("met" if met else "MISSED")


def table(rows: Sequence[Row]) -> str:
    """Rows as a markdown table."""
    lines = [
        "| area | measure | hatang | reference | ratio | goal | verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.area} | {r.measure} | {r.hatang} | {r.reference} | {r.ratio} | "
            f"{r.goal} | {r.verdict} |"
        )
    return "\n".join(lines)


def parser(doc: str | None) -> argparse.ArgumentParser:
    """The options every bench script takes."""
    p = argparse.ArgumentParser(description=(doc or "").strip().splitlines()[0])
    p.add_argument("--quick", action="store_true", help="shorter windows and fewer requests")
    p.add_argument("--json", metavar="FILE", help="also write the rows as JSON (run_all)")
    return p


def finish(args: argparse.Namespace, rows: Sequence[Row], notes: Sequence[str] = ()) -> None:
    """Print the table (and notes); write the rows as JSON when asked."""
    print(table(rows))
    for note in notes:
        print(f"\n{note}")
    if args.json:
        Path(args.json).write_text(
            json.dumps({"rows": [asdict(r) for r in rows], "notes": list(notes)}, indent=1),
            encoding="utf-8",
        )


def need_root() -> None:
    if os.geteuid() != 0:
        sys.exit("run the benchmarks as root (namespaces, raw sockets, apt-get)")


def ensure_tools(*programs: str) -> None:
    """Install the Debian packages of missing reference programs, without starting services.

    A policy-rc.d that exits 101 stops the packages' maintainer scripts from starting
    node_exporter, blackbox_exporter or zabbix_agent2 on the machine's real interfaces;
    the bench starts each one itself, bound to 127.0.0.1.
    """
    missing = sorted({PACKAGES[p] for p in programs if shutil.which(p) is None})
    if not missing:
        return
    print(f"installing {' '.join(missing)} (services not started) ...", file=sys.stderr)
    own_policy = not POLICY_RC.exists()
    if own_policy:
        POLICY_RC.write_text("#!/bin/sh\nexit 101\n", encoding="utf-8")
        POLICY_RC.chmod(0o755)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        cmd = ["apt-get", "install", "-y", "--no-install-recommends", *missing]
        if subprocess.run(cmd, env=env, capture_output=True).returncode != 0:
            subprocess.run(["apt-get", "update"], env=env, capture_output=True, check=False)
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if proc.returncode != 0:
                sys.exit(f"apt-get install {' '.join(missing)} failed:\n{proc.stderr[-2000:]}")
    finally:
        if own_policy:
            POLICY_RC.unlink(missing_ok=True)
    # A package whose service was enabled would start at the next boot: not ours to run.
    for unit in ("prometheus-node-exporter", "prometheus-blackbox-exporter", "zabbix-agent2"):
        if shutil.which("systemctl"):
            subprocess.run(["systemctl", "disable", unit], capture_output=True, check=False)


def free_port(bind: str = "127.0.0.1") -> int:
    """A port free for TCP and UDP on ``bind`` right now."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((bind, 0))
            port = int(udp.getsockname()[1])
            with socket.socket() as tcp:
                try:
                    tcp.bind((bind, port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free port")


def low_port(bind: str = "127.0.0.1") -> int:
    """A free TCP port below 32768 (zabbix_agent2 refuses ListenPort above 32767)."""
    import random

    for _ in range(200):
        port = random.randint(20000, 32767)
        with socket.socket() as tcp:
            try:
                tcp.bind((bind, port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below 32768")


def wait_for(predicate: Callable[[], Any], timeout: float = 30.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what or 'condition'} not met within {timeout:g}s")
        time.sleep(0.02)


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        socket.create_connection((host, port), timeout=0.5).close()
    except OSError:
        return False
    return True


def rss_bytes(pid: int) -> int:
    """VmRSS of a process (0 once it has gone)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def thread_cpu_ns(pid: int) -> dict[str, int]:
    """Scheduler run time of each live thread (ns, /proc/<pid>/task/*/schedstat): far
    finer than the 10 ms ticks of /proc/<pid>/stat."""
    found: dict[str, int] = {}
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for tid in tasks:
        path = f"/proc/{pid}/task/{tid}/schedstat"
        with contextlib.suppress(OSError, ValueError, IndexError), open(path, "rb") as f:
            found[tid] = int(f.read().split()[0])
    return found


def tick_cpu_seconds(pid: int) -> float:
    """utime + stime of /proc/<pid>/stat: exited threads included, in 10 ms ticks."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Sampler:
    """RSS samples and CPU seconds of named processes over one shared window.

    CPU: each thread's schedstat is followed at every sample, so a thread that exits
    during the window (hatang's lane threads live for one call) still counts with
    what it had used at the last sample; /proc/<pid>/stat ticks (exited threads
    included, 10 ms steps) are the floor, so work of threads that lived between two
    samples is not lost either. ``cpu`` is the larger of the two.
    """

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.rss: dict[str, list[int]] = {name: [] for name in pids}
        self._first = {name: thread_cpu_ns(pid) for name, pid in pids.items()}
        self._last = {name: dict(first) for name, first in self._first.items()}
        self._ticks = {name: tick_cpu_seconds(pid) for name, pid in pids.items()}
        self.cpu: dict[str, float] = {}
        self.cpu_threads: dict[str, float] = {}
        self.cpu_ticks: dict[str, float] = {}

    def _follow(self) -> None:
        for name, pid in self.pids.items():
            self._last[name].update(thread_cpu_ns(pid))

    def sample(self) -> None:
        self._follow()
        for name, pid in self.pids.items():
            if value := rss_bytes(pid):
                self.rss[name].append(value)

    def stop(self) -> None:
        self._follow()
        for name, pid in self.pids.items():
            first, last = self._first[name], self._last[name]
            threads = sum(ns - first.get(tid, 0) for tid, ns in last.items()) / 1e9
            ticks = tick_cpu_seconds(pid) - self._ticks[name]
            self.cpu_threads[name], self.cpu_ticks[name] = threads, ticks
            self.cpu[name] = max(threads, ticks)

    def median_mib(self, name: str) -> float:
        samples = self.rss[name]
        return statistics.median(samples) / 2**20 if samples else 0.0

    def max_mib(self, name: str) -> float:
        samples = self.rss[name]
        return max(samples) / 2**20 if samples else 0.0


def start(args: Sequence[str], **kwargs: Any) -> subprocess.Popen[bytes]:
    """Start a background process with its output discarded unless redirected."""
    kwargs.setdefault("stdout", subprocess.DEVNULL)
    kwargs.setdefault("stderr", subprocess.DEVNULL)
    return subprocess.Popen(list(args), **kwargs)


def stop(*procs: subprocess.Popen[Any] | None) -> None:
    for proc in procs:
        if proc is None or proc.poll() is not None:
            continue
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def tempdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="hatang-bench-") as tmp:
        os.chmod(tmp, 0o755)  # zabbix_agent2 may drop to its own user
        yield Path(tmp)


def machine() -> dict[str, str]:
    """What the figures were measured on."""
    mem = "?"
    with contextlib.suppress(OSError), open("/proc/meminfo", encoding="ascii") as f:
        kib = int(f.readline().split()[1])
        mem = f"{kib / 2**20:.1f} GiB"
    cpu = "?"
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": str(os.cpu_count()),
        "memory": mem,
        "cpu": cpu,
        "kernel": os.uname().release,
        "python": sys.version.split()[0],
    }


# --- local target servers (loopback only) ---------------------------------------------

SERVERS = r"""
import http.server, socket, sys, threading
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def do_GET(self):
        body = b"<html><body>hatang bench</body></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    do_HEAD = do_GET
http_port, tcp_port = int(sys.argv[1]), int(sys.argv[2])
srv = http.server.ThreadingHTTPServer(("127.0.0.1", http_port), H)
threading.Thread(target=srv.serve_forever, daemon=True).start()
def serve(host):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, tcp_port)); s.listen(128)
    while True:
        c, _ = s.accept(); c.close()
threading.Thread(target=serve, args=("127.0.0.2",), daemon=True).start()
serve("127.0.0.1")
"""

DNS_NAME = "dichvucong.gov.vn"


@dataclass
class Targets:
    """The loopback targets every tool probes: one of each kind, as an office would have."""

    http_port: int
    tcp_port: int
    dns_host: str
    dns_port: int

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/"


@contextlib.contextmanager
def target_servers() -> Iterator[Targets]:
    """HTTP, TCP and DNS (dnsmasq) servers on loopback, in processes of their own so that
    serving the probes never counts against a measured process."""
    ensure_tools("dnsmasq")
    http_port, tcp_port = free_port(), free_port()
    # zabbix_agent2's net.dns asks port 53 only, so dnsmasq answers on 127.0.0.77:53
    # when that is free, else on a free port (zabbix's DNS item is then left out).
    dns_host, dns_port = "127.0.0.1", free_port()
    for candidate in ("127.0.0.77", "127.0.0.78", "127.0.0.79"):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                s.bind((candidate, 53))
            except OSError:
                continue
        dns_host, dns_port = candidate, 53
        break
    servers = start([sys.executable, "-c", SERVERS, str(http_port), str(tcp_port)])
    dnsmasq = start(
        [
            "dnsmasq", "--no-daemon", "--no-resolv", "--no-hosts", "--conf-file=/dev/null",
            "--pid-file=", f"--port={dns_port}", f"--listen-address={dns_host}",
            "--bind-interfaces", "--local=/gov.vn/",
            f"--address=/{DNS_NAME}/10.91.0.80", "--user=root",
        ]
    )  # fmt: skip
    try:
        wait_for(lambda: port_open(http_port) and port_open(tcp_port), what="target servers")
        wait_for(lambda: _dns_ready(dns_host, dns_port) or dnsmasq.poll() is not None)
        if dnsmasq.poll() is not None:
            raise RuntimeError("dnsmasq exited at start")
        yield Targets(http_port, tcp_port, dns_host, dns_port)
    finally:
        stop(servers, dnsmasq)


def _dns_ready(host: str, port: int) -> bool:
    import dns.exception
    import dns.message
    import dns.query

    try:
        dns.query.udp(dns.message.make_query(DNS_NAME, "A"), host, timeout=0.2, port=port)
    except (dns.exception.DNSException, OSError):
        return False
    return True


def run_json(args: Sequence[str], timeout: float = 600) -> dict[str, Any]:
    """Run a command that prints one JSON object on stdout."""
    proc = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout)
    if proc.returncode not in (0, 1):
        raise RuntimeError(f"{' '.join(args)} failed ({proc.returncode}): {proc.stderr[-1500:]}")
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


# blackbox_exporter modules equivalent to hatang's four probe kinds (footprint, probes).
BLACKBOX_YML = """modules:
  icmp: {prober: icmp, timeout: 5s, icmp: {preferred_ip_protocol: ip4}}
  tcp: {prober: tcp, timeout: 5s, tcp: {preferred_ip_protocol: ip4}}
  dns:
    prober: dns
    timeout: 5s
    dns: {query_name: dichvucong.gov.vn, query_type: A, transport_protocol: udp,
          preferred_ip_protocol: ip4}
  http: {prober: http, timeout: 5s, http: {preferred_ip_protocol: ip4}}
"""
