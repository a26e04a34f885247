"""Test topologies in network namespaces, built entirely inside namespaces.

Network rule: nothing here touches the root namespace's interfaces, addresses or
routes. Veth pairs are created inside a namespace (``ip -n A link add ... peer ...
netns B``), bridges live in their own namespace, and every namespace this module
creates is named ``ht-<pid>-<n>-<name>`` and deleted when the topology closes, even
after a failure. Subnets used by tests are 10.x/16 ranges; never the machine's own.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

PREFIX = "ht-"
_counter = itertools.count()


def available() -> str | None:
    """Return why namespaces cannot be built here, or None when they can."""
    if os.geteuid() != 0:
        return "network namespace tests need root"
    if shutil.which("ip") is None:
        return "iproute2 (ip) is not installed"
    return None


def run(*args: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run a command, capturing output; raise with its stderr on failure."""
    proc = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


class Namespace:
    """One network namespace, with helpers to run commands inside it."""

    def __init__(self, topology: Topology, short: str) -> None:
        self.short = short
        self.name = f"{topology.prefix}{short}"[:48]
        self.topology = topology

    def ip(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run ``ip -n <ns> ...``."""
        return run("ip", "-n", self.name, *args, check=check)

    def exec(
        self, *args: str, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run a command inside the namespace and wait for it."""
        return run("ip", "netns", "exec", self.name, *args, check=check, timeout=timeout)

    def popen(self, args: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """Start a long-running process inside the namespace; the topology kills it on close."""
        proc: subprocess.Popen[Any] = subprocess.Popen(
            ["ip", "netns", "exec", self.name, *args], **kwargs
        )
        self.topology.processes.append(proc)
        return proc

    def sysctl(self, key: str, value: str) -> None:
        """Set a per-namespace sysctl (e.g. net.ipv4.ip_forward)."""
        self.exec("sysctl", "-q", "-w", f"{key}={value}")

    def write_etc(self, filename: str, text: str) -> None:
        """Give the namespace its own /etc/<filename> (``ip netns exec`` bind-mounts it)."""
        directory = Path("/etc/netns") / self.name
        directory.mkdir(parents=True, exist_ok=True)
        (directory / filename).write_text(text, encoding="utf-8")

    def link_down(self, dev: str) -> None:
        """Cut a link (the other end sees carrier loss)."""
        self.ip("link", "set", dev, "down")

    def link_up(self, dev: str) -> None:
        """Restore a link."""
        self.ip("link", "set", dev, "up")

    def __repr__(self) -> str:
        return f"Namespace({self.name})"


class Topology:
    """A set of namespaces and links, deleted as a whole by ``close()``."""

    def __init__(self, tag: str = "") -> None:
        self.prefix = f"{PREFIX}{os.getpid() % 100000}-{next(_counter)}{tag}-"
        self.namespaces: dict[str, Namespace] = {}
        self.processes: list[subprocess.Popen[Any]] = []
        self._veths = itertools.count()

    def add(self, short: str, *, forward: bool = False) -> Namespace:
        """Create a namespace with loopback up; ``forward`` makes it a router."""
        ns = Namespace(self, short)
        run("ip", "netns", "add", ns.name)
        self.namespaces[short] = ns
        ns.ip("link", "set", "lo", "up")
        if forward:
            ns.sysctl("net.ipv4.ip_forward", "1")
            ns.sysctl("net.ipv6.conf.all.forwarding", "1")
        return ns

    def __getitem__(self, short: str) -> Namespace:
        return self.namespaces[short]

    def link(
        self,
        a: Namespace,
        b: Namespace,
        a_addr: str | None = None,
        b_addr: str | None = None,
        *,
        a_dev: str | None = None,
        b_dev: str | None = None,
    ) -> tuple[str, str]:
        """Connect two namespaces with a veth pair (created inside ``a``); return dev names."""
        n = next(self._veths)
        a_dev = a_dev or f"v{n}{b.short}"[:15]
        b_dev = b_dev or f"v{n}{a.short}"[:15]
        a.ip("link", "add", a_dev, "type", "veth", "peer", "name", b_dev, "netns", b.name)
        for ns, dev, addr in ((a, a_dev, a_addr), (b, b_dev, b_addr)):
            if addr:
                ns.ip("addr", "add", addr, "dev", dev)
            ns.ip("link", "set", dev, "up")
        return a_dev, b_dev

    def bridge(self, ns: Namespace, name: str = "br0", addr: str | None = None) -> str:
        """Create a bridge inside a namespace (optionally with an address)."""
        ns.ip("link", "add", name, "type", "bridge")
        if addr:
            ns.ip("addr", "add", addr, "dev", name)
        ns.ip("link", "set", name, "up")
        return name

    def attach(
        self,
        bridge_ns: Namespace,
        bridge: str,
        host: Namespace,
        host_addr: str,
        *,
        host_dev: str = "eth0",
    ) -> str:
        """Plug a host namespace into a bridge; return the bridge-side port name."""
        n = next(self._veths)
        port = f"p{n}"[:15]
        bridge_ns.ip(
            "link", "add", port, "type", "veth", "peer", "name", host_dev, "netns", host.name
        )
        bridge_ns.ip("link", "set", port, "master", bridge)
        bridge_ns.ip("link", "set", port, "up")
        host.ip("addr", "add", host_addr, "dev", host_dev)
        host.ip("link", "set", host_dev, "up")
        return port

    def close(self) -> None:
        """Kill started processes and delete every namespace of this topology."""
        for proc in self.processes:
            if proc.poll() is None:
                proc.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=5)
        for ns in self.namespaces.values():
            # Kill anything still running inside (e.g. daemons that forked away).
            pids = run("ip", "netns", "pids", ns.name, check=False).stdout.split()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), 9)
            run("ip", "netns", "del", ns.name, check=False)
            shutil.rmtree(Path("/etc/netns") / ns.name, ignore_errors=True)
        self.namespaces.clear()


@contextlib.contextmanager
def topology(tag: str = "") -> Iterator[Topology]:
    """Build a topology for the duration of a ``with`` block."""
    topo = Topology(tag)
    try:
        yield topo
    finally:
        topo.close()


def wait_for(predicate: Any, timeout: float = 10.0, interval: float = 0.05) -> Any:
    """Poll until ``predicate()`` is truthy; return its value or raise TimeoutError."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met within {timeout}s")
        time.sleep(interval)
