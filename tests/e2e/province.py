"""Province in a box: a whole province's network in namespaces, and the truth it was built to.

``PROVINCE`` is the plan: which sites exist, how each is connected (WAN through the hub
or through the dedicated network, dedicated network, internet) and what sits on its
LAN. ``build()`` turns it into namespaces, runs the real ``hatang-collector serve`` in
the data centre and a real ``hatang-agent run`` on one PC of every site (the site
probe) and on some others. The tests then compare what the collector's ``/metrics``
says with what this module knows, computed here from the plan alone (never by calling
collector code). Addresses (all inside the test's own namespaces, 10.60-10.79 only):

==============  =====================================================
10.60.0.0/24    data centre ↔ WAN hub (collector's WAN address .10)
10.60.1.0/24    dedicated router ↔ WAN hub
10.61.S.0/24    site S ↔ WAN hub
10.62.0.0/24    government service host (.10, tcp/http) behind the dedicated router
10.63.S.0/24    site S ↔ dedicated router
10.64.S.0/24    site S's LAN: router .1, site probe .2, agents .10+, PCs .20+, printers .30+
10.70.0.0/24    data centre ↔ internet (collector's internet address .10)
10.71.0.0/24    the "internet": dnsmasq .53, HTTP server .80
10.72.S.0/24    site S ↔ internet router (the site masquerades behind .2)
==============  =====================================================
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from prometheus_client.parser import text_string_to_metric_families

from agent.report import NETWORK_CLASSES
from collector.targets import INDICATORS
from tests import netns
from tests.netns import wait_for

PROVINCE_ID = "lam-son"
COLLECTOR_PORT = 8080
WAN_URL = f"http://10.60.0.10:{COLLECTOR_PORT}"
INTERNET_URL = f"http://10.70.0.10:{COLLECTOR_PORT}"
GOV_HOST = "10.62.0.10"
DNS_SERVER = "10.71.0.53"
WEB_SERVER = "10.71.0.80"
INTERVAL = 2.0  # agents' check interval (seconds)
WINDOW = 60.0  # collector window; buckets of BUCKET seconds
BUCKET = 10.0
UP_RATIO = 0.9
ROUTER_OUI = "4c:5e:0c"  # MikroTik (Routerboard.com): classified network
PC_OUI = "00:1e:c9"  # Dell: classified computer
PRINTER_OUI = "00:80:77"  # Brother: classified printer
# The names are the contract (wire format, targets files); what they measure is computed
# here from the plan.
CLASSES = NETWORK_CLASSES
LEVELS = ("province", "agency", "commune", "all")
UNIT_CLASS = {"lan": "lan", "internet": "internet", "wan": "wan", "dedicated_network": "dedicated"}


@dataclass(frozen=True)
class SiteSpec:
    """One office as planned: its links and what is on its LAN."""

    key: str  # short name for namespaces, e.g. "a1"
    slug: str  # last part of the unit id
    name: str
    level: Literal["agency", "commune"]
    officials: int
    number: int  # S in the addresses
    wan: Literal["hub", "dedicated"] | None = "hub"
    dedicated: bool = True
    internet: bool = True
    host_agents: int = 0  # PCs running the host agent (besides the site probe)
    av_agents: int = 0  # of those, how many check antivirus (ClamAV here)
    plain_pcs: int = 1  # PCs without an agent (found by ARP only)
    printers: int = 0

    @property
    def unit_id(self) -> str:
        return f"{PROVINCE_ID}/{self.slug}"

    @property
    def up(self) -> dict[str, bool]:
        """Which network classes work here, by design."""
        return {
            "lan": True,
            "wan": self.wan is not None,
            "dedicated": self.dedicated,
            "internet": self.internet,
        }

    @property
    def agents(self) -> int:
        return 1 + self.host_agents

    @property
    def computers(self) -> int:
        return self.agents + self.plain_pcs

    @property
    def arp_hosts(self) -> int:
        """Hosts answering the site probe's sweep: router, agents' PCs, other PCs, printers."""
        return 1 + self.host_agents + self.plain_pcs + self.printers

    @property
    def connected(self) -> int:
        """Computers whose own agent sees LAN and internet up (the others have no agent)."""
        return self.agents if self.internet else 0


PROVINCE: tuple[SiteSpec, ...] = (
    SiteSpec("a1", "so-tttt", "Sở Thông tin và Truyền thông", "agency", 40, 1,
             host_agents=2, av_agents=1, printers=1),
    SiteSpec("a2", "van-phong-ubnd", "Văn phòng UBND tỉnh", "agency", 60, 2, host_agents=1),
    SiteSpec("a3", "so-tai-chinh", "Sở Tài chính", "agency", 35, 3, plain_pcs=2),
    SiteSpec("a4", "so-y-te", "Sở Y tế", "agency", 30, 4, host_agents=1, av_agents=1),
    SiteSpec("c1", "xa-an-binh", "Xã An Bình", "commune", 22, 11, host_agents=1),
    SiteSpec("c2", "xa-binh-minh", "Xã Bình Minh", "commune", 20, 12, dedicated=False),
    SiteSpec("c3", "xa-dong-tam", "Xã Đồng Tâm", "commune", 18, 13, dedicated=False,
             printers=1),
    SiteSpec("c4", "xa-na-ri", "Xã Na Rì", "commune", 16, 14, internet=False, host_agents=1),
    SiteSpec("c5", "xa-kim-hy", "Xã Kim Hỷ", "commune", 19, 15, wan="dedicated"),
    SiteSpec("c6", "xa-luong-thuong", "Xã Lương Thượng", "commune", 15, 16, wan=None,
             dedicated=False),
    SiteSpec("c7", "phuong-duc-xuan", "Phường Đức Xuân", "commune", 28, 17, host_agents=1),
    SiteSpec("c8", "xa-van-minh", "Xã Văn Minh", "commune", 21, 18, host_agents=1),
)  # fmt: skip

# Plan targets written to the collector's targets file (goal ratios are the plan's, not truth).
GOALS: tuple[tuple[str, str, float], ...] = (
    ("dedicated_network", "commune", 0.6),
    ("internet", "commune", 0.9),
    ("lan", "agency", 1.0),
    ("wan", "all", 1.0),
    ("computers_per_official", "agency", 0.1),
    ("antivirus_protected", "agency", 1.0),
)
PLAN = "lam-son-e2e"


# --------------------------------------------------------------------------- the truth


def expected_indicators(
    sites: tuple[SiteSpec, ...], av_state: str, down: frozenset[str] = frozenset()
) -> dict[tuple[str, str], float | None]:
    """Every ``hatang_indicator_ratio{indicator,level}`` the plan implies (None: absent).

    ``down`` names sites whose network classes (except LAN) are not attaining, e.g. a
    commune after a long cut. Units: the province (no agent, no officials) and the sites.
    """
    result: dict[tuple[str, str], float | None] = {}
    for level in LEVELS:
        chosen = [s for s in sites if level in ("all", s.level)]
        province_units = 1 if level in ("all", "province") else 0
        for indicator in INDICATORS:
            value: float | None
            if indicator in UNIT_CLASS:
                network = UNIT_CLASS[indicator]
                attaining = sum(
                    1 for s in chosen if s.up[network] and (network == "lan" or s.key not in down)
                )
                value = attaining / (len(chosen) + province_units)
            elif indicator == "computers_per_official":
                officials = sum(s.officials for s in chosen)
                value = sum(s.computers for s in chosen) / officials if chosen else None
            elif indicator == "computers_connected":
                total = sum(s.computers for s in chosen)
                value = sum(s.connected for s in chosen) / total if chosen else None
            elif indicator == "antivirus_protected":
                reported = sum(s.av_agents for s in chosen)
                protected = reported if av_state == "protected" else 0
                value = protected / reported if reported else None
            elif indicator == "antivirus_managed":
                # ClamAV (or nothing) on these agents: not centrally managed.
                value = 0.0 if sum(s.av_agents for s in chosen) else None
            elif indicator == "computers_patched":
                value = None  # the province's agents run with patches off
            else:  # ipv6 (no global IPv6 in the test bed), security_inspection (none declared)
                value = 0.0
            result[(indicator, level)] = value
    return result


def expected_goals(
    sites: tuple[SiteSpec, ...], av_state: str
) -> dict[tuple[str, str], tuple[float, float | None]]:
    """(goal, measured) per plan goal; goals here have no sector filter."""
    measured = expected_indicators(sites, av_state)
    return {(ind, level): (goal, measured[(ind, level)]) for ind, level, goal in GOALS}


# --------------------------------------------------------------------------- building


@dataclass
class Agent:
    """One running (or stopped) hatang-agent and where its files are."""

    agent_id: str
    site: SiteSpec
    ns: netns.Namespace
    role: Literal["site-probe", "host"]
    config: Path
    spool: Path
    log: Path
    wrapper: tuple[str, ...] = ()  # e.g. ("faketime", "-f", "+3h")
    proc: subprocess.Popen[Any] | None = None

    def start(self) -> None:
        """Start ``python3 -m agent run`` inside the agent's namespace."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        with self.log.open("ab") as out:
            self.proc = self.ns.popen(
                [*self.wrapper, sys.executable, "-m", "agent", "run", "--config", str(self.config)],
                stdout=subprocess.DEVNULL,
                stderr=out,
                cwd=str(Path(__file__).resolve().parents[2]),
            )

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop the agent (SIGTERM: clean; SIGKILL: a crash) and wait for it."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@dataclass
class Uplink:
    """A site router's link to the WAN hub, dedicated or internet router, and its routes."""

    router: netns.Namespace
    router_dev: str
    peer: netns.Namespace
    peer_dev: str
    router_routes: list[tuple[str, str]]  # (destination, via) installed in the site router
    peer_routes: list[tuple[str, str]]  # (destination, via) installed in the peer


