"""ProxyDataPlane against real sockets on loopback: real backends, real clients.

Everything runs in one event loop per test (uvloop, as the daemon runs it; a
few tests also on the stdlib loop). Time-based behaviour (tcp_fin, persistence,
idle timeouts) runs on an injected fake clock with a fast sweep interval, so
no test sleeps for the timeouts themselves.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import gc
import hashlib
import ipaddress
import os
import socket
import struct
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager, suppress
from typing import Any, TypeVar, cast

import pytest
import uvloop

from lvsmon.dataplane.base import DataPlaneError, DestStats, ServiceStats
from lvsmon.dataplane.proxy import ProxyDataPlane
from lvsmon.model import (
    DestKey,
    Forwarding,
    Protocol,
    RealServer,
    ServiceKey,
    Timeouts,
    VirtualServer,
)
from lvsmon.reconcile import (
    AddDest,
    AddService,
    DeleteDest,
    DeleteService,
    EditDest,
    EditService,
    Op,
)
from tests import ports

T = TypeVar("T")
LOOPS = ["uvloop", "asyncio"]
SWEEP = 0.01


def run(coro: Coroutine[Any, Any, T], loop: str = "uvloop") -> T:
    if loop == "uvloop":
        return uvloop.run(coro)
    return asyncio.run(coro)


# -- plumbing -------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def fd_count() -> int:
    gc.collect()  # sockets earlier tests dropped without closing must not count
    return len(os.listdir("/proc/self/fd"))


def free_port(host: str = "127.0.0.1", kind: int = socket.SOCK_STREAM) -> int:
    return ports.free_port(kind, host)


async def eventually(predicate: Callable[[], object], timeout: float = 3.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            state = f"fds={fd_count()} tasks={len(asyncio.all_tasks())}"
            raise AssertionError(f"timed out waiting for {what or predicate} [{state}]")
        await asyncio.sleep(0.005)


async def sweeps(n: int = 3) -> None:
    """Let the data plane's sweep timer run a few times."""
    await asyncio.sleep(SWEEP * n + 0.01)


class _BackendProtocol(asyncio.Protocol):
    """Greets with the backend's name, echoes, answers EOF with BYE and closes.

    b"!RST" resets the connection (SO_LINGER 0)."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass
        self.backend.transports.add(self.transport)
        self.backend.accepted += 1
        self.backend.open += 1
        self.transport.write(self.backend.name.encode() + b"\n")

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.backend.received += len(data)
        if b"!RST" in data:
            sock = self.transport.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.transport.abort()
            return
        self.transport.write(data)

    def eof_received(self) -> bool:
        assert self.transport is not None
        self.transport.write(b"BYE")
        self.transport.close()
        return True

    def pause_writing(self) -> None:
        assert self.transport is not None
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        assert self.transport is not None
        self.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is not None:
            self.backend.transports.discard(self.transport)
        self.backend.open -= 1
        if isinstance(exc, ConnectionResetError):
            self.backend.resets += 1


class Backend:
    """A TCP real server in the test's loop."""

    def __init__(self, name: str, host: str = "127.0.0.1") -> None:
        self.name = name
        self.host = host
        self.port = 0
        self.accepted = 0
        self.open = 0
        self.resets = 0
        self.received = 0
        self.server: asyncio.AbstractServer | None = None
        self.transports: set[asyncio.Transport] = set()  # accepted, not yet lost

    async def start(self) -> Backend:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(
            lambda: _BackendProtocol(self), self.host, 0, backlog=4096
        )
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        """Stop listening and drop what a test left connected (as the test's end)."""
        if self.server is not None:
            self.server.close()
            for transport in list(self.transports):
                transport.abort()
            await self.server.wait_closed()
            self.server = None

    def rs(self, weight: int = 1, **kw: Any) -> RealServer:
        return RealServer(ipaddress.ip_address(self.host), self.port, weight, **kw)


def dead_rs(host: str = "127.0.0.1", weight: int = 1) -> RealServer:
    """A real server nobody listens on: connects are refused."""
    return RealServer(ipaddress.ip_address(host), free_port(host), weight)


class Client:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, name: str):
        self.reader = reader
        self.writer = writer
        self.name = name

    async def echo(self, data: bytes) -> bytes:
        self.writer.write(data)
        await self.writer.drain()
        return await self.reader.readexactly(len(data))

    def close(self) -> None:
        self.writer.close()


