"""Discovery and SNMP config validation: each bad value names its key path."""

from __future__ import annotations

from typing import Any

import pytest

from agent.config import ConfigError, parse_config


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        pytest.param(
            {"discovery": {"subnets": ["10.52.0.0/24", "10.52.1.300/24"]}},
            "agent.yaml: discovery.subnets[1]: '10.52.1.300/24' is not an IPv4 subnet in "
            "CIDR form (e.g. 192.168.1.0/24)",
            id="not-cidr",
        ),
        pytest.param(
            {"discovery": {"subnets": ["10.52.0.0/16"]}},
            "agent.yaml: discovery.subnets[0]: 10.52.0.0/16 is larger than the sweep bound "
            "/22 (max_prefix); split it or raise max_prefix",
            id="too-large",
        ),
        pytest.param(
            {"discovery": {"subnets": ["10.52.0.0/24"], "max_prefix": 25}},
            "agent.yaml: discovery.subnets[0]: 10.52.0.0/24 is larger than the sweep bound "
            "/25 (max_prefix); split it or raise max_prefix",
            id="too-large-custom-bound",
        ),
        pytest.param(
            {"discovery": {"rate": 0}},
            "agent.yaml: discovery.rate: 0 is out of range (expected an integer from 1 to 10000)",
            id="rate",
        ),
        pytest.param(
            {"snmp": {"devices": [{"address": "10.52.0.1"}]}},
            "agent.yaml: snmp.devices[0].community: set exactly one of community or community_file",
            id="no-community",
        ),
        pytest.param(
            {"snmp": {"devices": [{"address": "10.52.0.1", "version": "3"}]}},
            'agent.yaml: snmp.devices[0].v3: required for version "3" (user, auth_protocol, ...)',
            id="v3-missing",
        ),
        pytest.param(
            {
                "snmp": {
                    "devices": [
                        {
                            "address": "10.52.0.1",
                            "version": "3",
                            "v3": {"user": "u", "auth_protocol": "sha", "auth_key": "short"},
                        }
                    ]
                }
            },
            "agent.yaml: snmp.devices[0].v3.auth_key: must be at least 8 characters (RFC 3414)",
            id="short-key",
        ),
        pytest.param(
            {
                "snmp": {
                    "devices": [
                        {
                            "address": "10.52.0.1",
                            "version": "3",
                            "v3": {"user": "u", "priv_protocol": "aes", "priv_key": "12345678"},
                        }
                    ]
                }
            },
            "agent.yaml: snmp.devices[0].v3.auth_protocol: privacy (priv_protocol) needs "
            "authentication too",
            id="priv-without-auth",
        ),
        pytest.param(
            {"snmp": {"devices": [{"address": "bad host!", "community": "public"}]}},
            "agent.yaml: snmp.devices[0].address: invalid host 'bad host!' "
            "(expected an IP address or a DNS name)",
            id="bad-address",
        ),
    ],
)
def test_invalid(section: dict[str, Any], expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"site": "bac-kan", "role": "site-probe", **section}, "agent.yaml")
    assert str(info.value) == expected


def test_valid_site_probe_config() -> None:
    config = parse_config(
        {
            "site": "bac-kan",
            "role": "site-probe",
            "discovery": {"subnets": ["10.52.0.0/24"], "rate": 200, "port_check": True},
            "snmp": {
                "devices": [
                    {"address": "10.52.0.1", "community_file": "/etc/hatang/community"},
                    {
                        "address": "sw1.office.lan",
                        "version": "3",
                        "v3": {
                            "user": "hatang",
                            "auth_protocol": "sha256",
                            "auth_key_file": "/k",
                            "priv_protocol": "aes",
                            "priv_key": "0123456789",
                        },
                    },
                ]
            },
        }
    )
    assert config.discovery.subnets == ["10.52.0.0/24"]
    assert config.snmp.devices[1].v3 is not None
