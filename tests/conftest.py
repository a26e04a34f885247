"""Shared fixtures: network-namespace topologies and paths."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import netns

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def topo() -> Iterator[netns.Topology]:
    """A fresh namespace topology, deleted after the test even when it fails."""
    reason = netns.available()
    if reason:
        pytest.skip(reason)
    with netns.topology() as topology:
        yield topology


@pytest.fixture
def listener() -> Iterator[int]:
    """A TCP port on 127.0.0.1 that accepts connections (the kernel completes them from
    the backlog): the network-check target of agents under test."""
    with socket.create_server(("127.0.0.1", 0), backlog=128) as server:
        yield server.getsockname()[1]


@pytest.fixture
def closed_port() -> int:
    """A loopback port with nothing listening: connects are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def root_logging() -> Iterator[None]:
    """Restore the root logger after a test that configures it as the daemon process does."""
    import logging

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    for handler in root.handlers:
        if handler not in handlers:
            handler.close()
    root.handlers[:], root.level = handlers, level