async def connect(port: int, host: str = "127.0.0.1", src: str | None = None) -> Client:
    local = (src, 0) if src else None
    reader, writer = await asyncio.open_connection(host, port, local_addr=local)
    name = (await asyncio.wait_for(reader.readline(), 3)).decode().strip()
    return Client(reader, writer, name)


async def names_of(port: int, n: int, src: str | None = None) -> list[str]:
    """Backends reached by `n` sequential short connections."""
    out = []
    for _ in range(n):
        c = await connect(port, src=src)
        out.append(c.name)
        c.close()
        await c.writer.wait_closed()
    return out


def vs(
    port: int,
    scheduler: str = "rr",
    host: str = "127.0.0.1",
    protocol: Protocol = Protocol.TCP,
    **kw: Any,
) -> VirtualServer:
    return VirtualServer(
        name=f"vs{port}",
        address=ipaddress.ip_address(host),
        port=port,
        protocol=protocol,
        scheduler=scheduler,
        **kw,
    )


def add(service: VirtualServer, *reals: RealServer) -> list[Op]:
    return [AddService(service), *(AddDest(service.key, rs) for rs in reals)]


@asynccontextmanager
async def proxy(
    timeouts: Timeouts = Timeouts(),  # noqa: B008
    clock: Callable[[], float] = time.monotonic,
    connect_timeout: float = 3.0,
) -> AsyncIterator[ProxyDataPlane]:
    dp = ProxyDataPlane(
        timeouts, connect_timeout=connect_timeout, clock=clock, sweep_interval=SWEEP
    )
    await dp.start()
    try:
        yield dp
    finally:
        await dp.stop(0.5)


@asynccontextmanager
async def backends(*names: str, host: str = "127.0.0.1") -> AsyncIterator[list[Backend]]:
    started: list[Backend] = []
    try:
        for n in names:
            started.append(await Backend(n, host).start())
        yield started
    finally:
        for b in started:
            await b.close()


def service_stats(dp: ProxyDataPlane, key: ServiceKey) -> ServiceStats:
    for s in dp.snapshot().services:
        if s.service.key == key:
            return s
    raise AssertionError(f"{key} not in snapshot")


def dest_stats(dp: ProxyDataPlane, key: ServiceKey) -> dict[str, DestStats]:
    return {str(d.key): d for d in service_stats(dp, key).dests}


def connect_failures(dp: ProxyDataPlane) -> dict[tuple[ServiceKey, DestKey], int]:
    """Per (virtual server, real server), as the snapshot (and so /metrics) reports them.
    The proxy counts them for every real server (None is for data planes that cannot)."""
    failures: dict[tuple[ServiceKey, DestKey], int] = {}
    for s in dp.snapshot().services:
        for d in s.dests:
            assert d.connect_failures is not None, f"{d.key}: the proxy counts connect failures"
            failures[(s.service.key, d.key)] = d.connect_failures
    return failures


def label(b: Backend) -> str:
    return f"{b.host}:{b.port}" if ":" not in b.host else f"[{b.host}]:{b.port}"


# -- scheduling -------------------------------------------------------------------


@pytest.mark.parametrize("loop", LOOPS)
def test_round_robin_walks_the_newest_first_list(loop: str) -> None:
    async def main() -> None:
        async with backends("a", "b", "c") as (a, b, c), proxy() as dp:
            svc = vs(free_port())
            await dp.apply(add(svc, a.rs(), b.rs(), c.rs()))
            # IPVS keeps destinations newest first and rr starts at the head
            assert await names_of(svc.port, 6) == ["c", "b", "a", "c", "b", "a"]
            stats = service_stats(dp, svc.key)
            assert [str(rs.key) for rs in stats.service.real_servers] == [
                label(c),
                label(b),
                label(a),
            ]
            assert stats.counters.connections == 6
            assert {d.counters.connections for d in stats.dests} == {2}

    run(main(), loop)


def test_weighted_least_connection_follows_weights() -> None:
    async def main() -> None:
        async with backends("a", "b", "c") as (a, b, c), proxy() as dp:
            svc = vs(free_port(), "wlc")
            await dp.apply(add(svc, a.rs(1), b.rs(2), c.rs(3)))
            clients = [await connect(svc.port) for _ in range(60)]
            assert Counter(cl.name for cl in clients) == {"a": 10, "b": 20, "c": 30}
            active = {k: d.active for k, d in dest_stats(dp, svc.key).items()}
            assert active == {label(a): 10, label(b): 20, label(c): 30}
            for cl in clients:
                cl.close()

    run(main())


