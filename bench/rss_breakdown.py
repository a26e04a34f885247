"""Where the host role's resident memory goes: module by module, and mapping by mapping.

No network at all. Two parts:

* the RSS each dependency adds to a bare interpreter (``python -c 'import X'`` in a
  fresh process, VmRSS after minus before; what two modules share, such as libcrypto
  for ``ssl`` and ``hashlib``, counts in both);
* ``hatang-agent run`` in the host role (icmp and tcp to 127.0.0.1, an http target
  on a closed loopback port, a closed loopback collector), stopped 3 s after its
  first report is spooled: VmRSS, anonymous vs file-backed pages, threads, modules,
  and the largest mappings of /proc/self/smaps.

Run as root (icmp): ``python3 bench/rss_breakdown.py``; median of ``--runs`` (5);
``--no-release`` turns agent/memory.py's arena cap, ``malloc_trim`` and ``gc.freeze``
off, to see what they save.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from common import REPO

PY = sys.executable
MODULES = (
    "asyncio",
    "ssl",
    "http.client",
    "hashlib",
    "msgspec",
    "psutil",
    "sqlite3",
    "yaml",
    "tempfile",
    "argparse",
    "ctypes",
    "agent.config",
    "agent.scheduler",
)

MARGINAL = """
import importlib, sys
def rss():
    return int(next(l for l in open('/proc/self/status') if l.startswith('VmRSS')).split()[1])
before = rss()
importlib.import_module(sys.argv[1])
print(before, rss())
"""

# Stops the daemon 3 s after its first report is in the spool and prints what it holds.
DRIVER = r"""
import collections, json, os, signal, sys, threading, time
args, spool = json.loads(sys.argv[1]), sys.argv[2]
def report():
    while not os.path.exists(spool):
        time.sleep(0.05)
    time.sleep(3)
    status = dict(l.split(':', 1) for l in open('/proc/self/status'))
    maps, name = collections.Counter(), '[anon]'
    for line in open('/proc/self/smaps'):
        parts = line.split()
        if len(parts) >= 5 and '-' in parts[0] and ':' in parts[3]:
            name = parts[5] if len(parts) > 5 else '[anon]'
        elif parts[0] == 'Rss:':
            maps[name] += int(parts[1])
    kib = {k: int(status[k].split()[0]) for k in ('VmRSS', 'RssAnon', 'RssFile')}
    print(json.dumps({**kib, 'threads': int(status['Threads']), 'modules': len(sys.modules),
                      'maps': maps.most_common(8)}), file=sys.stderr, flush=True)
    os.kill(os.getpid(), signal.SIGTERM)
threading.Thread(target=report, daemon=True).start()
if sys.argv[3] == "no-release":  # what agent.memory's arena cap, trim and freeze save
    import agent.memory
    agent.memory.limit_arenas = agent.memory.trim = agent.memory.settle = lambda: None
from agent.cli import main
main(args)
"""


def marginal(module: str) -> float:
    """MiB that importing ``module`` adds to a fresh interpreter."""
    out = subprocess.run(
        [PY, "-c", MARGINAL, module], capture_output=True, text=True, check=True, cwd=REPO
    ).stdout.split()
    return (int(out[1]) - int(out[0])) / 1024


def host_role(tmp: Path, release: bool = True) -> dict[str, Any]:
    spool = tmp / "spool.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{spool}{suffix}").unlink(missing_ok=True)
    token = tmp / "token"
    token.write_text("t" * 32 + "\n", encoding="utf-8")
    config = tmp / "agent.yaml"
    config.write_text(
        "site: bac-kan/cho-don/bang-lung\ninterval: 60s\njitter: 0\nlog: {level: error}\n"
        f"spool: {{path: {spool}}}\n"
        f"collector: {{url: 'http://127.0.0.1:9', token_file: {token}}}\n"
        "networks:\n"
        "  lan: {targets: [{kind: icmp, address: 127.0.0.1}]}\n"
        "  wan: {targets: [{kind: tcp, address: '127.0.0.1:9'}]}\n"
        "  internet: {targets: [{kind: http, address: 'http://127.0.0.1:9/'}]}\n",
        encoding="utf-8",
    )
    args = json.dumps(["run", "--config", str(config)])
    proc = subprocess.run(
        [PY, "-c", DRIVER, args, str(spool), "release" if release else "no-release"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    line = next(x for x in reversed(proc.stderr.splitlines()) if x.startswith("{"))
    result: dict[str, Any] = json.loads(line)
    return result


def main() -> None:
    runs = int(sys.argv[sys.argv.index("--runs") + 1]) if "--runs" in sys.argv else 5
    release = "--no-release" not in sys.argv  # agent/memory.py made no-ops, to measure it
    print("| module imported into a bare interpreter | adds MiB (median) |\n|---|---|")
    bare = statistics.median(
        int(subprocess.run([PY, "-c", MARGINAL, "os"], capture_output=True, text=True,
                           check=True).stdout.split()[0]) / 1024
        for _ in range(runs)
    )  # fmt: skip
    print(f"| (the interpreter itself, with site) | {bare:.1f} |")
    for module in MODULES:
        print(f"| `{module}` | {statistics.median(marginal(module) for _ in range(runs)):.2f} |")
    with tempfile.TemporaryDirectory(prefix="hatang-rss-") as tmp:
        samples = [host_role(Path(tmp), release) for _ in range(runs)]
    key = statistics.median(s["VmRSS"] for s in samples)
    chosen = min(samples, key=lambda s: abs(s["VmRSS"] - key))
    print(
        f"\nhost role `run`, 3 s after the first report (median of {runs}): "
        f"VmRSS {key / 1024:.1f} MiB; in that run anon {chosen['RssAnon'] / 1024:.1f}"
        f" + file {chosen['RssFile'] / 1024:.1f} MiB, {chosen['threads']} threads, "
        f"{chosen['modules']} modules"
    )
    print("\n| mapping | RSS MiB |\n|---|---|")
    for name, kib in chosen["maps"]:
        print(f"| {Path(name).name if name.startswith('/') else name} | {kib / 1024:.2f} |")


if __name__ == "__main__":
    main()
