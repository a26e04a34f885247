"""Poll SNMP inside a test namespace once per line read from stdin, keeping one
``UsageTracker`` across polls (as the agent does), and print each poll as a JSON line."""

from __future__ import annotations

import asyncio
import sys

import msgspec

from agent.config import load_config
from agent.snmp.poller import poll_devices
from agent.snmp.usage import UsageTracker


def main() -> None:
    config = load_config(sys.argv[1])
    tracker = UsageTracker()
    for _ in sys.stdin:
        devices = asyncio.run(poll_devices(config.snmp, tracker))
        sys.stdout.write(msgspec.json.encode(devices).decode() + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
