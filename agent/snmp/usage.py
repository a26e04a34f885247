"""Bytes per network class from the router's octet counters, between two polls.

The agent keeps the previous sample of each uplink in memory (an agent restart costs
one poll of data, reported as unknown). Counters are trusted only when nothing says
they started again: a 64-bit counter that went down was reset (it does not wrap in
practice); a 32-bit one that went down wrapped once only when the port's speed makes
the wrapped amount possible in the time elapsed, otherwise it was reset; sysUpTime
that went backwards, or advanced clearly less than the time elapsed, means the device
(or its SNMP agent) restarted and its counters may have too. Any of these makes the
poll unknown: no spike, no negative. At 1 Gbit/s a 32-bit counter wraps every 34 s,
so such ports need 64-bit counters (ifHCInOctets) or a short SNMP interval.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from agent.config import SnmpDeviceConfig, UplinkConfig
from agent.report import NetworkClass, SnmpDevice, SnmpInterface, UplinkUsage

# Room for rate bursts above ifSpeed and for polls that took longer than measured.
SPEED_SLACK: Final = 1.5
# sysUpTime may advance a little less than our clock (tick rounding, poll duration).
UPTIME_SLACK_SECONDS: Final = 5.0


@dataclass(frozen=True, slots=True)
class Sample:
    """One poll of one uplink."""

    at: float  # the agent's monotonic clock
    uptime: float | None  # sysUpTime, seconds
    if_index: int
    in_octets: int
    out_octets: int
    bits: int
    speed_bps: int | None


def counter_delta(previous: int, current: int, bits: int, max_bytes: float | None) -> int | None:
    """Octets between two readings of one counter, or None when they cannot be trusted."""
    if current >= previous:
        delta = current - previous
    elif bits == 32 and max_bytes is not None:
        delta = current + 2**32 - previous  # one wrap, if the line could carry it
    else:
        return None
    if max_bytes is not None and delta > max_bytes:
        return None
    return delta


def restarted(previous: Sample, current: Sample) -> bool:
    """Whether sysUpTime says the device or its agent started again between the polls."""
    if previous.uptime is None or current.uptime is None:
        return False
    elapsed = current.at - previous.at
    advanced = current.uptime - previous.uptime
    return advanced < 0 or advanced + UPTIME_SLACK_SECONDS + 0.05 * elapsed < elapsed


def find_port(interfaces: list[SnmpInterface], port: UplinkConfig) -> SnmpInterface | None:
    """The interface a configured uplink names (ifIndex, else ifName, else ifDescr)."""
    if port.if_index is not None:
        return next((i for i in interfaces if i.index == port.if_index), None)
    by_name = [i for i in interfaces if i.name == port.if_name]
    by_descr = [i for i in interfaces if i.descr == port.if_name]
    found = by_name or by_descr
    return found[0] if found else None


class UsageTracker:
    """The previous sample of every uplink; ``update`` turns a poll into bytes per class."""

    def __init__(self) -> None:
        self._last: dict[tuple[str, int, NetworkClass], Sample] = {}

    def update(self, device: SnmpDeviceConfig, result: SnmpDevice, now: float) -> list[UplinkUsage]:
        """Bytes since the previous poll on each configured uplink of ``device``."""
        usages: list[UplinkUsage] = []
        for network, port in device.uplinks.items():
            key = (device.address, device.port, network)
            usage = UplinkUsage(network=network, if_name=port.if_name, if_index=port.if_index)
            usages.append(usage)
            if not result.up:
                usage.unknown = "device not answering"
                continue
            interface = find_port(result.interfaces, port)
            if interface is None:
                usage.unknown = "interface not found"
                self._last.pop(key, None)
                continue
            usage.if_index, usage.if_name = interface.index, interface.name or interface.descr
            usage.counter_bits = interface.counter_bits
            if (
                interface.in_octets is None
                or interface.out_octets is None
                or interface.counter_bits is None
            ):
                usage.unknown = "no octet counters"
                continue
            sample = Sample(
                at=now,
                uptime=result.sys_uptime_seconds,
                if_index=interface.index,
                in_octets=interface.in_octets,
                out_octets=interface.out_octets,
                bits=interface.counter_bits,
                speed_bps=interface.speed_bps or None,
            )
            previous = self._last.get(key)
            self._last[key] = sample
            usage.unknown = self._fill(usage, previous, sample)
        return usages

    @staticmethod
    def _fill(usage: UplinkUsage, previous: Sample | None, sample: Sample) -> str | None:
        """Set the usage's bytes from two samples; return why they are unknown, or None."""
        if previous is None:
            return "first poll"
        if previous.if_index != sample.if_index or previous.bits != sample.bits:
            return "interface changed"
        elapsed = sample.at - previous.at
        usage.interval_seconds = round(elapsed, 3)
        if elapsed <= 0:
            return "no time elapsed"
        if restarted(previous, sample):
            return "device restarted"
        speed = sample.speed_bps or previous.speed_bps
        max_bytes = speed / 8 * elapsed * SPEED_SLACK if speed else None
        received = counter_delta(previous.in_octets, sample.in_octets, sample.bits, max_bytes)
        sent = counter_delta(previous.out_octets, sample.out_octets, sample.bits, max_bytes)
        if received is None or sent is None:
            return "counter reset"
        usage.in_bytes, usage.out_bytes = received, sent
        return None