def test_weight_zero_quiesces_new_connections_but_keeps_existing() -> None:
    async def main() -> None:
        async with backends("a", "b") as (a, b), proxy() as dp:
            svc = vs(free_port())
            await dp.apply(add(svc, a.rs(), b.rs()))
            first = await connect(svc.port)
            assert first.name == "b"
            await dp.apply([EditDest(svc.key, b.rs(0))])
            assert await names_of(svc.port, 4) == ["a"] * 4
            assert await first.echo(b"still here" * 1000) == b"still here" * 1000
            d = dest_stats(dp, svc.key)[label(b)]
            assert (d.weight, d.active) == (0, 1)
            first.close()

    run(main())


def test_upper_threshold_overloads_a_real_server() -> None:
    async def main() -> None:
        async with backends("a", "b") as (a, b), proxy() as dp:
            svc = vs(free_port(), "wlc")
            await dp.apply(add(svc, a.rs(1), b.rs(100, upper_threshold=2)))
            # without the threshold b would take 9 of 10 (weight 100 against 1)
            held = [await connect(svc.port) for _ in range(10)]
            assert Counter(h.name for h in held) == {"b": 2, "a": 8}
            assert dest_stats(dp, svc.key)[label(b)].active == 2
            for h in held:
                h.close()

    run(main())


# -- persistence ------------------------------------------------------------------


@pytest.mark.parametrize(("netmask", "same"), [(32, False), (8, True)])
def test_persistence_groups_clients_by_netmask(netmask: int, same: bool) -> None:
    async def main() -> None:
        async with backends("a", "b", "c") as backs, proxy() as dp:
            svc = vs(free_port(), persistence_timeout=300, persistence_netmask=netmask)
            await dp.apply(add(svc, *(b.rs() for b in backs)))
            one = await names_of(svc.port, 4, src="127.0.0.1")
            two = await names_of(svc.port, 4, src="127.0.0.2")
            assert len(set(one)) == 1 and len(set(two)) == 1, (one, two)
            assert (one[0] == two[0]) is same
            templates = sum(d.persistent for d in dest_stats(dp, svc.key).values())
            assert templates == (1 if same else 2)

    run(main())


def test_persistence_template_expiry_and_control() -> None:
    async def main() -> None:
        clock = FakeClock()
        timeouts = Timeouts(tcp=10_000, tcp_fin=10, udp=30)
        async with backends("a", "b", "c") as (a, b, c), proxy(timeouts, clock) as dp:
            svc = vs(free_port(), persistence_timeout=60)
            await dp.apply(add(svc, a.rs(), b.rs(), c.rs()))
            assert await names_of(svc.port, 1) == ["c"]
            # every new connection refreshes the template's timer
            for _ in range(3):
                clock.advance(50)
                await sweeps()
                assert await names_of(svc.port, 1) == ["c"]
            # a template does not expire while it controls a connection
            held = await connect(svc.port)
            assert held.name == "c"
            clock.advance(1000)
            await sweeps()
            assert dest_stats(dp, svc.key)[label(c)].persistent == 1
            assert await names_of(svc.port, 1) == ["c"]
            held.close()
            # once the connections are gone (tcp_fin later) the template expires
            await eventually(lambda: dest_stats(dp, svc.key)[label(c)].active == 0)
            clock.advance(11)
            await sweeps()
            clock.advance(61)
            await sweeps()
            assert dest_stats(dp, svc.key)[label(c)].persistent == 0
            assert await names_of(svc.port, 1) == ["b"]  # scheduled afresh by rr

    run(main())


def test_persistence_sticks_to_quiesced_and_drops_deleted_real_servers() -> None:
    async def main() -> None:
        async with backends("a", "b") as (a, b), proxy() as dp:
            svc = vs(free_port(), persistence_timeout=300)
            await dp.apply(add(svc, a.rs(), b.rs()))
            assert await names_of(svc.port, 1) == ["b"]
            await dp.apply([EditDest(svc.key, b.rs(0))])
            # expire_quiescent_template = 0: the template still sends to b
            assert await names_of(svc.port, 2) == ["b", "b"]
            await dp.apply([DeleteDest(svc.key, b.rs().key)])
            assert await names_of(svc.port, 2) == ["a", "a"]
            assert dest_stats(dp, svc.key)[label(a)].persistent == 1

    run(main())


# -- accounting -------------------------------------------------------------------


