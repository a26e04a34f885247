"""icmp probe: the three methods, loss and delay, in namespaces the tests create.

The machine's own ``ping_group_range`` is never touched: each test sets it inside its
own namespace (the sysctl is per network namespace). Packets go only between the two
namespaces of the test (10.25.0.0/24, fd21:25::/64).
"""

from __future__ import annotations

import socket
import struct

import pytest

from agent.probes import icmp
from tests import netns
from tests.agent.probes.nsrun import REPO, probe_in, run_in

ALLOW_ALL = "0 2147483647"
DENY_ALL = "1 0"


def pair(topo: netns.Topology) -> tuple[netns.Namespace, netns.Namespace, str]:
    """Two namespaces on one link: the agent's (``a``) and the target's (``b``, 10.25.0.2).

    Returns the target-side device name, where loss and delay are injected.
    """
    a, b = topo.add("a"), topo.add("b")
    a_dev, b_dev = topo.link(a, b, "10.25.0.1/24", "10.25.0.2/24")
    a.ip("addr", "add", "fd21:25::1/64", "dev", a_dev, "nodad")
    b.ip("addr", "add", "fd21:25::2/64", "dev", b_dev, "nodad")
    return a, b, b_dev


def target(address: str = "10.25.0.2", **extra: object) -> dict[str, object]:
    return {
        "kind": "icmp",
        "address": address,
        "count": 4,
        "interval": "50ms",
        "timeout": "2s",
        **extra,
    }


@pytest.mark.netns
@pytest.mark.parametrize("address", ["10.25.0.2", "fd21:25::2"])
def test_unprivileged_socket_when_group_allowed(topo: netns.Topology, address: str) -> None:
    a, _, _ = pair(topo)
    a.sysctl("net.ipv4.ping_group_range", ALLOW_ALL)
    result = probe_in(a, target(address))
    assert result["method"] == "icmp-unprivileged"
    assert result["up"] is True
    assert (result["sent"], result["received"], result["loss_ratio"]) == (4, 4, 0.0)
    assert 0 < result["rtt_min_seconds"] <= result["rtt_seconds"] <= result["rtt_max_seconds"]
    assert result["jitter_seconds"] is not None and result["jitter_seconds"] >= 0
    assert result["error"] is None


@pytest.mark.netns
@pytest.mark.parametrize("address", ["10.25.0.2", "fd21:25::2"])
def test_raw_socket_when_group_denied_but_root(topo: netns.Topology, address: str) -> None:
    a, _, _ = pair(topo)
    a.sysctl("net.ipv4.ping_group_range", DENY_ALL)
    result = probe_in(a, target(address))
    assert result["method"] == "icmp-raw"
    assert (result["up"], result["received"], result["loss_ratio"]) == (True, 4, 0.0)


@pytest.mark.netns
def test_tcp_fallback_as_nobody(topo: netns.Topology) -> None:
    """No ICMP socket for an unprivileged user: a TCP connect proves the host is there."""
    a, _, _ = pair(topo)
    a.sysctl("net.ipv4.ping_group_range", DENY_ALL)
    who = run_in(a, "whoami", "--user", "nobody")
    assert who["uid"] != 0 and int(who["cap_eff"], 16) == 0  # no CAP_NET_RAW
    # Nothing listens on 10.25.0.2: its RST ("refused") is the answer.
    result = probe_in(a, target(fallback_ports=[443, 80]), user="nobody")
    assert result["method"] == "tcp-fallback:443" or result["method"] == "tcp-fallback:80"
    assert result["up"] is True
    assert result["received"] == result["sent"] == 4


@pytest.mark.netns
def test_no_method_left_is_permission_denied(topo: netns.Topology) -> None:
    a, _, _ = pair(topo)
    a.sysctl("net.ipv4.ping_group_range", DENY_ALL)
    result = probe_in(a, target(fallback_ports=[]), user="nobody")
    assert result["up"] is False
    assert result["error"] == "permission_denied"
    assert "no fallback_ports configured" in result["detail"]


@pytest.mark.netns
def test_total_loss_is_down(topo: netns.Topology) -> None:
    """The target drops every echo request (nftables in its own namespace)."""
    a, b, _ = pair(topo)
    drop_echo(b, "")
    result = probe_in(a, target(timeout="1s"))
    assert result["up"] is False
    assert (result["sent"], result["received"], result["loss_ratio"]) == (4, 0, 1.0)
    assert result["error"] == "timeout"
    assert result["detail"] == "no echo reply from 10.25.0.2 (4 sent)"
    assert result["rtt_seconds"] is None


@pytest.mark.netns
def test_partial_loss_is_up_with_ratio(topo: netns.Topology) -> None:
    """Every second echo request is dropped: half the burst is lost, the host is up."""
    a, b, _ = pair(topo)
    drop_echo(b, "numgen inc mod 2 == 1")
    result = probe_in(a, target(timeout="1s"))
    assert result["up"] is True
    assert (result["sent"], result["received"], result["loss_ratio"]) == (4, 2, 0.5)


@pytest.mark.netns
def test_unreachable_host_on_link(topo: netns.Topology) -> None:
    """No host answers ARP for 10.25.0.9: the agent's kernel reports host unreachable."""
    a, _, _ = pair(topo)
    result = probe_in(a, target("10.25.0.9", timeout="8s"))
    assert result["up"] is False
    assert result["error"] == "unreachable"
    assert result["detail"] == "host unreachable (reported by 10.25.0.1)"


