"""The sweep child (``python -m agent.discovery``) refuses a request it cannot use.

Only refused requests run here: a valid one would sweep, and sweeps run inside test
namespaces only (test_discovery.py).
"""

from __future__ import annotations

import subprocess
import sys

import msgspec
import pytest

from agent.config import parse_config
from agent.discovery import CHILD_START_SECONDS, child_request, child_timeout


@pytest.mark.parametrize(
    ("request_bytes", "named"),
    [
        (b"\xff garbage", "malformed"),
        (b"[1, 2]", "mapping"),
        (b'{"site": "bac-kan/cho-don/bang-lung", "discovery": {"rate": 0}}', "discovery.rate"),
        (b'{"site": "bac-kan/cho-don/bang-lung", "nmap": true}', "nmap"),
    ],
)
def test_unusable_request_exits_2_naming_the_problem(request_bytes: bytes, named: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "agent.discovery"],
        input=request_bytes,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stdout == b""
    assert "discovery request refused" in proc.stderr.decode()
    assert named in proc.stderr.decode()


def test_request_carries_discovery_and_snmp_settings_exactly() -> None:
    config = parse_config(
        {
            "site": "bac-kan/cho-don/bang-lung",
            "role": "site-probe",
            "agent_id": "probe-1",
            "discovery": {"subnets": ["10.52.0.0/24"], "rate": 200, "timeout": "750ms"},
            "snmp": {"devices": [{"address": "10.52.0.1", "community": "public"}]},
        }
    )
    again = parse_config(msgspec.json.decode(child_request(config)))
    assert (again.discovery, again.snmp, again.agent_id) == (
        config.discovery,
        config.snmp,
        config.agent_id,
    )
    # start-up, then twice: 256 addresses x 2 rounds at 200/s + 2 x 0.75 s + one SNMP device
    assert child_timeout(config) == pytest.approx(CHILD_START_SECONDS + 2 * (2.56 + 1.5 + 60))