@dataclass
class Province:
    """The built province: namespaces, processes, files, and the plan they follow."""

    topo: netns.Topology
    workdir: Path
    sites: tuple[SiteSpec, ...]
    dc: netns.Namespace
    collector_config: Path
    db: Path
    av_state: str = "unknown"
    agents: dict[str, Agent] = field(default_factory=dict)
    routers: dict[str, netns.Namespace] = field(default_factory=dict)
    uplinks: dict[str, list[Uplink]] = field(default_factory=dict)
    hosts: dict[str, netns.Namespace] = field(default_factory=dict)  # agent id -> namespace
    tokens: dict[str, str] = field(default_factory=dict)
    collector: subprocess.Popen[Any] | None = None
    observations: dict[str, Any] = field(default_factory=dict)

    def site(self, key: str) -> SiteSpec:
        return next(s for s in self.sites if s.key == key)

    def site_agents(self, key: str) -> list[Agent]:
        return [a for a in self.agents.values() if a.site.key == key]

    # -- collector ---------------------------------------------------------------------

    def start_collector(self) -> None:
        """Run ``hatang-collector serve`` in the data centre and wait until it answers."""
        assert self.collector is None or self.collector.poll() is not None
        with (self.workdir / "collector.stderr").open("ab") as out:
            self.collector = self.dc.popen(
                [
                    sys.executable,
                    "-m",
                    "collector",
                    "serve",
                    "--config",
                    str(self.collector_config),
                ],
                stdout=subprocess.DEVNULL,
                stderr=out,
            )
        wait_for(lambda: self._healthy(), timeout=60, interval=0.2)

    def _healthy(self) -> bool:
        if self.collector is not None and self.collector.poll() is not None:
            raise RuntimeError(
                "collector exited: " + (self.workdir / "collector.stderr").read_text()[-2000:]
            )
        return self.http("/healthz", check=False) is not None

    def kill_collector(self) -> None:
        """``kill -9`` the collector (``ip netns exec`` execs, so this is the collector)."""
        assert self.collector is not None
        self.collector.send_signal(signal.SIGKILL)
        self.collector.wait(timeout=10)

    def http(self, path: str, *, check: bool = True) -> str | None:
        """GET a collector path from inside the data centre (curl: no packets leave it)."""
        proc = self.dc.exec(
            "curl", "-sS", "--max-time", "10", "-f", f"http://127.0.0.1:{COLLECTOR_PORT}{path}",
            check=False, timeout=30,
        )  # fmt: skip
        if proc.returncode != 0:
            if check:
                raise RuntimeError(f"GET {path} failed: {proc.stderr.strip()}")
            return None
        return proc.stdout

    def metrics(self) -> Metrics:
        """Scrape ``/metrics`` and parse it."""
        text = self.http("/metrics")
        assert text is not None
        return Metrics.parse(text)

    def store(self) -> sqlite3.Connection:
        """The collector's database, read-only (the tests never write to it)."""
        conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=30)
        conn.execute("PRAGMA busy_timeout = 30000")
        return conn

    # -- links -------------------------------------------------------------------------

    def cut(self, key: str) -> None:
        """Cut every uplink of a site's router (as if its fibre was dug up)."""
        for link in self.uplinks[key]:
            link.router.link_down(link.router_dev)

    def restore(self, key: str) -> None:
        """Bring a site's uplinks back and reinstall the routes the kernel flushed."""
        for link in self.uplinks[key]:
            link.router.link_up(link.router_dev)
            for dest, via in link.router_routes:
                link.router.ip("route", "replace", dest, "via", via)
            for dest, via in link.peer_routes:
                link.peer.ip("route", "replace", dest, "via", via)

    def cut_host(self, agent_id: str) -> None:
        """Unplug one PC from its LAN."""
        self.hosts[agent_id].link_down("eth0")

    def restore_host(self, agent_id: str) -> None:
        ns, agent = self.hosts[agent_id], self.agents[agent_id]
        ns.link_up("eth0")
        ns.ip("route", "replace", "default", "via", f"10.64.{agent.site.number}.1")

    def close(self) -> None:
        """Stop every agent and the collector cleanly where possible, then delete it all."""
        for agent in self.agents.values():
            if agent.running and agent.proc is not None:
                agent.proc.terminate()
        if self.collector is not None and self.collector.poll() is None:
            self.collector.terminate()
        deadline = time.monotonic() + 15
        for proc in [a.proc for a in self.agents.values()] + [self.collector]:
            if proc is not None and proc.poll() is None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        self.topo.close()


