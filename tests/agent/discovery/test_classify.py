"""Device kinds from the OUI vendor (scapy's manuf database) and the port check."""

from __future__ import annotations

import asyncio
import socket

import pytest

from agent.discovery.classify import check_ports, classify, vendor, vendor_kinds


@pytest.mark.parametrize(
    ("mac", "expected"),
    [
        pytest.param("f0:1f:af:00:00:01", "Dell Inc.", id="dell"),
        pytest.param("3c:2a:f4:00:00:01", "Brother Industries, LTD.", id="brother"),
        pytest.param("52:54:00:12:34:56", "QEMU/KVM virtual NIC", id="kvm-local-admin"),
        pytest.param("02:52:00:00:00:01", None, id="random"),
    ],
)
def test_vendor_from_manuf(mac: str, expected: str | None) -> None:
    assert vendor(mac) == expected


@pytest.mark.parametrize(
    ("mac", "vendor_name", "ports", "kwargs", "expected"),
    [
        pytest.param(
            "f0:1f:af:00:00:01", "Dell Inc.", None, {}, ("computer", "vendor Dell Inc."), id="dell"
        ),
        pytest.param(
            "3c:2a:f4:00:00:01",
            "Brother Industries, LTD.",
            None,
            {},
            ("printer", "vendor Brother Industries, LTD."),
            id="brother",
        ),
        pytest.param(
            "00:00:0c:00:00:01",
            "Cisco Systems, Inc",
            None,
            {},
            ("network", "vendor Cisco Systems, Inc (could also be phone)"),
            id="cisco-ambiguous",
        ),
        pytest.param(
            "00:00:0c:00:00:01",
            "Cisco Systems, Inc",
            [22],
            {},
            ("network", "vendor Cisco Systems, Inc, tcp/22 open"),
            id="cisco-ssh",
        ),
        pytest.param(
            "3c:d9:2b:00:00:01",
            "Hewlett Packard",
            [9100, 80],
            {},
            ("printer", "tcp/9100 open"),
            id="hp-printer",
        ),
        pytest.param(
            "3c:d9:2b:00:00:02",
            "Hewlett Packard",
            [135, 445],
            {},
            ("computer", "tcp/445 open"),
            id="hp-pc",
        ),
        pytest.param(
            "00:e0:fc:00:00:01",
            "Huawei Technologies",
            [80],
            {},
            ("network", "vendor Huawei Technologies, tcp/80 open"),
            id="huawei-router",
        ),
        pytest.param(
            "00:11:22:00:00:01",
            "Aztech Electronics",
            None,
            {},
            ("unknown", "vendor Aztech Electronics"),
            id="zte-not-in-aztech",
        ),
        pytest.param(
            "02:00:00:00:00:01",
            None,
            None,
            {},
            ("unknown", "randomised MAC"),
            id="random-unchecked",
        ),
        pytest.param(
            "02:00:00:00:00:01",
            None,
            [],
            {},
            ("phone", "randomised MAC, no computer/printer port open"),
            id="random-checked",
        ),
        pytest.param(
            "00:11:22:00:00:01",
            None,
            None,
            {"snmp_device": True},
            ("network", "polled over SNMP"),
            id="snmp",
        ),
        pytest.param(
            "3c:2a:f4:00:00:01",
            "Brother",
            None,
            {"has_agent": True},
            ("computer", "runs the hatang agent"),
            id="agent",
        ),
    ],
)
def test_classify(mac, vendor_name, ports, kwargs, expected) -> None:  # type: ignore[no-untyped-def]
    verdict = classify(mac, vendor_name, ports, **kwargs)
    assert (verdict.kind, verdict.reason) == expected


def test_vendor_kinds_unknown_vendor() -> None:
    assert vendor_kinds(None) == ()
    assert vendor_kinds("Acme Widgets") == ()


def test_port_check_on_loopback() -> None:
    """Open and closed ports on 127.0.0.1 (loopback only, per the network rule)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    open_port = server.getsockname()[1]
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    closed_port = closed.getsockname()[1]  # bound, not listening: refused
    try:
        found = asyncio.run(
            check_ports(["127.0.0.1"], ports=[open_port, closed_port], connect_timeout=2.0)
        )
    finally:
        server.close()
        closed.close()
    assert found == {"127.0.0.1": [open_port]}
