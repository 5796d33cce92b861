"""One level-triggered epoll instance for every TCP socket of a proxy data plane,
watched by the running asyncio loop with a single add_reader, and the one timer
for all connect timeouts. The listeners (`proxy_accept`) and the relays
(`proxy_tcp`) register their sockets here with a handler per fd.
"""

from __future__ import annotations

import asyncio
import contextlib
import select
from collections.abc import Callable
from typing import Any, Protocol

from lvsmon.dataplane.proxy_state import Runtime

# Readiness events handled per loop callback; more wait for the next iteration.
MAX_EVENTS = 512
# One read per readiness event, into a buffer shared by all connections.
READ_SIZE = 256 * 1024
# Connect timeouts fire at most this late; bounds the timer to 1/TICK per second.
CONNECT_TICK = 0.01

EPOLLIN = select.EPOLLIN
EPOLLOUT = select.EPOLLOUT
EPOLLRDHUP = select.EPOLLRDHUP
READ = EPOLLIN | EPOLLRDHUP
TROUBLE = select.EPOLLERR | select.EPOLLHUP
# Not in the epoll set. No event has this bit, so `mask & EPOLLIN` is false.
UNREGISTERED = 1 << 40

Handler = Callable[[int], None]


class Relay(Protocol):
    """What the poller asks of a connection: give up a connect, or reset after a bug."""

    def connect_timed_out(self) -> None: ...

    def reset(self) -> None: ...


class Poller:
    """The epoll instance and its handlers, keyed by fd. A socket closed while a
    batch of events is being dispatched puts its fd in `stale`, so an event
    fetched for it cannot reach a new socket that reused the number within the
    same batch.
    """

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.loop = rt.loop
        self.ep = select.epoll()
        self.handlers: dict[int, Handler] = {}
        self.stale: set[int] = set()
        self.dispatching = False
        self.buf = bytearray(READ_SIZE)
        self.view = memoryview(self.buf)
        # connections waiting for their real server, oldest deadline first
        self.connecting: dict[Relay, float] = {}
        self._timer: asyncio.TimerHandle | None = None
        self.closed = False
        self.loop.add_reader(self.ep.fileno(), self._dispatch)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.loop.remove_reader(self.ep.fileno())
        self.ep.close()

    def forget(self, fd: int) -> None:
        """Before closing fd (closing takes it out of the epoll set)."""
        del self.handlers[fd]
        if self.dispatching:
            self.stale.add(fd)

    def _dispatch(self) -> None:
        try:
            events = self.ep.poll(0, MAX_EVENTS)
        except InterruptedError:
            return
        handlers = self.handlers
        stale = self.stale
        self.dispatching = True
        try:
            for fd, ev in events:
                if fd in stale:
                    continue
                handler = handlers.get(fd)
                if handler is None:
                    continue
                try:
                    handler(ev)
                except Exception as exc:  # a bug: keep the loop and other relays going
                    self._failed(handler, exc)
        finally:
            self.dispatching = False
            stale.clear()

    def _failed(self, handler: Handler, exc: Exception) -> None:
        owner: Any = getattr(handler, "__self__", None)
        self.loop.call_exception_handler(
            {"message": f"proxy: unexpected error in {owner!r}", "exception": exc}
        )
        reset = getattr(owner, "reset", None)  # a relay; a listener has nothing to reset
        if reset is not None:
            with contextlib.suppress(Exception):  # reported already; do not loop on it
                reset()

    # -- connect timeouts: one timer for all ---------------------------------------

    def watch_connect(self, conn: Relay) -> None:
        self.connecting[conn] = deadline = self.loop.time() + self.rt.connect_timeout
        if self._timer is None and not self.closed:
            self._timer = self.loop.call_at(deadline, self._expire_connects)

    def _expire_connects(self) -> None:
        self._timer = None
        now = self.loop.time()
        connecting = self.connecting
        expired = []
        for conn, deadline in connecting.items():  # in deadline order
            if deadline > now:
                break
            expired.append(conn)
        for conn in expired:
            del connecting[conn]
        for conn in expired:
            conn.connect_timed_out()
        if connecting and self._timer is None and not self.closed:
            first = next(iter(connecting.values()))
            self._timer = self.loop.call_at(max(first, now + CONNECT_TICK), self._expire_connects)
