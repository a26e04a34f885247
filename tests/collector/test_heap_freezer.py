"""HeapFreezer: the objects alive at a refresh are left out of the GC's passes, and cycles
among them that die later are still collected, by the periodic full collection."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from collector.app import HeapFreezer


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


@pytest.fixture(autouse=True)
def unfrozen() -> Iterator[None]:
    yield
    gc.unfreeze()  # the test process goes on with a normal heap
    gc.collect()


def test_frozen_objects_skip_passes_and_the_full_collection_frees_their_cycles() -> None:
    now = [0.0]
    freezer = HeapFreezer(full_every=600.0, clock=lambda: now[0])
    a, b = Node(), Node()
    a.other, b.other = b, a  # a cycle, alive while the refresh runs
    gone = weakref.ref(a)
    freezer.after_refresh()
    assert gc.get_freeze_count() > 0
    del a, b  # the cycle dies after the freeze: only a collection can free it
    gc.collect()
    assert gone() is not None  # frozen: passes do not walk it (what spares the p99)
    now[0] = 599.0
    freezer.after_refresh()
    gc.collect()
    assert gone() is not None  # not yet time for a full collection
    now[0] = 600.0
    freezer.after_refresh()
    assert gone() is None  # the periodic full collection bounds what frozen cycles hold
    assert gc.get_freeze_count() > 0  # and the survivors are frozen again


def test_frozen_objects_without_cycles_die_by_reference_count_at_once() -> None:
    freezer = HeapFreezer(clock=lambda: 0.0)
    snapshot = [Node() for _ in range(3)]  # no cycles: like the snapshot's objects
    gone = weakref.ref(snapshot[0])
    freezer.after_refresh()
    snapshot = []  # replaced by the next refresh
    assert gone() is None and snapshot == []
