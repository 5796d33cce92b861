"""One loop timer for thousands of probes.

Each probe sleeps until its next start and arms a deadline while it runs.
With a loop timer each (asyncio.sleep, call_at), 10k probes a second cost a
timer handle apiece: on uvloop, a libuv handle allocated and freed every time,
the largest single cost of scheduling. Here wake-ups and deadlines go on one
heap, served by one task that wakes at the first entry's time but never more
often than every `tick` seconds, so under load one wake-up serves many
entries: each runs at most `tick` late, noise against intervals of seconds
and timeouts of tens of milliseconds. Cancelling an entry only marks it; it
leaves the heap when its time comes.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
from collections.abc import Callable
from typing import Any

TICK = 0.005

# [when, seq, action]: a list so cancel() can blank the action in place
Entry = list[Any]


class Ticker:
    def __init__(self, tick: float = TICK):
        self.tick = tick
        self._heap: list[Entry] = []
        self._seq = itertools.count()
        self._task: asyncio.Task[None] | None = None
        self._wake_at = math.inf  # when the runner wakes next
        self._waiter: asyncio.Future[None] | None = None

    def at(self, when: float, action: Callable[[], object] | asyncio.Future[None]) -> Entry:
        """Run `action` (or resolve the future) at loop time `when`."""
        entry = [when, next(self._seq), action]
        heapq.heappush(self._heap, entry)
        if when + self.tick < self._wake_at and self._waiter is not None:
            _wake(self._waiter)  # sooner than planned: re-plan now
        return entry

    @staticmethod
    def cancel(entry: Entry) -> None:
        entry[2] = None

    async def sleep_until(self, when: float) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.at(when, fut)
        await fut

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="health ticker")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        heap = self._heap
        pop = heapq.heappop
        future = asyncio.Future
        while True:
            now = loop.time()
            while heap and heap[0][0] <= now:
                action = pop(heap)[2]
                if action is None:
                    continue
                if isinstance(action, future):
                    if not action.done():
                        action.set_result(None)
                else:
                    action()
            self._wake_at = max(heap[0][0], now + self.tick) if heap else math.inf
            self._waiter = waiter = loop.create_future()
            timer = loop.call_at(self._wake_at, _wake, waiter) if heap else None
            try:
                await waiter
            finally:
                self._waiter = None
                if timer is not None:
                    timer.cancel()


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class Limit:
    """A semaphore whose uncontended acquire costs no await (asyncio.Semaphore's
    `async with` is a coroutine call and a context manager per probe)."""

    def __init__(self, size: int):
        self.size = size
        self.free = size
        self._waiters: list[asyncio.Future[None]] = []

    @property
    def in_use(self) -> int:
        return self.size - self.free

    async def wait(self) -> None:
        """Acquire when `free` is 0: queue until release() hands a slot over."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release()  # granted, then cancelled before it ran: pass it on
            elif fut in self._waiters:
                self._waiters.remove(fut)
            raise

    def release(self) -> None:
        while self._waiters:
            fut = self._waiters.pop(0)
            if not fut.done():
                fut.set_result(None)  # the slot moves to the waiter: `free` is unchanged
                return
        self.free += 1