def test_active_inactive_and_byte_accounting() -> None:
    async def main() -> None:
        clock = FakeClock()
        timeouts = Timeouts(tcp=900, tcp_fin=10, udp=30)
        async with backends("a") as (a,), proxy(timeouts, clock) as dp:
            svc = vs(free_port())
            await dp.apply(add(svc, a.rs()))

            def counts() -> tuple[int, int]:
                d = dest_stats(dp, svc.key)[label(a)]
                return d.active, d.inactive

            cl = await connect(svc.port)
            assert counts() == (1, 0)
            assert await cl.echo(b"x" * 1000) == b"x" * 1000
            cl.writer.write_eof()  # half-close: inactive from the first FIN
            await eventually(lambda: counts() == (0, 1), what="inactive after FIN")
            assert await cl.reader.read() == b"BYE"
            cl.close()
            await eventually(lambda: a.open == 0)
            await sweeps()
            assert counts() == (0, 1)  # closed, but counted for tcp_fin
            clock.advance(10.5)
            await eventually(lambda: counts() == (0, 0), what="tcp_fin expiry")
            stats = service_stats(dp, svc.key)
            assert stats.counters.connections == 1
            assert stats.counters.in_bytes == 1000
            assert stats.counters.out_bytes == len(b"a\n") + 1000 + len(b"BYE")
            assert stats.dests[0].counters == stats.counters

    run(main())


def test_idle_established_connection_is_closed_after_tcp_timeout() -> None:
    async def main() -> None:
        clock = FakeClock()
        timeouts = Timeouts(tcp=100, tcp_fin=10, udp=30)
        async with backends("a") as (a,), proxy(timeouts, clock) as dp:
            svc = vs(free_port())
            await dp.apply(add(svc, a.rs()))
            cl = await connect(svc.port)
            clock.advance(50)
            await sweeps()
            assert await cl.echo(b"ping") == b"ping"  # activity restarts the idle timer
            clock.advance(60)
            await sweeps()
            assert a.open == 1
            clock.advance(101)
            with pytest.raises(ConnectionResetError):
                await asyncio.wait_for(cl.reader.read(), 2)
            cl.close()
            await eventually(lambda: a.open == 0)

    run(main())


def test_edit_service_changes_attributes_in_place() -> None:
    async def main() -> None:
        async with backends("a", "b") as (a, b), proxy() as dp:
            svc = vs(free_port())
            await dp.apply(add(svc, a.rs(), b.rs()))
            held = await connect(svc.port)
            assert await names_of(svc.port, 2) == ["a", "b"]
            sticky = dataclasses.replace(svc, persistence_timeout=300, scheduler="wlc")
            await dp.apply([EditService(sticky)])
            first = await names_of(svc.port, 1)
            assert await names_of(svc.port, 3) == first * 3  # persistent from now on
            assert service_stats(dp, svc.key).service.scheduler == "wlc"
            await dp.apply([EditService(dataclasses.replace(sticky, persistence_timeout=0))])
            # wlc: `held` keeps b busy, so new short connections go to a
            assert await names_of(svc.port, 2) == ["a", "a"]
            assert await held.echo(b"same listener, same connection") == (
                b"same listener, same connection"
            )
            held.close()

    run(main())


def test_deleted_real_server_leaves_the_snapshot_but_its_connections_finish() -> None:
    async def main() -> None:
        async with backends("a", "b") as (a, b), proxy() as dp:
            svc = vs(free_port())
            await dp.apply(add(svc, a.rs(), b.rs()))
            cl = await connect(svc.port)
            assert cl.name == "b"
            await dp.apply([DeleteDest(svc.key, b.rs().key)])
            assert list(dest_stats(dp, svc.key)) == [label(a)]
            assert await cl.echo(b"data" * 100) == b"data" * 100
            # re-adding it while its connection lives brings its counts back (kernel trash)
            await dp.apply([AddDest(svc.key, b.rs())])
            assert dest_stats(dp, svc.key)[label(b)].active == 1
            cl.close()

    run(main())


# -- relaying ---------------------------------------------------------------------


@pytest.mark.parametrize("loop", LOOPS)
def test_half_close_lets_the_server_reply_fully(loop: str) -> None:
    async def main() -> None:
        async with backends("a") as (a,), proxy() as dp:
            svc = vs(free_port())
            await dp.apply(add(svc, a.rs()))
            cl = await connect(svc.port)
            payload = os.urandom(3 * 1024 * 1024)
            cl.writer.write(payload)
            cl.writer.write_eof()
            reply = await asyncio.wait_for(cl.reader.read(), 10)
            assert reply == payload + b"BYE"
            cl.close()

    run(main(), loop)


