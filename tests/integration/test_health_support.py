"""Real servers that misbehave on command, and a way to watch a running HealthMonitor.

(A support module: it holds no tests. It is named test_health_* to stay in
the health checker's corner of the tree.)
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import ssl
import struct
import threading
import time
from collections.abc import Coroutine, Iterable
from typing import Any, TypeVar

import uvloop

from lvsmon.health.monitor import HealthMonitor, Probe, Target, TransitionEvent
from lvsmon.model import DestKey, ServiceKey
from lvsmon.model.health import HealthCheck

T = TypeVar("T")
WEB = ServiceKey("tcp", "192.0.2.10", 80)
BIG = 10 * 2**20


def run(coro: Coroutine[Any, Any, T]) -> T:
    """The daemon's loop (uvloop)."""
    return uvloop.run(coro)


class LoopThread:
    """An asyncio loop in a daemon thread: servers there never share the monitor's loop."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 10) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


class Misbehaving:
    """An HTTP real server whose behaviour changes on command:

    ok      200 with `body`          status  503                   body   200, wrong body
    refuse  not listening at all     hang    accept, never answer  slow   answer after `delay`
    reset   half an answer, then RST close   accept, close at once big    200 with 10 MB
    flap    200 and 503 alternately, one per request
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        body: bytes = b"status: healthy\n",
        ssl_context: ssl.SSLContext | None = None,
    ):
        self.host = host
        self.body = body
        self.ssl = ssl_context
        self.mode = "ok"
        self.delay = 0.3
        self.requests = 0
        self.sent_bytes = 0
        self.cut_short = 0  # 10 MB answers the client reset before taking them all
        self._lt = LoopThread()
        # Accepting by hand rather than with asyncio.start_server: closing an asyncio
        # Server while a connection is being accepted leaks that connection's socket
        # (CPython gh-109564: Server._attach asserts, the error is swallowed), and
        # `refuse` closes the listener while probes connect.
        self._listener: socket.socket | None = None
        self._accepted: set[socket.socket] = set()  # not yet owned by a transport
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0
        self._lt.call(self._listen())

    async def _listen(self) -> None:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        listener = socket.socket(family, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host, self.port))
        listener.listen(128)
        listener.setblocking(False)
        self.port = listener.getsockname()[1]
        self._listener = listener
        asyncio.get_running_loop().add_reader(listener, self._accept)

    def _accept(self) -> None:
        assert self._listener is not None
        while True:
            try:
                conn, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue
            self._accepted.add(conn)
            task = asyncio.get_running_loop().create_task(self._serve(conn))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _serve(self, conn: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        protocol = asyncio.StreamReaderProtocol(reader)
        try:
            transport, _ = await loop.connect_accepted_socket(lambda: protocol, conn, ssl=self.ssl)
        except (ConnectionError, OSError):  # the client left during the TLS handshake
            conn.close()
            return
        except BaseException:
            conn.close()
            raise
        finally:
            self._accepted.discard(conn)
        await self._handle(reader, asyncio.StreamWriter(transport, protocol, reader, loop))

    async def _unlisten(self) -> None:
        assert self._listener is not None
        asyncio.get_running_loop().remove_reader(self._listener)
        self._listener.close()
        self._listener = None

    async def _shutdown(self) -> None:
        """Stop listening and end every connection (a `hang` answer, a 10 MB one)."""
        if self._listener is not None:
            await self._unlisten()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for conn in self._accepted:  # accepted, but its task was cancelled before it ran
            conn.close()
        for _ in range(3):  # the transports the handlers aborted report connection_lost
            await asyncio.sleep(0)

    @property
    def dest(self) -> DestKey:
        return DestKey(self.host, self.port)

    def set(self, mode: str) -> float:
        """Switch behaviour; returns the time.monotonic() of the switch."""
        if mode == "refuse" and self.mode != "refuse":
            self._lt.call(self._unlisten())
        elif mode != "refuse" and self.mode == "refuse":
            self._lt.call(self._listen())
        self.mode = mode
        return time.monotonic()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.requests += 1
        mode = self.mode
        if mode == "flap":
            mode = "ok" if self.requests % 2 else "status"
        try:
            with contextlib.suppress(asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            if mode == "close":  # FIN without a word (the request was read: no RST)
                return
            if mode == "hang":
                await asyncio.sleep(3600)
            if mode == "slow":
                await asyncio.sleep(self.delay)
            if mode == "reset":
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nstatus: hea")
                await writer.drain()
                await asyncio.sleep(0.01)
                sock = writer.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                writer.transport.abort()
                return
            if mode == "big":
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % BIG)
                chunk = self.body + b"x" * (65536 - len(self.body))
                try:
                    for _ in range(BIG // 65536):
                        writer.write(chunk)
                        self.sent_bytes += len(chunk)
                        await writer.drain()
                except (ConnectionError, OSError):
                    self.cut_short += 1
                return
            status, body = {
                "status": (b"503 Service Unavailable", self.body),
                "body": (b"200 OK", b"status: maintenance\n"),
            }.get(mode, (b"200 OK", self.body))
            writer.write(
                b"HTTP/1.1 %s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
                % (status, len(body), body)
            )
            await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.transport.abort()

    def close(self) -> None:
        self._lt.call(self._shutdown())
        self._lt.close()


class Watch:
    """A running HealthMonitor whose transitions arrive on a queue."""

    def __init__(self, targets: Iterable[Target], **kwargs: Any):
        self.events: asyncio.Queue[TransitionEvent] = asyncio.Queue()
        self.monitor = HealthMonitor(on_transition=self.events.put_nowait, **kwargs)
        self.monitor.configure(targets)

    async def __aenter__(self) -> Watch:
        await self.monitor.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.monitor.stop()

    async def next(self, timeout: float = 5.0) -> TransitionEvent:
        return await asyncio.wait_for(self.events.get(), timeout)

    async def settled(self, timeout: float = 5.0) -> list[Probe]:
        """Wait until every probe has a verdict (its first result decides)."""
        deadline = time.monotonic() + timeout
        while not all(p.state.settled for p in self.monitor.probes()):
            assert time.monotonic() < deadline, "probes did not settle"
            await asyncio.sleep(0.01)
        return self.monitor.probes()

    def quiet(self) -> list[TransitionEvent]:
        out = []
        while not self.events.empty():
            out.append(self.events.get_nowait())
        return out


class NoJitter(random.Random):
    """First runs at once: for tests about a verdict, not about the schedule."""

    def uniform(self, a: float, b: float) -> float:
        return a


async def first_verdict(check: HealthCheck, dest: DestKey, vs: str = "web") -> Probe:
    """Run one probe until its first result decides; return it (state, failures)."""
    async with Watch([Target(WEB, dest, check, vs)], rng=NoJitter()) as w:
        (probe,) = await w.settled()
        return probe
