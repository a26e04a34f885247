"""Bounded lanes of threads for the blocking calls of probes, one lane per kind of work.

Name lookups (``getaddrinfo``) and HTTP requests block a thread. On asyncio's default
executor (6 threads on a 2-core office PC) six HTTP targets hanging during an internet
outage starved every other probe's name lookup, so a healthy LAN target read as
``timeout``. Here each kind gets its own lane with its own bound, so hung work of one
kind cannot delay another, and in-flight calls are capped per key (per name, per target):
a lookup still running from an earlier cycle is shared, not started again, and an HTTP
check whose previous request still hangs reports that instead of piling up threads.

Threads are daemon threads, started per call: one that never returns (a resolver that
hangs) cannot hold up the process's exit, and the lane's bound is on running threads.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections import deque
from collections.abc import Callable, Hashable
from typing import Any, Final, TypeVar

_T = TypeVar("_T")


class StillRunning(Exception):
    """The previous call for this key has not returned yet (it is hung, or slow)."""


class Lane:
    """At most ``size`` threads at once for one kind of blocking call."""

    def __init__(self, name: str, size: int) -> None:
        self.name = name
        self.size = size
        self._lock = threading.Lock()
        self._running = 0
        self._waiters: deque[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = deque()
        self._in_flight: dict[Hashable, concurrent.futures.Future[Any]] = {}

    @property
    def running(self) -> int:
        """Threads of this lane running now (hung ones included)."""
        with self._lock:
            return self._running

    async def run(self, key: Hashable, fn: Callable[[], _T], *, share: bool = False) -> _T:
        """Run ``fn`` in a lane thread; one call per ``key`` at a time.

        With ``share`` a caller finding ``key`` in flight waits for that call's result;
        without, it gets ``StillRunning`` at once. Cancelling the caller never kills the
        thread (nothing can), but the thread's slot is freed when it returns.
        """
        future: concurrent.futures.Future[_T] = concurrent.futures.Future()
        future.set_running_or_notify_cancel()  # never cancelled from outside: it runs
        with self._lock:
            existing = self._in_flight.setdefault(key, future)
        if existing is not future:
            if not share:
                raise StillRunning(key)
            return await asyncio.wrap_future(existing)
        try:
            await self._take_slot()
        except BaseException:
            with self._lock:
                self._in_flight.pop(key, None)
            future.set_exception(StillRunning(key))
            future.exception()  # retrieved: nobody else may be waiting
            raise

        def work() -> None:
            result: Any = None
            error: BaseException | None = None
            try:
                result = fn()
            except BaseException as exc:
                error = exc
            # Free the key before the caller wakes: it may call again at once.
            with self._lock:
                self._in_flight.pop(key, None)
            self._give_slot()
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(result)

        threading.Thread(target=work, name=f"hatang-{self.name}", daemon=True).start()
        return await asyncio.wrap_future(future)

    async def _take_slot(self) -> None:
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._running < self.size:
                self._running += 1
                return
            granted: asyncio.Future[None] = loop.create_future()
            self._waiters.append((loop, granted))
        try:
            await granted
        except BaseException:
            with self._lock, contextlib.suppress(ValueError):
                self._waiters.remove((loop, granted))
            if granted.done() and not granted.cancelled():
                self._give_slot()  # it was handed to us just as we gave up: pass it on
            raise

    def _give_slot(self) -> None:
        """Hand a finished thread's slot to the oldest waiter, else free it."""
        with self._lock:
            while self._waiters:
                loop, granted = self._waiters.popleft()
                if loop.is_closed():
                    continue
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(self._grant, granted)
                    return
            self._running -= 1

    def _grant(self, granted: asyncio.Future[None]) -> None:
        if granted.done():
            # Cancelled between the hand-over and now: its cleanup could not see the slot.
            self._give_slot()
        else:
            granted.set_result(None)


# Sizes: generous for a real office's targets (a few names, a few web sites), small
# enough that hung calls cannot make the agent a thread farm.
RESOLVE: Final = Lane("resolve", 8)
HTTP: Final = Lane("http", 16)
INVENTORY: Final = Lane("inventory", 4)  # inventory, antivirus, firewall, patches (agent.sections)
DISCOVERY: Final = Lane("discovery", 1)  # the daemon's sweep child (agent.discovery)