@pytest.mark.parametrize("loop", LOOPS)
def test_server_reset_reaches_the_client(loop: str) -> None:
    async def main() -> None:
        async with backends("a") as (a,), proxy() as dp:
            svc = vs(free_port())
            await dp.apply(add(svc, a.rs()))
            cl = await connect(svc.port)
            cl.writer.write(b"!RST")
            with pytest.raises(ConnectionResetError):
                await asyncio.wait_for(cl.reader.read(), 3)
            cl.close()

    run(main(), loop)


def test_client_reset_reaches_the_server() -> None:
    async def main() -> None:
        async with backends("a") as (a,), proxy() as dp:
            svc = vs(free_port())
            await dp.apply(add(svc, a.rs()))
            cl = await connect(svc.port)
            sock = cl.writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            cl.writer.transport.abort()
            await eventually(lambda: a.resets == 1, what="reset at the backend")

    run(main())


def test_backpressure_bounds_buffering_with_a_slow_reader() -> None:
    async def main() -> None:
        async with backends("a") as (a,), proxy() as dp:
            svc = vs(free_port())
            await dp.apply(add(svc, a.rs()))
            cl = await connect(svc.port)
            # the client writes but never reads: the echo backs up through the proxy,
            # which must stop reading rather than buffer everything
            chunk = b"z" * 65536
            sent = 0
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(1.5):
                    while True:
                        cl.writer.write(chunk)
                        sent += len(chunk)
                        await cl.writer.drain()
            assert sent < 64 * 1024 * 1024, "the proxy buffered without bound"
            got = 0
            while got < a.received:
                got += len(await asyncio.wait_for(cl.reader.read(1 << 20), 3))
            assert got == a.received  # nothing lost once the client reads
            cl.writer.transport.abort()

    run(main())


def test_unreachable_real_server_is_skipped_and_counted() -> None:
    async def main() -> None:
        dead = dead_rs()
        async with backends("a") as (a,), proxy() as dp:
            svc = vs(free_port())
            await dp.apply(add(svc, a.rs(), dead))
            assert await names_of(svc.port, 6) == ["a"] * 6
            failures = connect_failures(dp)
            assert failures[(svc.key, dead.key)] >= 3
            assert failures[(svc.key, a.rs().key)] == 0
            d = dest_stats(dp, svc.key)
            assert d[str(dead.key)].counters.connections == 0
            assert (d[str(dead.key)].active, d[str(dead.key)].inactive) == (0, 0)
            assert d[label(a)].counters.connections == 6

            # nothing reachable: the client is closed
            only_dead = vs(free_port())
            await dp.apply(add(only_dead, dead_rs(), dead_rs()))
            reader, writer = await asyncio.open_connection("127.0.0.1", only_dead.port)
            with pytest.raises((ConnectionResetError, asyncio.IncompleteReadError)):
                await asyncio.wait_for(reader.readexactly(1), 3)
            writer.close()

    run(main())


def _blackhole() -> tuple[socket.socket, list[socket.socket]]:
    """A listener whose accept queue is full: further SYNs go unanswered."""
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(0)
    fillers = []
    for _ in range(8):
        s = socket.socket()
        s.setblocking(False)
        with suppress(BlockingIOError):
            s.connect(lsock.getsockname())
        fillers.append(s)
    return lsock, fillers


