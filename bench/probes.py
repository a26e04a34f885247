"""Probe accuracy against fping and probe time against blackbox_exporter, in namespaces.

Two namespaces joined by a veth (client 10.93.0.1, target 10.93.0.2). The target runs
an HTTP server, a TCP listener and dnsmasq. Loss is injected by nftables in the target
namespace (``numgen random mod 100 < N drop`` on echo requests; this kernel has no
netem). For each loss level, hatang's icmp probe and ``fping -C`` each send the same
number of echoes at the same pace, five runs each; the medians are compared.

Probe time: the same four targets (icmp with one echo, tcp, dns, http) probed
concurrently by hatang's runner (in-process, after a warm-up) and by blackbox_exporter
(the bench's client asks ``/probe`` for all four at once), wall time of the round,
median of the runs. blackbox listens on the client namespace's own 127.0.0.1.

Run as root: ``python3 bench/probes.py [--quick]``.
"""

from __future__ import annotations

import json
import re
import statistics
import sys
import tempfile
import time
from subprocess import DEVNULL

from common import BLACKBOX_YML, REPO, Row, ensure_tools, finish, need_root, parser, ratio, verdict

from tests import netns

CLIENT, TARGET = "10.93.0.1", "10.93.0.2"
BLACKBOX = "/usr/bin/prometheus-blackbox-exporter"
RTT_TOLERANCE = (0.1e-3, 0.25)  # agree within 0.1 ms or 25 %, whichever is larger
LOSS_TOLERANCE = 0.05  # absolute

HATANG_ICMP = """
import asyncio, json, sys
from agent.config import parse_config
from agent.runner import run_targets
count, interval = int(sys.argv[1]), float(sys.argv[2])
cfg = parse_config({"site": "demo/x", "networks": {"lan": {"targets": [
    {"kind": "icmp", "address": sys.argv[3], "count": count, "interval": interval,
     "timeout": count * interval + 2}]}}})
[r] = asyncio.run(run_targets(cfg.networks.lan.targets))
print(json.dumps({"rtt": r.rtt_seconds, "loss": r.loss_ratio, "method": r.method}))
"""

ROUND = """
import asyncio, concurrent.futures, json, re, sys, time, urllib.request
from agent.config import parse_config
from agent.runner import run_targets
target, runs, bb = sys.argv[1], int(sys.argv[2]), sys.argv[3]
targets = [
    {"kind": "icmp", "address": target, "count": 1},
    {"kind": "tcp", "address": f"{target}:8081"},
    {"kind": "dns", "address": target, "query": "dichvucong.gov.vn", "name": "dns"},
    {"kind": "http", "address": f"http://{target}:8080/"},
]
def config(default_icmp):
    t = [dict(x) for x in targets]
    if default_icmp:
        t[0].pop("count")
    return parse_config({"site": "demo/x", "networks": {"lan": {"targets": t}}})
async def rounds(cfg):
    out = []
    await run_targets(cfg.networks.lan.targets)  # warm-up: imports, first sockets
    for _ in range(runs):
        began = time.perf_counter()
        results = await run_targets(cfg.networks.lan.targets)
        out.append(time.perf_counter() - began)
        assert all(r.up for r in results), results
    return out
hatang = asyncio.run(rounds(config(False)))
hatang_default = asyncio.run(rounds(config(True)))
probes = [("icmp", target), ("tcp", f"{target}:8081"), ("dns", target),
          ("http", f"http://{target}:8080/")]
def ask(p):
    url = f"{bb}/probe?module={p[0]}&target={p[1]}"
    body = urllib.request.urlopen(url, timeout=10).read().decode()
    assert "probe_success 1" in body, (p, body[-300:])
    return float(re.search(r"^probe_duration_seconds (\\S+)", body, re.M).group(1))
with concurrent.futures.ThreadPoolExecutor(4) as pool:
    list(pool.map(ask, probes))
    blackbox, inner = [], []
    for _ in range(runs):
        began = time.perf_counter()
        durations = list(pool.map(ask, probes))
        blackbox.append(time.perf_counter() - began)
        inner.append(max(durations))
print(json.dumps({"hatang": hatang, "hatang_default": hatang_default,
                  "blackbox": blackbox, "blackbox_inner": inner}))
"""


def set_loss(target: netns.Namespace, percent: int) -> None:
    target.exec("nft", "delete", "table", "inet", "bench", check=False)
    if percent:
        target.exec(
            "nft",
            "add table inet bench; add chain inet bench input { type filter hook input "
            "priority 0; }; add rule inet bench input icmp type echo-request "
            f"numgen random mod 100 < {percent} drop",
        )


def fping(client: netns.Namespace, count: int, interval: float) -> tuple[float | None, float]:
    """(mean RTT seconds, loss ratio) from ``fping -C``."""
    proc = client.exec(
        "fping", "-C", str(count), "-p", str(int(interval * 1000)), "-q", TARGET, check=False
    )
    values = proc.stderr.split(":", 1)[1].split()
    rtts = [float(v) / 1000 for v in values if v != "-"]
    return (statistics.mean(rtts) if rtts else None), 1 - len(rtts) / count


