"""Where the host role's resident memory goes: module by module, and mapping by mapping.

No network at all. Two parts:

* the RSS each dependency adds to a bare interpreter (``python -c 'import X'`` in a
  fresh process, VmRSS after minus before; what two modules share, such as libcrypto
  for ``ssl`` and ``hashlib``, counts in both);
* ``hatang-agent run`` in the host role (icmp and tcp to 127.0.0.1, an http target
  on a closed loopback port, a closed loopback collector), stopped 3 s after its
  first report is spooled: VmRSS, anonymous vs file-backed pages, threads, modules,
  and the largest mappings of /proc/self/smaps; then the same with the deployment's
  https collector (its TLS context made, no handshake: the port is closed) and a dns
  target as well;
* that second daemon's memory by part, in context: an import hook in the daemon
  itself measures the RSS each module's loading adds (its own, without the modules
  it imports in turn, like ``-X importtime``'s self time; ``malloc_trim`` before and
  after, so the compiler's scratch memory is not counted), summed per part. A module
  shared by two parts counts in the first that imported it; what the daemon holds
  beyond its modules (the spool's and TLS's heap, threads, the report) is the rest.

Run as root (icmp): ``python3 bench/rss_breakdown.py``; median of ``--runs`` (5);
``--no-release`` turns agent/memory.py's arena cap, ``malloc_trim`` and ``gc.freeze``
off, to see what they save.
"""

from __future__ import annotations

import collections
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
def rss():
    return int(next(l for l in open('/proc/self/status') if l.startswith('VmRSS')).split()[1])
own = {}  # module -> KiB its loading added, less what its own imports added
if sys.argv[4] == "attribute":
    import ctypes, _frozen_importlib as bootstrap
    trim, load = ctypes.CDLL("libc.so.6").malloc_trim, bootstrap._load_unlocked
    local = threading.local()
    def measured(spec):
        stack = local.__dict__.setdefault("stack", [0])
        trim(0)
        before = rss()
        stack.append(0)
        try:
            return load(spec)
        finally:
            trim(0)
            added, nested = rss() - before, stack.pop()
            own[spec.name] = own.get(spec.name, 0) + added - nested
            stack[-1] += added
    bootstrap._load_unlocked = measured
    own["(interpreter with site)"] = rss()
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
                      'maps': maps.most_common(8), 'own': own}),
          file=sys.stderr, flush=True)
    os.kill(os.getpid(), signal.SIGTERM)
threading.Thread(target=report, daemon=True).start()
if sys.argv[3] == "no-release":  # what agent.memory's arena cap, trim and freeze save
    import agent.memory
    agent.memory.limit_arenas = agent.memory.trim = agent.memory.settle = lambda: None
