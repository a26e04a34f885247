"""Run agent code inside a test namespace and print the result as JSON.

    ip netns exec NS python3 -m tests.agent.probes.nsrun probe '{"kind": "icmp", ...}'
    ip netns exec NS python3 -m tests.agent.probes.nsrun probe '{...}' --user nobody
    ip netns exec NS python3 -m tests.agent.probes.nsrun networks agent.yaml
    ip netns exec NS python3 -m tests.agent.probes.nsrun routes

``--user`` drops to that user after the imports (setgroups, setgid, setuid), which also
drops every capability: the agent as an unprivileged office user.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import pwd
import sys
from pathlib import Path
from typing import Any

import msgspec

from tests import netns

REPO = Path(__file__).resolve().parents[3]


def drop_to(user: str) -> None:
    """Become ``user`` with no supplementary groups and no capabilities."""
    entry = pwd.getpwnam(user)
    os.setgroups([])
    os.setgid(entry.pw_gid)
    os.setuid(entry.pw_uid)


def capabilities() -> str:
    """CapEff from /proc/self/status (hex), to prove what the process may do."""
    for line in open("/proc/self/status", encoding="ascii"):  # noqa: SIM115
        if line.startswith("CapEff:"):
            return line.split()[1]
    return ""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("what", choices=["probe", "networks", "routes", "whoami"])
    parser.add_argument("arg", nargs="?")
    parser.add_argument("--user")
    args = parser.parse_args()

    from agent.config import load_config
    from agent.probes import TargetConfig
    from agent.route import default_routes
    from agent.runner import check_networks, run_target
    from agent.units import dec_hook

    if args.user:
        # The interpreter lives under /root here, unreadable once we are nobody: load the
        # lazily imported standard modules the probes need first.
        import concurrent.futures.thread  # noqa: F401
        import encodings.ascii
        import encodings.idna  # noqa: F401

        drop_to(args.user)
    out: Any
    if args.what == "probe":
        options = msgspec.convert(json.loads(args.arg), TargetConfig, dec_hook=dec_hook)
        out = msgspec.to_builtins(asyncio.run(run_target(options)))
    elif args.what == "networks":
        out = msgspec.to_builtins(asyncio.run(check_networks(load_config(args.arg))))
    elif args.what == "routes":
        out = [dataclasses.asdict(r) for r in default_routes()]
    else:
        out = {"uid": os.getuid(), "gid": os.getgid(), "cap_eff": capabilities()}
    json.dump(out, sys.stdout)


def run_in(ns: netns.Namespace, *args: str, timeout: float = 60) -> Any:
    """Run this module inside ``ns`` (from the repo root) and return the decoded JSON."""
    boot = (
        f"import sys; sys.path.insert(0, {str(REPO)!r}); "
        "from tests.agent.probes.nsrun import main; main()"
    )
    proc = ns.exec(sys.executable, "-c", boot, *args, check=False, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"nsrun {' '.join(args)} failed: {proc.stderr.strip()}")
    return json.loads(proc.stdout)


def probe_in(ns: netns.Namespace, options: dict[str, Any], user: str | None = None) -> Any:
    """Run one probe (through the runner) inside ``ns``; return the ProbeResult as a dict."""
    extra = ["--user", user] if user else []
    return run_in(ns, "probe", json.dumps(options), *extra)


if __name__ == "__main__":
    main()