def hatang(client: netns.Namespace, count: int, interval: float) -> tuple[float | None, float]:
    proc = client.exec(
        sys.executable, "-c", HATANG_ICMP, str(count), str(interval), TARGET, timeout=120
    )
    data = json.loads(proc.stdout)
    if not str(data["method"]).startswith("icmp"):
        sys.exit(f"hatang's icmp probe used {data['method']}, not ICMP: run as root")
    return data["rtt"], float(data["loss"])


def agree_rtt(a: float, b: float) -> bool:
    return abs(a - b) <= max(RTT_TOLERANCE[0], RTT_TOLERANCE[1] * b)


def main() -> None:
    args = parser(__doc__).parse_args()
    need_root()
    if reason := netns.available():
        sys.exit(reason)
    ensure_tools("fping", "prometheus-blackbox-exporter", "nft", "dnsmasq")
    runs = 5
    count, interval = (50, 0.02) if args.quick else (100, 0.02)
    rows: list[Row] = []
    with netns.topology("-probes") as topo, tempfile.TemporaryDirectory() as tmp:
        client, target = topo.add("cli"), topo.add("tgt")
        topo.link(client, target, f"{CLIENT}/24", f"{TARGET}/24")
        py = sys.executable
        target.popen([py, "-m", "tests.agent.probes.servers", "http", "--bind", TARGET,
                      "--port", "8080"], cwd=REPO, stdout=DEVNULL, stderr=DEVNULL)  # fmt: skip
        target.popen([py, "-m", "tests.agent.probes.servers", "tcp", "--bind", TARGET,
                      "--port", "8081"], cwd=REPO, stdout=DEVNULL, stderr=DEVNULL)  # fmt: skip
        target.popen(
            ["dnsmasq", "--no-daemon", "--no-resolv", "--no-hosts", "--conf-file=/dev/null",
             "--pid-file=", "--port=53", f"--listen-address={TARGET}", "--bind-interfaces",
             "--local=/gov.vn/", "--address=/dichvucong.gov.vn/10.93.0.80", "--user=root"],
            stdout=DEVNULL, stderr=DEVNULL,
        )  # fmt: skip
        conf = f"{tmp}/blackbox.yml"
        with open(conf, "w", encoding="utf-8") as f:
            f.write(BLACKBOX_YML)
        client.popen([BLACKBOX, f"--config.file={conf}", "--web.listen-address=127.0.0.1:9115"],
                     stdout=DEVNULL, stderr=DEVNULL)  # fmt: skip
        netns.wait_for(
            lambda: client.exec("fping", "-q", TARGET, check=False).returncode == 0, timeout=20
        )
        time.sleep(1.0)  # servers and blackbox listening

        for percent in (0, 20):
            set_loss(target, percent)
            ours = [hatang(client, count, interval) for _ in range(runs)]
            ref = [fping(client, count, interval) for _ in range(runs)]
            h_rtt = statistics.median(r for r, _ in ours if r is not None)
            f_rtt = statistics.median(r for r, _ in ref if r is not None)
            h_loss = statistics.median(loss for _, loss in ours)
            f_loss = statistics.median(loss for _, loss in ref)
            label = f"{count} echoes / {interval * 1000:g} ms, {percent} % dropped"
            rows.append(Row("probe accuracy", f"icmp mean RTT (µs; {label})",
                            f"{h_rtt * 1e6:.0f}", f"fping {f_rtt * 1e6:.0f}",
                            ratio(h_rtt, f_rtt), "±0.1 ms or ±25 %",
                            verdict(agree_rtt(h_rtt, f_rtt))))  # fmt: skip
            rows.append(Row("probe accuracy", f"icmp loss ({label})", f"{h_loss:.1%}",
                            f"fping {f_loss:.1%}", "-", "±5 points",
                            verdict(abs(h_loss - f_loss) <= LOSS_TOLERANCE)))  # fmt: skip
        set_loss(target, 0)
        proc = client.exec(py, "-c", ROUND, TARGET, str(runs), "http://127.0.0.1:9115",
                           timeout=300)  # fmt: skip
        data = json.loads(proc.stdout)
    h = statistics.median(data["hatang"])
    b = statistics.median(data["blackbox"])
    rows.append(Row("probe cost", "round of 4 targets (icmp×1, tcp, dns, http), wall ms",
                    f"{h * 1000:.1f}", f"blackbox {b * 1000:.1f}", ratio(h, b),
                    "≤ blackbox", verdict(h <= b)))  # fmt: skip
    inner = statistics.median(data["blackbox_inner"]) * 1000
    default = statistics.median(data["hatang_default"]) * 1000
    rows.append(Row("probe cost", "same round, hatang's default icmp (5 echoes / 200 ms)",
                    f"{default:.0f}", f"blackbox probe_duration max {inner:.1f}"))  # fmt: skip
    notes = [
        f"veth RTT is tens of microseconds: the RTT tolerance is absolute there. Loss runs: "
        f"{runs} × {count} echoes each tool (median).",
        re.sub(
            r"\s+",
            " ",
            "blackbox round: the bench's client in the client namespace asks "
            "/probe for the four targets at once (HTTP round trip included).",
        ),
    ]
    finish(args, rows, notes)


if __name__ == "__main__":
    main()