def test_connect_timeout_fails_over_and_client_leaving_cancels_connect() -> None:
    async def main() -> None:
        lsock, fillers = _blackhole()
        hole = RealServer(ipaddress.ip_address("127.0.0.1"), lsock.getsockname()[1])
        try:
            # 1 s: long enough that the client's reset below always beats the timeout,
            # even on a loaded machine (CI once counted the cancelled connect as failed)
            async with backends("a") as (a,), proxy(connect_timeout=1.0) as dp:
                svc = vs(free_port())
                await dp.apply(add(svc, a.rs(), hole))
                baseline = len(asyncio.all_tasks())
                t0 = time.monotonic()
                assert await names_of(svc.port, 1) == ["a"]
                assert 0.95 < time.monotonic() - t0 < 5
                assert connect_failures(dp)[(svc.key, hole.key)] == 1

                # a request and FIN sent before any real server accepted still get through
                reader, writer = await asyncio.open_connection("127.0.0.1", svc.port)
                writer.write(b"early")
                writer.write_eof()
                assert await asyncio.wait_for(reader.read(), 5) == b"a\nearlyBYE"
                writer.close()
                await writer.wait_closed()
                assert connect_failures(dp)[(svc.key, hole.key)] == 2

                # the next one is scheduled to the hole again (rr); the client resets
                # while the proxy is still connecting: the connect is cancelled
                fds = fd_count()
                _, writer = await asyncio.open_connection("127.0.0.1", svc.port)
                await asyncio.sleep(0.05)
                # the client's socket, the proxy's end of it and its connecting socket
                assert fd_count() == fds + 3
                assert dest_stats(dp, svc.key)[str(hole.key)].inactive == 1
                sock = writer.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                writer.transport.abort()
                await eventually(lambda: fd_count() == fds, what="cancel")
                assert len(asyncio.all_tasks()) == baseline
                assert dest_stats(dp, svc.key)[str(hole.key)].inactive == 0
                assert connect_failures(dp)[(svc.key, hole.key)] == 2
        finally:
            lsock.close()
            for s in fillers:
                s.close()

    run(main())


def test_streaming_is_byte_exact_across_apply() -> None:
    async def main() -> None:
        async with backends("a", "b", "c") as (a, b, c), proxy() as dp:
            svc = vs(free_port(), "wlc")
            await dp.apply(add(svc, a.rs()))
            cl = await connect(svc.port)
            assert cl.name == "a"
            sent, received = hashlib.sha256(), hashlib.sha256()
            stop = asyncio.Event()

            async def pump() -> int:
                total = 0
                while not stop.is_set():
                    chunk = os.urandom(32 * 1024)
                    sent.update(chunk)
                    cl.writer.write(chunk)
                    await cl.writer.drain()
                    total += len(chunk)
                cl.writer.write_eof()
                return total

            async def drain() -> bytes:
                data = bytearray()
                while chunk := await cl.reader.read(1 << 16):
                    data += chunk
                return bytes(data)

            writer, reader = asyncio.create_task(pump()), asyncio.create_task(drain())
            changes: list[list[Op]] = [
                [AddDest(svc.key, b.rs(2))],
                [EditDest(svc.key, a.rs(5))],
                [EditService(dataclasses.replace(svc, scheduler="rr"))],
                [AddDest(svc.key, c.rs()), DeleteDest(svc.key, b.rs().key)],
                [EditDest(svc.key, a.rs(0))],
                [DeleteDest(svc.key, a.rs().key)],
            ]
            for ops in changes:
                await asyncio.sleep(0.1)
                await dp.apply(ops)
            await asyncio.sleep(0.1)
            stop.set()
            total = await writer
            data = await asyncio.wait_for(reader, 10)
            assert data.endswith(b"BYE")
            received.update(data[:-3])
            assert len(data) - 3 == total > 1024 * 1024
            assert received.hexdigest() == sent.hexdigest()
            assert [d.key for d in service_stats(dp, svc.key).dests] == [c.rs().key]
            cl.close()

    run(main())


def test_delete_service_stops_listening_but_lets_connections_finish() -> None:
    async def main() -> None:
        async with backends("a") as (a,), proxy() as dp:
            svc = vs(free_port())
            await dp.apply(add(svc, a.rs()))
            cl = await connect(svc.port)
            await dp.apply([DeleteService(svc.key)])
            assert dp.snapshot().services == ()
            with pytest.raises(ConnectionRefusedError):
                await asyncio.open_connection("127.0.0.1", svc.port)
            assert await cl.echo(b"after delete") == b"after delete"
            # and the same virtual server can come back at once
            await dp.apply(add(svc, a.rs()))
            assert await names_of(svc.port, 1) == ["a"]
            cl.close()

    run(main())


def test_ipv6_virtual_and_real_servers() -> None:
    async def main() -> None:
        async with backends("a6", "b6", host="::1") as (a, b), proxy() as dp:
            svc = vs(free_port("::1"), host="::1")
            await dp.apply(add(svc, a.rs(), b.rs()))
            names = []
            for _ in range(4):
                cl = await connect(svc.port, host="::1")
                names.append(cl.name)
                assert await cl.echo(b"v6") == b"v6"
                cl.close()
            assert names == ["b6", "a6", "b6", "a6"]
            assert {str(d.key) for d in service_stats(dp, svc.key).dests} == {
                label(a),
                label(b),
            }

    run(main())