@dataclass
class Metrics:
    """One scrape: ``value(name, **labels)``; counters are looked up with ``_total``."""

    samples: dict[tuple[str, frozenset[tuple[str, str]]], float]

    @classmethod
    def parse(cls, text: str) -> Metrics:
        samples = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
        return cls(samples)

    def value(self, name: str, **labels: str) -> float | None:
        return self.samples.get((name, frozenset(labels.items())))

    def series(self, name: str) -> dict[frozenset[tuple[str, str]], float]:
        return {labels: v for (n, labels), v in self.samples.items() if n == name}


def _write_yaml(path: Path, data: Any) -> Path:
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


def org_document(sites: tuple[SiteSpec, ...]) -> dict[str, Any]:
    units: list[dict[str, Any]] = [{"id": PROVINCE_ID, "name": "Tỉnh Lam Sơn", "level": "province"}]
    for s in sites:
        units.append(
            {
                "id": s.unit_id,
                "name": s.name,
                "level": s.level,
                "parent": PROVINCE_ID,
                "officials": s.officials,
            }
        )
    return {"province": PROVINCE_ID, "name": "Tỉnh Lam Sơn", "units": units}


def targets_document() -> dict[str, Any]:
    return {
        "plan": PLAN,
        "province": PROVINCE_ID,
        "title": "Kế hoạch kiểm thử đầu cuối",
        "reference": "Kế hoạch thử nghiệm (tests/e2e)",
        "goals": [
            {"indicator": ind, "level": level, "goal": goal, "deadline": 2030}
            for ind, level, goal in GOALS
        ],
    }


