"""The site-probe daemon sweeps in a child: its report has the LAN, its process no scapy.

The daemon runs inside a test namespace (the sweep stays on the test's veth pair) until
a spooled report carries ``lan_hosts``; then the driver records the daemon's modules and
stops it with SIGTERM.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests import netns

pytestmark = pytest.mark.netns

REPO = Path(__file__).resolve().parents[3]

# argv[1]: config path, argv[2]: spool path. Prints {"code", "scapy", "lan"} last.
DRIVER = r"""
import json, os, signal, sqlite3, sys, threading, time
config, spool = sys.argv[1], sys.argv[2]
found = {}
def watch():
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and not found:
        time.sleep(0.2)
        try:
            with sqlite3.connect(f"file:{spool}?mode=ro", uri=True, timeout=1) as db:
                bodies = [b for (b,) in db.execute("SELECT body FROM queue")]
        except sqlite3.Error:
            continue
        for body in bodies:
            lan = json.loads(body).get("lan_hosts")
            if lan:
                found.update(lan=lan, scapy="scapy" in sys.modules)
    os.kill(os.getpid(), signal.SIGTERM)
threading.Thread(target=watch, daemon=True).start()
from agent.cli import main
code = main(["run", "--config", config])
print(json.dumps({"code": code, **found}))
"""


def test_site_probe_daemon_reports_the_lan_without_loading_scapy(
    topo: netns.Topology, tmp_path: Path
) -> None:
    office, peer = topo.add("dch"), topo.add("peer")
    topo.link(office, peer, "10.34.0.2/24", "10.34.0.3/24", a_dev="eth0", b_dev="eth0")
    spool, token = tmp_path / "spool.db", tmp_path / "token"
    token.write_text("t0ken\n", encoding="utf-8")
    config = tmp_path / "agent.yaml"
    config.write_text(
        "site: bac-kan/cho-don/bang-lung\nrole: site-probe\ninterval: 1s\n"
        f"spool: {{path: {spool}}}\n"
        # the namespace's own loopback, nothing listening: reports stay in the spool
        f"collector: {{url: 'http://127.0.0.1:9', token_file: {token}}}\n"
        "networks: {lan: {targets: [{kind: icmp, address: 10.34.0.3, count: 1}]}}\n"
        "inventory: {enabled: false}\nantivirus: {enabled: false}\n"
        "discovery: {interface: eth0, subnets: [10.34.0.0/28], retries: 0}\n",
        encoding="utf-8",
    )
    result = office.exec(
        sys.executable, "-c", DRIVER, str(config), str(spool), check=False, timeout=180
    )
    assert result.stdout.strip(), result.stderr
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome["code"] == 0, result.stderr[-2000:]
    assert outcome["scapy"] is False
    lan = outcome["lan"]
    assert lan["error"] is None and lan["subnets"] == ["10.34.0.0/28"]
    assert {h["ip"] for h in lan["hosts"] if "arp" in h["sources"]} == {"10.34.0.3"}