# -- apply errors -----------------------------------------------------------------


def test_apply_rejects_what_the_proxy_cannot_do() -> None:
    async def main() -> None:
        async with backends("a") as (a,), proxy() as dp:
            fwm = VirtualServer(name="fw", address=None, port=0, fwmark=7)
            with pytest.raises(DataPlaneError, match="firewall-mark"):
                await dp.apply([AddService(fwm)])
            sctp = vs(free_port(), protocol=Protocol.SCTP)
            with pytest.raises(DataPlaneError, match="sctp"):
                await dp.apply([AddService(sctp)])
            svc = vs(free_port())
            dr = dataclasses.replace(a.rs(), forwarding=Forwarding.DR)
            with pytest.raises(DataPlaneError, match="NAT"):
                await dp.apply(add(svc, dr))
            with pytest.raises(DataPlaneError, match="unknown scheduler"):
                await dp.apply([AddService(vs(free_port(), "nope"))])

            taken = socket.socket()
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            busy = vs(taken.getsockname()[1])
            with pytest.raises(DataPlaneError) as err:
                await dp.apply([AddService(busy)])
            taken.close()
            assert busy.name in str(err.value) and f"127.0.0.1:{busy.port}" in str(err.value)
            assert "in use" in str(err.value)

    run(main())


# -- UDP --------------------------------------------------------------------------


class _UdpEcho(asyncio.DatagramProtocol):
    def __init__(self, name: str) -> None:
        self.name = name.encode()
        self.transport: asyncio.DatagramTransport | None = None
        self.peers: Counter[Any] = Counter()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        assert self.transport is not None
        self.peers[addr] += 1
        self.transport.sendto(self.name + b":" + data, addr)


@asynccontextmanager
async def udp_backends(*names: str) -> AsyncIterator[list[tuple[_UdpEcho, RealServer]]]:
    loop = asyncio.get_running_loop()
    started: list[tuple[_UdpEcho, RealServer]] = []
    try:
        for name in names:
            transport, proto = await loop.create_datagram_endpoint(
                functools.partial(_UdpEcho, name), local_addr=("127.0.0.1", 0)
            )
            port = transport.get_extra_info("sockname")[1]
            started.append((proto, RealServer(ipaddress.ip_address("127.0.0.1"), port)))
        yield started
    finally:
        for proto, _ in started:
            if proto.transport is not None:
                proto.transport.close()


async def udp_ask(sock: socket.socket, data: bytes, timeout: float = 2.0) -> bytes:
    loop = asyncio.get_running_loop()
    await loop.sock_sendall(sock, data)
    return await asyncio.wait_for(loop.sock_recv(sock, 65535), timeout)


@pytest.mark.parametrize("loop", LOOPS)
def test_udp_flows_relay_and_expire(loop: str) -> None:
    async def main() -> None:
        clock = FakeClock()
        udp = udp_backends("a", "b")
        async with udp as ((pa, a), (pb, b)), proxy(Timeouts(udp=30), clock) as dp:
            svc = vs(free_port(kind=socket.SOCK_DGRAM), protocol=Protocol.UDP)
            await dp.apply(add(svc, a, b))
            fds = fd_count()
            clients = []
            for _ in range(4):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                s.setblocking(False)
                s.connect(("127.0.0.1", svc.port))
                clients.append(s)
            replies = [await udp_ask(s, b"hello") for s in clients]
            assert replies == [b"b:hello", b"a:hello", b"b:hello", b"a:hello"]
            # the same client stays on its flow
            for _ in range(3):
                assert await udp_ask(clients[0], b"again") == b"b:again"
            assert len(pb.peers) == 2 and len(pa.peers) == 2  # one upstream socket per flow
            stats = service_stats(dp, svc.key)
            assert stats.counters.connections == 4
            assert [(d.active, d.inactive) for d in stats.dests] == [(0, 2), (0, 2)]
            assert stats.counters.in_bytes == 4 * 5 + 3 * 5
            assert stats.counters.out_bytes == 4 * 7 + 3 * 7
            assert fd_count() == fds + 4 + 4
            clock.advance(31)
            await eventually(lambda: all(d.inactive == 0 for d in service_stats(dp, svc.key).dests))
            assert fd_count() == fds + 4
            assert await udp_ask(clients[1], b"new flow") == b"b:new flow"
            for s in clients:
                s.close()

    run(main(), loop)


