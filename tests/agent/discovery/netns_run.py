"""Run discovery or SNMP polling inside a test namespace and print the result as JSON.

Tests start this with ``ip netns exec <ns> python3 -m tests.agent.discovery.netns_run``
so that every packet of a sweep or poll leaves from a namespace the test built, never
from the machine's own interfaces.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

import msgspec

from agent.config import load_config


async def _main(args: argparse.Namespace) -> object:
    config = load_config(args.config)
    if args.what == "snmp":
        from agent.snmp.poller import poll_devices

        return await poll_devices(config.snmp)
    if args.what == "neighbours":
        from agent.snmp.poller import SnmpFailure, walk_neighbours

        result = []
        for device in config.snmp.devices:
            try:
                n = await walk_neighbours(device)
                result.append({"arp": n.arp, "fdb": n.fdb, "truncated": n.truncated})
            except SnmpFailure as exc:
                result.append({"error": str(exc)})
        return result
    if args.what == "discover-child":
        from agent.discovery import discover_in_child

        runs = [await discover_in_child(config) for _ in range(args.runs)]
        return {"runs": runs, "scapy_here": "scapy" in sys.modules}
    from agent.discovery import discover

    runs = [await discover(config) for _ in range(args.runs)]
    return runs


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("what", choices=["discover", "discover-child", "snmp", "neighbours"])
    parser.add_argument("config")
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
    result = asyncio.run(_main(args))
    sys.stdout.write(msgspec.json.encode(result).decode() + "\n")


if __name__ == "__main__":
    main()
