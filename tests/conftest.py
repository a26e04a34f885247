"""Shared fixtures: network-namespace topologies and paths."""

from __future__ import annotations

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
