"""Bytes per class from recorded counter sequences: wraps, resets, reboots, renumbering."""

from __future__ import annotations

from typing import Any

import pytest

from agent.config import parse_config
from agent.report import SnmpDevice, SnmpInterface
from agent.snmp.usage import UsageTracker, counter_delta

WRAP = 2**32


def _device(**uplink: Any) -> Any:
    config = parse_config(
        {
            "site": "bac-kan",
            "role": "site-probe",
            "snmp": {
                "devices": [
                    {"address": "10.0.0.1", "community": "public", "uplinks": {"dedicated": uplink}}
                ]
            },
        }
    )
    return config.snmp.devices[0]


def _poll(
    in_octets: int,
    out_octets: int,
    uptime: float,
    *,
    bits: int = 64,
    speed: int | None = 100_000_000,
    up: bool = True,
    index: int = 3,
) -> SnmpDevice:
    port = SnmpInterface(
        index=index,
        name="Gi0/1",
        in_octets=in_octets,
        out_octets=out_octets,
        counter_bits=bits,  # type: ignore[arg-type]
        speed_bps=speed,
    )
    return SnmpDevice(address="10.0.0.1", up=up, sys_uptime_seconds=uptime, interfaces=[port])


def _run(sequence: list[tuple[float, SnmpDevice]], **uplink: Any) -> list[tuple[Any, ...]]:
    device = _device(**(uplink or {"if_name": "Gi0/1"}))
    tracker = UsageTracker()
    out = []
    for at, poll in sequence:
        [usage] = tracker.update(device, poll, at)
        out.append((usage.in_bytes, usage.out_bytes, usage.unknown))
    return out


def test_64bit_counters_give_bytes_per_poll_after_the_first() -> None:
    got = _run(
        [
            (0, _poll(1_000, 500, 1000)),
            (300, _poll(5_001_000, 1_000_500, 1300)),
            (600, _poll(5_001_000, 1_000_600, 1600)),
        ]
    )
    assert got == [(None, None, "first poll"), (5_000_000, 1_000_000, None), (0, 100, None)]


def test_32bit_wrap_is_counted_once_when_the_line_could_carry_it() -> None:
    # 100 Mbit/s for 300 s can carry 3.75 GB: a wrap of 2**32 - 1000 + 4000 bytes is possible.
    got = _run(
        [
            (0, _poll(WRAP - 1_000, 10, 1000, bits=32)),
            (300, _poll(3_000, 20, 1300, bits=32)),
        ]
    )
    assert got[1] == (4_000, 10, None)


def test_32bit_decrease_that_no_wrap_explains_is_a_reset() -> None:
    # 1 Mbit/s for 60 s is at most 11 MB (with slack); a "wrap" would be ~4 GB.
    got = _run(
        [
            (0, _poll(WRAP - 100_000_000, 10, 1000, bits=32, speed=1_000_000)),
            (60, _poll(500, 20, 1060, bits=32, speed=1_000_000)),
        ]
    )
    assert got[1] == (None, None, "counter reset")


def test_32bit_decrease_without_a_known_speed_is_unknown() -> None:
    got = _run(
        [
            (0, _poll(WRAP - 1_000, 10, 1000, bits=32, speed=None)),
            (300, _poll(3_000, 20, 1300, bits=32, speed=None)),
        ]
    )
    assert got[1] == (None, None, "counter reset")


@pytest.mark.parametrize(
    ("second", "reason"),
    [
        pytest.param(_poll(2_000, 100, 20), "device restarted", id="uptime-went-backwards"),
        # Rebooted 280 s ago: uptime advanced 0 s... but counters started again from zero.
        pytest.param(_poll(2_000, 100, 1000.5), "device restarted", id="uptime-stood-still"),
        pytest.param(_poll(10, 5, 1300), "counter reset", id="64bit-decrease"),
        pytest.param(_poll(10**15, 5, 1300), "counter reset", id="more-than-the-line-carries"),
        pytest.param(_poll(2_000, 100, 1300, up=False), "device not answering", id="down"),
        pytest.param(_poll(2_000, 100, 1300, index=4), "interface not found", id="renumbered"),
    ],
)
def test_discontinuities_are_unknown_never_a_spike_or_negative(
    second: SnmpDevice, reason: str
) -> None:
    got = _run([(0, _poll(50_000_000, 40_000_000, 1000)), (300, second)], if_index=3)
    assert got[1] == (None, None, reason)


def test_after_a_reboot_the_next_poll_counts_again() -> None:
    got = _run(
        [
            (0, _poll(50_000_000, 40_000_000, 100_000)),
            (300, _poll(1_000, 1_000, 120)),  # rebooted: counters and uptime from zero
            (600, _poll(801_000, 1_500, 420)),
        ]
    )
    assert got == [
        (None, None, "first poll"),
        (None, None, "device restarted"),
        (800_000, 500, None),
    ]


def test_counter_delta_edges() -> None:
    assert counter_delta(5, 5, 64, None) == 0
    assert counter_delta(WRAP - 1, 0, 32, 10.0) == 1
    assert counter_delta(WRAP - 1, 0, 32, None) is None
    assert counter_delta(10, 9, 64, 1e12) is None
