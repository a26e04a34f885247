"""The host role stays light: scapy, pysnmp and aiohttp are never imported.

Lighter boundaries (docs/agent-footprint.md): dnspython only for a dns target,
``shutil`` never, and ``http.client`` (with the email package) only for an http target
or the sender.

Each scenario runs in a fresh interpreter (a ``python -c`` driver calling
``agent.cli.main``) and reports the modules loaded afterwards. The site-probe role
loads scapy only when discovery actually runs: the last test proves the check can see
an import at all, inside a namespace so the ARP sweep stays on a test network.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests import netns

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("scapy", "pysnmp", "aiohttp")

# argv[1]: JSON list of cli arguments; argv[2]: spool path to wait for before SIGTERM
# (run only). Prints {"code": ..., "modules": [...], "rss_kib": ...} as the last line.
DRIVER = r"""
import json, os, signal, sys, threading, time, io
preloaded = {m.split(".")[0] for m in sys.modules}  # e.g. site .pth files import shutil
args, spool = json.loads(sys.argv[1]), sys.argv[2]
if spool:
    def stop():
        deadline = time.monotonic() + 60
        while not os.path.exists(spool) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGTERM)
    threading.Thread(target=stop, daemon=True).start()
sys.stdout = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")  # the report is not the point
from agent.cli import main
code = main(args)
sys.stdout = sys.__stdout__
rss = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmRSS:"))
top = {m.split(".")[0] for m in sys.modules}
heavy = sorted(top & {"scapy", "pysnmp", "aiohttp"})
lazy = sorted((top - preloaded) & {"dns", "http", "email", "shutil"})
if "dns" in lazy and "shutil" in lazy:
    lazy.remove("shutil")  # some dnspython versions import it; ours must not
print(json.dumps({"code": code, "modules": heavy, "lazy": lazy, "rss_kib": rss}))
"""


def drive(args: list[str], spool: str = "", ns: netns.Namespace | None = None) -> dict[str, Any]:
    command = [sys.executable, "-c", DRIVER, json.dumps(args), spool]
    if ns is None:
        result = subprocess.run(command, capture_output=True, text=True, timeout=180, cwd=REPO)
    else:
        result = ns.exec(*command, check=False, timeout=180)
    assert result.stdout.strip(), result.stderr
    outcome: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    assert "Traceback" not in result.stderr, result.stderr
    return outcome


def _config(tmp_path: Path, port: int, extra: str = "") -> Path:
    path = tmp_path / "agent.yaml"
    path.write_text(
        "site: bac-kan/cho-don/bang-lung\n"
        "networks:\n"
        f'  lan: {{targets: [{{kind: tcp, address: "127.0.0.1:{port}"}}]}}\n'
        f'  internet: {{targets: [{{kind: http, address: "http://127.0.0.1:{port}/",'
        " timeout: 1s}, {kind: dns, address: '127.0.0.1:" + str(port) + "', query: a.vn,"
        " timeout: 1s}, {kind: icmp, address: 127.0.0.1, count: 2}]}\n" + extra,
        encoding="utf-8",
    )
    return path


def test_host_check_imports_nothing_heavy(tmp_path: Path, listener: int) -> None:
    """Every host section (all probe kinds, inventory, antivirus, firewall) runs."""
    outcome = drive(["check", "--config", str(_config(tmp_path, listener)), "--json"])
    assert outcome["code"] in (0, 1)
    assert outcome["modules"] == []
    # The dns target needed dnspython; the http target needed http.client.
    assert outcome["lazy"] == ["dns", "email", "http"]


def test_host_throughput_check_imports_nothing_heavy(tmp_path: Path, listener: int) -> None:
    """A host configured to test line speed uses the same standard-library client."""
    extra = (
        "throughput: {roles: [host], max_duration: 2s, stall_timeout: 1s,"
        f" targets: [{{url: 'http://127.0.0.1:{listener}/payload'}}]}}\n"
    )
    outcome = drive(["check", "--config", str(_config(tmp_path, listener, extra))])
    assert outcome["code"] in (0, 1)
    assert outcome["modules"] == []


def test_check_without_http_or_dns_target_loads_neither(tmp_path: Path, listener: int) -> None:
    """http.client, email and dnspython come with their targets, not before."""
    config = tmp_path / "agent.yaml"
    config.write_text(
        "site: bac-kan/cho-don/bang-lung\n"
        "networks:\n"
        f'  lan: {{targets: [{{kind: tcp, address: "127.0.0.1:{listener}"}}]}}\n'
        "  internet: {targets: [{kind: icmp, address: 127.0.0.1, count: 2}]}\n",
        encoding="utf-8",
    )
    outcome = drive(["check", "--config", str(config)])
    assert outcome["code"] in (0, 1)
    assert (outcome["modules"], outcome["lazy"]) == ([], [])


def test_host_run_imports_nothing_heavy(tmp_path: Path, listener: int) -> None:
    """The daemon, with its spool and sender, until a report is spooled and SIGTERM."""
    spool, token = tmp_path / "spool.db", tmp_path / "token"
    token.write_text("t0ken\n", encoding="utf-8")
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{closed.getsockname()[1]}"
    extra = f"collector: {{url: '{url}', token_file: {token}}}\nspool: {{path: {spool}}}\n"
    config = _config(tmp_path, listener, extra)
    outcome = drive(["run", "--config", str(config)], spool=str(spool))
    assert outcome["code"] == 0
    assert outcome["modules"] == []
    assert outcome["lazy"] == ["dns", "email", "http"]  # dns target; the sender's http.client


def test_site_probe_without_discovery_imports_nothing_heavy(tmp_path: Path, listener: int) -> None:
    config = _config(tmp_path, listener, "role: site-probe\ndiscovery: {enabled: false}\n")
    outcome = drive(["check", "--config", str(config)])
    assert outcome["code"] in (0, 1)
    assert outcome["modules"] == []


@pytest.mark.netns
def test_site_probe_loads_scapy_only_when_discovery_runs(
    topo: netns.Topology, tmp_path: Path
) -> None:
    """Positive control: with discovery on, the same driver does see scapy."""
    office, peer = topo.add("imp"), topo.add("peer")
    topo.link(office, peer, "10.33.0.2/24", "10.33.0.3/24", a_dev="eth0", b_dev="eth0")
    config = tmp_path / "agent.yaml"
    config.write_text(
        "site: bac-kan/cho-don/bang-lung\nrole: site-probe\n"
        "networks: {lan: {targets: [{kind: icmp, address: 10.33.0.3, count: 2}]}}\n"
        "inventory: {enabled: false}\nantivirus: {enabled: false}\npatches: {enabled: false}\n"
        "discovery: {interface: eth0, subnets: [10.33.0.0/28], retries: 0}\n",
        encoding="utf-8",
    )
    outcome = drive(["check", "--config", str(config)], ns=office)
    assert outcome["code"] == 0
    assert outcome["modules"] == ["scapy"]