def test_udp_delete_service_keeps_flows_until_idle() -> None:
    async def main() -> None:
        clock = FakeClock()
        async with udp_backends("a") as ((_, a),), proxy(Timeouts(udp=30), clock) as dp:
            svc = vs(free_port(kind=socket.SOCK_DGRAM), protocol=Protocol.UDP)
            await dp.apply(add(svc, a))
            old = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            old.connect(("127.0.0.1", svc.port))
            old.setblocking(False)
            assert await udp_ask(old, b"1") == b"a:1"
            await dp.apply([DeleteService(svc.key)])
            assert await udp_ask(old, b"2") == b"a:2"  # existing flow goes on
            new = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            new.connect(("127.0.0.1", svc.port))
            new.setblocking(False)
            with pytest.raises(TimeoutError):
                await udp_ask(new, b"x", 0.3)  # no new flows
            clock.advance(31)
            await sweeps()
            with pytest.raises((TimeoutError, ConnectionRefusedError)):
                await udp_ask(old, b"3", 0.3)  # flow expired and the socket is closed
            old.close()
            new.close()

    run(main())


# -- lifecycle --------------------------------------------------------------------


def test_stop_waits_for_grace_then_resets() -> None:
    async def main() -> None:
        async with backends("a") as (a,):
            dp = ProxyDataPlane(sweep_interval=SWEEP)
            await dp.start()
            baseline = len(asyncio.all_tasks())
            svc = vs(free_port())
            await dp.apply(add(svc, a.rs()))
            quick = await connect(svc.port)
            slow = await connect(svc.port)

            async def finish_quick() -> None:
                await asyncio.sleep(0.1)
                quick.writer.write_eof()
                assert await quick.reader.read() == b"BYE"
                quick.close()

            closer = asyncio.create_task(finish_quick())
            t0 = time.monotonic()
            await dp.stop(0.4)
            assert 0.35 < time.monotonic() - t0 < 2
            await closer
            with pytest.raises(ConnectionResetError):
                await asyncio.wait_for(slow.reader.read(), 2)
            slow.close()
            await eventually(lambda: a.open == 0)
            assert len(asyncio.all_tasks()) == baseline

    run(main())


@pytest.mark.parametrize("loop", LOOPS)
def test_no_leaks_under_resets_clean_closes_and_dead_backends(loop: str) -> None:
    async def main() -> None:
        ev = asyncio.get_running_loop()
        async with backends("a") as (a,), proxy() as dp:
            svc = vs(free_port())
            dead = vs(free_port())
            await dp.apply(add(svc, a.rs()) + add(dead, dead_rs(), dead_rs()))
            await asyncio.sleep(0.05)
            fds, tasks = fd_count(), len(asyncio.all_tasks())
            linger0 = struct.pack("ii", 1, 0)

            async def one(i: int) -> None:
                port = dead.port if i % 5 == 0 else svc.port
                s = socket.socket()
                s.setblocking(False)
                try:
                    await ev.sock_connect(s, ("127.0.0.1", port))
                    if i % 5 == 1:  # clean: request, reply, close
                        await ev.sock_sendall(s, b"hi")
                        got = b""
                        while len(got) < 4:
                            got += await ev.sock_recv(s, 16)
                        assert got == b"a\nhi"
                    elif i % 5 == 2:  # reset after some data has flowed
                        await ev.sock_sendall(s, b"data")
                        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger0)
                    elif i % 5 == 0:  # dead backend: wait for the proxy to give up
                        await ev.sock_recv(s, 16)
                    else:  # reset at once, often before the upstream connect is done
                        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger0)
                except (ConnectionResetError, BrokenPipeError):
                    pass
                finally:
                    s.close()

            for batch in range(6):
                await asyncio.gather(*(one(batch * 500 + i) for i in range(500)))
            await eventually(lambda: a.open == 0, timeout=10, what="backend connections closed")
            await eventually(
                lambda: fd_count() == fds and len(asyncio.all_tasks()) == tasks,
                timeout=10,
                what=f"fds and tasks back to baseline ({fds}, {tasks})",
            )
            d = dest_stats(dp, svc.key)[label(a)]
            # clients that reset before the real server accepted were never connections
            assert 600 <= d.counters.connections <= 2400
            assert (d.active, d.inactive) == (0, d.counters.connections)  # all in tcp_fin
            dead_failures = sum(
                n for (key, _), n in connect_failures(dp).items() if key == dead.key
            )
            assert dead_failures == 2 * 600

    run(main(), loop)