def collector_document(workdir: Path) -> dict[str, Any]:
    return {
        "listen": {"host": "0.0.0.0", "port": COLLECTOR_PORT},
        "store": {"url": f"sqlite:///{(workdir / 'collector.db').as_posix().lstrip('/')}"},
        "org": "org.yaml",
        "targets": ["targets.yaml"],
        "window": {"duration": f"{WINDOW:g}s", "up_ratio": UP_RATIO, "bucket": f"{BUCKET:g}s"},
        "site_up_after_intervals": 3,
        "clock_skew": {"max_future": "5m"},
        "metrics": {"refresh_interval": "1s", "min_refresh_interval": "500ms"},
        "log": {"level": "info", "file": str(workdir / "collector.log")},
    }


def agent_document(
    site: SiteSpec,
    agent_id: str,
    role: str,
    token: str,
    spool: Path,
    *,
    antivirus: bool = False,
    spool_max: str = "50MB",
    batch_max_reports: int = 20,
) -> dict[str, Any]:
    """An agent's config: every class configured (the province configures all four)."""
    n = site.number
    doc: dict[str, Any] = {
        "site": site.unit_id,
        "role": role,
        "interval": f"{INTERVAL:g}s",
        "jitter": 0,
        "agent_id": agent_id,
        "collector": {
            "url": [WAN_URL, INTERNET_URL],
            # The namespaces' links are the test's own; TLS is proven by test_tls.py.
            "allow_insecure": True,
            "token": token,
            "timeout": "5s",
            "retry_initial": "500ms",
            "retry_max": "2s",
            "batch_max_reports": batch_max_reports,
        },
        "spool": {"path": str(spool), "max_size": spool_max},
        "networks": {
            "lan": {
                "targets": [
                    {
                        "kind": "icmp",
                        "address": f"10.64.{n}.1",
                        "count": 2,
                        "interval": "100ms",
                        "timeout": "1s",
                    }
                ]
            },
            "wan": {
                "targets": [
                    {"kind": "tcp", "address": f"10.60.0.10:{COLLECTOR_PORT}", "timeout": "1s"}
                ]
            },
            "dedicated": {
                "targets": [
                    {"kind": "tcp", "address": f"{GOV_HOST}:80", "timeout": "1s"},
                    {"kind": "http", "address": f"http://{GOV_HOST}/", "timeout": "1s"},
                ]
            },
            "internet": {
                "targets": [
                    {
                        "kind": "dns",
                        "address": DNS_SERVER,
                        "query": "dichvucong.gov.vn",
                        "timeout": "1s",
                    },
                    {"kind": "http", "address": f"http://{WEB_SERVER}/", "timeout": "1s"},
                ]
            },
        },
        "inventory": {"enabled": True, "interval": "1h"},
        "antivirus": {"enabled": antivirus, "interval": "1h"},
        "patches": {"enabled": False},  # apt-get -s per agent would only slow the province down
        "log": {"level": "info"},
    }
    if role == "site-probe":
        doc["discovery"] = {
            "enabled": True,
            "interval": "30s",
            "interface": "eth0",
            "subnets": [f"10.64.{n}.0/24"],
            "retries": 1,
            "timeout": "300ms",
        }
    return doc