from agent.cli import main
main(args)
"""


# Parts of the in-context breakdown: a module belongs to the first part naming it or
# its package (names separated by spaces).
PARTS = {
    "agent": "agent",
    "asyncio (+ concurrent.futures, selectors)": "asyncio _asyncio concurrent selectors",
    "ssl, hashlib (libssl, libcrypto)": "ssl _ssl hashlib _hashlib hmac _blake2 _sha512 _sha1"
    " _sha256 _sha3 _md5",
    "msgspec (+ typing_extensions, uuid, decimal)": "msgspec typing_extensions uuid _uuid"
    " platform decimal _decimal numbers",
    "sqlite3 (libsqlite3)": "sqlite3 _sqlite3",
    "yaml (libyaml)": "yaml _yaml",
    "http.client + email": "http email calendar quopri base64 json _json",
    "dnspython": "dns stringprep unicodedata encodings.idna",
    "argparse (+ gettext)": "argparse gettext textwrap",
    "inspect, ast, dis, tokenize (dataclasses, asyncio)": "inspect ast _ast dis opcode _opcode"
    " tokenize token dataclasses",
}
OTHER = "other standard library (logging, threading, socket, re, typing, ...)"


def part_of(module: str) -> str:
    for part, names in PARTS.items():
        if any(module == n or module.startswith(n + ".") for n in names.split()):
            return part
    return OTHER


def by_part(own: dict[str, int]) -> list[tuple[str, float]]:
    """MiB per part of what each module's loading added (``DRIVER``'s import hook)."""
    parts: collections.Counter[str] = collections.Counter()
    for name, kib in own.items():
        parts[name if name.startswith("(") else part_of(name)] += kib / 1024
    return parts.most_common()


def marginal(module: str) -> float:
    """MiB that importing ``module`` adds to a fresh interpreter."""
    out = subprocess.run(
        [PY, "-c", MARGINAL, module], capture_output=True, text=True, check=True, cwd=REPO
    ).stdout.split()
    return (int(out[1]) - int(out[0])) / 1024


def host_role(
    tmp: Path, release: bool = True, deployment: bool = False, attribute: bool = False
) -> dict[str, Any]:
    """The daemon's memory 3 s after its first report; ``deployment``: an https collector
    and a dns target too; ``attribute``: with the import hook (``own``)."""
    spool = tmp / "spool.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{spool}{suffix}").unlink(missing_ok=True)
    token = tmp / "token"
    token.write_text("t" * 32 + "\n", encoding="utf-8")
    config = tmp / "agent.yaml"
    config.write_text(
        "site: bac-kan/cho-don/bang-lung\ninterval: 60s\njitter: 0\nlog: {level: error}\n"
        f"spool: {{path: {spool}}}\n"
        f"collector: {{url: '{'https' if deployment else 'http'}://127.0.0.1:9', "
        f"token_file: {token}}}\n"
        "networks:\n"
        "  lan: {targets: [{kind: icmp, address: 127.0.0.1}]}\n"
        "  wan: {targets: [{kind: tcp, address: '127.0.0.1:9'}]}\n"
        "  internet: {targets: [{kind: http, address: 'http://127.0.0.1:9/'}"
        + (", {kind: dns, address: '127.0.0.1:9', query: a.vn}" if deployment else "")
        + "]}\n",
        encoding="utf-8",
    )
    args = json.dumps(["run", "--config", str(config)])
    proc = subprocess.run(
        [PY, "-c", DRIVER, args, str(spool), "release" if release else "no-release",
         "attribute" if attribute else "-"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )  # fmt: skip
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
    for deployment in (False, True):
        with tempfile.TemporaryDirectory(prefix="hatang-rss-") as tmp:
            samples = [host_role(Path(tmp), release, deployment) for _ in range(runs)]
        key = statistics.median(s["VmRSS"] for s in samples)
        chosen = min(samples, key=lambda s: abs(s["VmRSS"] - key))
        what = "https collector, dns target too" if deployment else "http collector"
        print(
            f"\nhost role `run` ({what}), 3 s after the first report (median of {runs}): "
            f"VmRSS {key / 1024:.1f} MiB; in that run anon {chosen['RssAnon'] / 1024:.1f}"
            f" + file {chosen['RssFile'] / 1024:.1f} MiB, {chosen['threads']} threads, "
            f"{chosen['modules']} modules"
        )
        print("\n| mapping | RSS MiB |\n|---|---|")
        for name, kib in chosen["maps"]:
            print(f"| {Path(name).name if name.startswith('/') else name} | {kib / 1024:.2f} |")
    with tempfile.TemporaryDirectory(prefix="hatang-rss-") as tmp:
        runs_own = [host_role(Path(tmp), release, True, attribute=True) for _ in range(runs)]
    middle = sorted(runs_own, key=lambda s: s["VmRSS"])[len(runs_own) // 2]
    parts = by_part(middle["own"])
    total = sum(mib for _, mib in parts)
    print(
        "\n| the https daemon (dns target too), by part: what loading its modules added "
        f"(import hook, run of median RSS of {runs}) | MiB |\n|---|---|"
    )
    for part, mib in parts:
        print(f"| {part} | {mib:.2f} |")
    rest = middle["VmRSS"] / 1024 - total
    print(f"| the rest: spool and TLS heap, threads, the report... | {rest:.2f} |")
    print(f"| **VmRSS of that run** | {middle['VmRSS'] / 1024:.1f} |")


if __name__ == "__main__":
    main()