@pytest.mark.netns
def test_no_route_is_unreachable(topo: netns.Topology) -> None:
    a, _, _ = pair(topo)
    result = probe_in(a, target("10.26.0.1"))
    assert result["up"] is False
    assert result["error"] == "unreachable"
    assert result["detail"] == "send to 10.26.0.1: network is unreachable"


@pytest.mark.netns
@pytest.mark.parametrize(("qdisc", "check"), [("loss 100%", "loss"), ("delay 50ms", "delay")])
def test_netem(topo: netns.Topology, qdisc: str, check: str) -> None:
    a, b, b_dev = pair(topo)
    added = b.exec("tc", "qdisc", "add", "dev", b_dev, "root", "netem", *qdisc.split(), check=False)
    if added.returncode != 0:
        pytest.skip(
            f"kernel has no sch_netem ({added.stderr.strip()}); loss is covered by nftables"
        )
    result = probe_in(a, target())
    if check == "loss":
        assert (result["up"], result["loss_ratio"]) == (False, 1.0)
    else:
        assert result["up"] is True
        assert result["rtt_min_seconds"] >= 0.05


# Answers ICMP echo requests after argv[1] seconds (the kernel's own replies are off in
# its namespace): a link with delay, where this kernel has no netem. Prints "ready".
SLOW_RESPONDER = r"""
import socket, struct, sys, time
from agent.probes.icmp import checksum
delay = float(sys.argv[1])
sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
print("ready", flush=True)
while True:
    data, (source, _) = sock.recvfrom(65535)
    icmp = data[(data[0] & 0x0F) * 4 :]
    if len(icmp) < 8 or icmp[0] != 8:
        continue
    body = icmp[4:]
    header = struct.pack("!BBH", 0, 0, 0)
    reply = struct.pack("!BBH", 0, 0, checksum(header + body)) + body
    time.sleep(delay)
    sock.sendto(reply, (source, 0))
"""


@pytest.mark.netns
@pytest.mark.parametrize("group", [ALLOW_ALL, DENY_ALL])
def test_replies_read_at_the_next_echo_keep_their_kernel_time(
    topo: netns.Topology, group: str
) -> None:
    """While a burst is sending, replies are read at the next echo's wake-up, not as
    they arrive (fewer wake-ups): their RTT is still the link's, from the kernel's
    receive time, not the time until the next echo (datagram and raw sockets)."""
    import subprocess
    import sys

    a, b, _ = pair(topo)
    a.sysctl("net.ipv4.ping_group_range", group)
    b.sysctl("net.ipv4.icmp_echo_ignore_all", "1")
    responder = b.popen(
        [sys.executable, "-c", SLOW_RESPONDER, "0.02"],
        stdout=subprocess.PIPE,
        text=True,
        cwd=str(REPO),
    )
    assert responder.stdout is not None and responder.stdout.readline().strip() == "ready"
    result = probe_in(a, target(count=4, interval="300ms"))
    assert result["method"] == ("icmp-unprivileged" if group == ALLOW_ALL else "icmp-raw")
    assert (result["sent"], result["received"]) == (4, 4)
    # Read late without the kernel's time, each RTT would be ~0.3 s (the next echo).
    assert 0.02 <= result["rtt_min_seconds"] <= result["rtt_max_seconds"] < 0.2


def drop_echo(ns: netns.Namespace, match: str) -> None:
    """Drop incoming ICMP echo requests in ``ns`` (``match`` narrows which ones)."""
    ns.exec("nft", "add", "table", "inet", "ht")
    ns.exec("nft", "add chain inet ht in { type filter hook input priority 0; }")
    ns.exec("nft", f"add rule inet ht in icmp type echo-request {match} drop")


# Pure parts: packet format and the jitter estimator.


def test_echo_request_checksum_verifies() -> None:
    packet = icmp.echo_request(socket.AF_INET, 0x1234, 7, b"hatang!")
    assert icmp.checksum(packet) == 0
    assert struct.unpack("!BBHHH", packet[:8])[0::3] == (8, 0x1234)


def test_rfc3550_jitter() -> None:
    assert icmp.rfc3550_jitter([0.010]) is None
    assert icmp.rfc3550_jitter([0.010, 0.010, 0.010]) == 0.0
    # J1 = 0.016/16 = 0.001; J2 = 0.001 + (0.016 - 0.001)/16 = 0.0019375
    assert icmp.rfc3550_jitter([0.010, 0.026, 0.010]) == pytest.approx(0.0019375)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"address": "bad host"},
            "address: invalid host 'bad host' (expected an IP address or a DNS name)",
        ),
        (
            {"address": "10.0.0.1", "count": 10, "interval": 1.0},
            "interval: 10 echoes every 1s do not fit in the 5s timeout "
            "(lower count or interval, or raise timeout)",
        ),
        ({"address": "10.0.0.1", "interval": 0.001}, "interval: must be at least 10ms"),
    ],
)
def test_bad_options_name_the_key(options: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError) as info:
        icmp.Options(**options)  # type: ignore[arg-type]
    assert str(info.value) == message