def _mac(oui: str, site: int, host: int) -> str:
    return f"{oui}:{site:02x}:{host:02x}:01"


def _nft(ns: netns.Namespace, workdir: Path, dev: str) -> None:
    """Masquerade the site's LAN behind its internet address, as an office router does."""
    rules = workdir / f"{ns.short}-nat.nft"
    rules.write_text(
        "table ip nat {\n  chain post {\n    type nat hook postrouting priority 100;\n"
        f'    oifname "{dev}" masquerade\n  }}\n}}\n',
        encoding="utf-8",
    )
    ns.exec("nft", "-f", str(rules))


def missing_tools() -> str | None:
    """Why the test bed cannot be built here, or None."""
    reason = netns.available()
    if reason:
        return reason
    for tool in ("dnsmasq", "nft", "curl", "faketime"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (Debian packages dnsmasq-base nftables curl faketime)"
    return None


def _link(
    topo: netns.Topology,
    router: netns.Namespace,
    peer: netns.Namespace,
    subnet: str,
    router_dev: str,
    peer_dev: str,
) -> None:
    """A point-to-point link: peer is .1, the site router .2."""
    topo.link(peer, router, f"{subnet}.1/24", f"{subnet}.2/24", a_dev=peer_dev, b_dev=router_dev)


def build(topo: netns.Topology, workdir: Path, sites: tuple[SiteSpec, ...] = PROVINCE) -> Province:
    """Build the namespaces and services, start the collector (agents start separately)."""
    dc = topo.add("dc")
    hub = topo.add("hub", forward=True)
    ded = topo.add("ded", forward=True)
    inet = topo.add("inet", forward=True)
    gov = topo.add("gov")
    isp = topo.add("isp")
    topo.link(hub, dc, "10.60.0.1/24", "10.60.0.10/24", a_dev="dc", b_dev="wan")
    topo.link(inet, dc, "10.70.0.1/24", "10.70.0.10/24", a_dev="dc", b_dev="inet")
    topo.link(hub, ded, "10.60.1.1/24", "10.60.1.2/24", a_dev="ded", b_dev="hub")
    topo.link(ded, gov, "10.62.0.1/24", f"{GOV_HOST}/24", a_dev="gov", b_dev="eth0")
    topo.link(inet, isp, "10.71.0.1/24", f"{DNS_SERVER}/24", a_dev="isp", b_dev="eth0")
    isp.ip("addr", "add", f"{WEB_SERVER}/24", "dev", "eth0")
    dc.ip("route", "add", "default", "via", "10.70.0.1")
    dc.ip("route", "add", "10.64.0.0/16", "via", "10.60.0.1")
    ded.ip("route", "add", "10.60.0.0/24", "via", "10.60.1.1")
    gov.ip("route", "add", "default", "via", "10.62.0.1")
    isp.ip("route", "add", "default", "via", "10.71.0.1")

    province = Province(
        topo=topo,
        workdir=workdir,
        sites=sites,
        dc=dc,
        collector_config=workdir / "collector.yaml",
        db=workdir / "collector.db",
    )
    for site in sites:
        _build_site(province, site, hub, ded, inet)

    # The internet's DNS and web server, and the government service (tcp/http).
    server = [sys.executable, "-m", "tests.agent.probes.servers", "http"]
    repo = str(Path(__file__).resolve().parents[2])
    dns_log = (workdir / "dnsmasq.log").open("ab")
    isp.popen(
        ["dnsmasq", "--no-daemon", "--no-resolv", "--no-hosts", "--conf-file=/dev/null",
         "--pid-file=", "--port=53", f"--listen-address={DNS_SERVER}", "--bind-interfaces",
         "--local=/gov.vn/", f"--address=/dichvucong.gov.vn/{WEB_SERVER}"],
        stdout=subprocess.DEVNULL, stderr=dns_log,
    )  # fmt: skip
    for ns, bind in ((isp, WEB_SERVER), (gov, GOV_HOST)):
        ns.popen(
            [*server, "--bind", bind, "--port", "80"],
            cwd=repo,
            stdout=subprocess.DEVNULL,
            stderr=(workdir / f"{ns.short}-http.log").open("ab"),
        )

    _write_yaml(workdir / "org.yaml", org_document(sites))
    _write_yaml(workdir / "targets.yaml", targets_document())
    _write_yaml(province.collector_config, collector_document(workdir))
    _create_tokens(province)
    province.start_collector()
    wait_for(lambda: _serving(gov, GOV_HOST) and _serving(isp, WEB_SERVER), timeout=30)
    province.av_state = _antivirus_state(province)
    _write_agent_configs(province)
    return province


def _serving(ns: netns.Namespace, address: str) -> bool:
    proc = ns.exec("curl", "-sS", "--max-time", "2", "-o", "/dev/null", f"http://{address}/",
                   check=False, timeout=10)  # fmt: skip
    return proc.returncode == 0


def _build_site(
    province: Province,
    site: SiteSpec,
    hub: netns.Namespace,
    ded: netns.Namespace,
    inet: netns.Namespace,
) -> None:
    topo, n, key = province.topo, site.number, site.key
    router = topo.add(f"r{key}", forward=True)
    province.routers[key] = router
    lan = f"10.64.{n}.0/24"
    uplinks: list[Uplink] = []
    if site.wan == "hub":
        _link(topo, router, hub, f"10.61.{n}", "wan", f"s{key}")
        uplinks.append(
            Uplink(router, "wan", hub, f"s{key}",
                   [("10.60.0.0/24", f"10.61.{n}.1")], [(lan, f"10.61.{n}.2")])
        )  # fmt: skip
    if site.dedicated or site.wan == "dedicated":
        _link(topo, router, ded, f"10.63.{n}", "ded", f"s{key}")
        routes = [("10.62.0.0/24", f"10.63.{n}.1")] if site.dedicated else []
        hub_routes: list[tuple[str, str]] = []
        if site.wan == "dedicated":
            routes.append(("10.60.0.0/24", f"10.63.{n}.1"))
            # The hub reaches this site's LAN through the dedicated router.
            hub.ip("route", "add", lan, "via", "10.60.1.2")
            hub_routes = [(lan, "10.60.1.2")]
        uplinks.append(Uplink(router, "ded", ded, f"s{key}", routes, [(lan, f"10.63.{n}.2")]))
        if hub_routes:
            uplinks.append(Uplink(router, "ded", hub, "ded", [], hub_routes))
    if site.internet:
        _link(topo, router, inet, f"10.72.{n}", "inet", f"s{key}")
        uplinks.append(Uplink(router, "inet", inet, f"s{key}", [("default", f"10.72.{n}.1")], []))
        _nft(router, province.workdir, "inet")
    for link in uplinks:
        for dest, via in link.router_routes:
            router.ip("route", "replace", dest, "via", via)
        for dest, via in link.peer_routes:
            link.peer.ip("route", "replace", dest, "via", via)
    province.uplinks[key] = uplinks

    topo.bridge(router, "br0", f"10.64.{n}.1/24")
    router.ip("link", "set", "br0", "address", _mac(ROUTER_OUI, n, 1))
    members: list[tuple[str, int, str]] = [("p", 2, PC_OUI)]
    members += [(f"h{i}", 10 + i, PC_OUI) for i in range(site.host_agents)]
    members += [(f"pc{i}", 20 + i, PC_OUI) for i in range(site.plain_pcs)]
    members += [(f"pr{i}", 30 + i, PRINTER_OUI) for i in range(site.printers)]
    for name, host, oui in members:
        ns = topo.add(f"{key}{name}")
        topo.attach(router, "br0", ns, f"10.64.{n}.{host}/24")
        ns.ip("link", "set", "eth0", "address", _mac(oui, n, host))
        ns.ip("route", "add", "default", "via", f"10.64.{n}.1")
        if name == "p" or name.startswith("h"):
            province.hosts[f"{key}-{name}"] = ns


def _create_tokens(province: Province) -> None:
    """One token per site with the real ``hatang-collector token create`` (in parallel)."""
    procs = {
        site.unit_id: subprocess.Popen(
            [
                sys.executable,
                "-m",
                "collector",
                "token",
                "create",
                "--config",
                str(province.collector_config),
                "--site",
                site.unit_id,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for site in province.sites
    }
    for unit_id, proc in procs.items():
        out, err = proc.communicate(timeout=120)
        if proc.returncode != 0:
            raise RuntimeError(f"token create {unit_id}: {err.strip()}")
        province.tokens[unit_id] = out.strip().splitlines()[-1]


def _antivirus_state(province: Province) -> str:
    """This machine's antivirus state as the agent itself reports it (ClamAV or missing)."""
    config = _write_yaml(
        province.workdir / "av-check.yaml",
        {"site": province.sites[0].unit_id, "inventory": {"enabled": False},
         "antivirus": {"enabled": True}, "patches": {"enabled": False}},
    )  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-m", "agent", "check", "--config", str(config), "--json"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    if proc.returncode not in (0, 1):
        raise RuntimeError(f"agent check failed: {proc.stderr.strip()}")
    state: str = json.loads(proc.stdout)["antivirus"]["state"]
    return state


def _write_agent_configs(province: Province) -> None:
    workdir = province.workdir
    for site in province.sites:
        token = province.tokens[site.unit_id]
        ids = [(f"{site.key}-p", "site-probe", False)]
        ids += [(f"{site.key}-h{i}", "host", i < site.av_agents) for i in range(site.host_agents)]
        for agent_id, role, antivirus in ids:
            spool = workdir / f"{agent_id}.spool.db"
            # The spool-full fault uses c7's host agent: a bound at the configured minimum.
            spool_max = "1MB" if agent_id == "c7-h0" else "50MB"
            config = _write_yaml(
                workdir / f"{agent_id}.yaml",
                agent_document(site, agent_id, role, token, spool, antivirus=antivirus,
                               spool_max=spool_max),
            )  # fmt: skip
            province.agents[agent_id] = Agent(
                agent_id=agent_id,
                site=site,
                ns=province.hosts[agent_id],
                role=role,  # type: ignore[arg-type]
                config=config,
                spool=spool,
                log=workdir / f"{agent_id}.log",
            )


def add_agent(
    province: Province, site: SiteSpec, agent_id: str, ns: netns.Namespace, **kwargs: Any
) -> Agent:
    """An extra host agent on an existing PC (e.g. one with a skewed clock)."""
    spool = province.workdir / f"{agent_id}.spool.db"
    config = _write_yaml(
        province.workdir / f"{agent_id}.yaml",
        agent_document(site, agent_id, "host", province.tokens[site.unit_id], spool),
    )
    agent = Agent(agent_id, site, ns, "host", config, spool, province.workdir / f"{agent_id}.log",
                  **kwargs)  # fmt: skip
    province.agents[agent_id] = agent
    return agent


@contextlib.contextmanager
def province_in_a_box(workdir: Path) -> Iterator[Province]:
    """Build the province and start every agent; tear it all down afterwards."""
    topo = netns.Topology("-e2e")
    province: Province | None = None
    try:
        province = build(topo, workdir)
        for agent in province.agents.values():
            agent.start()
        yield province
    finally:
        if province is not None:
            province.close()
        else:
            topo.close()


# --------------------------------------------------------------------------- ledgers


def spool_state(path: Path) -> tuple[set[int], int, int]:
    """(queued seqs, next seq, dropped total) of an agent's spool, read-only."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        conn.execute("PRAGMA busy_timeout = 30000")
        queued = {row[0] for row in conn.execute("SELECT seq FROM queue")}
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        return queued, int(meta["next_seq"]), int(meta["dropped_total"])
    finally:
        conn.close()


def stored_seqs(province: Province, agent_id: str) -> list[int]:
    """Every seq the collector stored for one agent (with repeats, if there were any)."""
    conn = province.store()
    try:
        return [
            row[0]
            for row in conn.execute(
                "SELECT seq FROM reports WHERE agent_id = ? ORDER BY seq", (agent_id,)
            )
        ]
    finally:
        conn.close()


@dataclass(frozen=True)
class Ledger:
    """One agent's books: what it made, what the collector holds, what is still queued."""

    agent_id: str
    made: int  # seqs 1 .. made
    stored: list[int]
    queued: set[int]
    dropped: int

    @property
    def duplicates(self) -> list[int]:
        return sorted({s for s in self.stored if self.stored.count(s) > 1})

    @property
    def lost(self) -> list[int]:
        """Seqs neither stored nor queued (the spool's counted drops excepted, see below)."""
        return sorted(set(range(1, self.made + 1)) - set(self.stored) - self.queued)


def ledger(province: Province, agent_id: str) -> Ledger:
    """Read the spool first, then the store: a seq acked before the spool read is stored."""
    queued, next_seq, dropped = spool_state(province.agents[agent_id].spool)
    return Ledger(agent_id, next_seq - 1, stored_seqs(province, agent_id), queued, dropped)


def drained(province: Province, agent_ids: list[str] | None = None) -> bool:
    """Whether the given (default: all running) agents have empty spools."""
    ids = agent_ids or [a.agent_id for a in province.agents.values() if a.running]
    return all(not spool_state(province.agents[i].spool)[0] for i in ids)
