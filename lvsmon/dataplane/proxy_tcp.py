"""The proxy's TCP relay: a listener per virtual server and, per connection, two
asyncio Protocols (client side `TcpConnection`, real-server side `_Upstream`).

Accounting follows IPVS: a connection is inactive while its real server is
being connected, active once connected, inactive again from the first FIN or
close on either side, and stays counted inactive for tcp_fin after both
sockets are closed (`Lingering`).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from functools import partial
from typing import cast

from lvsmon.dataplane.proxy_net import bind_socket, parse_address, reset_transport
from lvsmon.dataplane.proxy_state import DestState, Runtime, ServiceState, Template
from lvsmon.model import IPAddress

log = logging.getLogger("lvsmon.proxy")

BACKLOG = 4096
# Client bytes held while the real server is being connected; beyond this the
# client is paused until the connect finishes.
PRECONNECT_LIMIT = 256 * 1024
# Per-direction write buffer before the other side is paused. Large enough for
# bulk transfers not to ping-pong between pause and resume.
WRITE_HIGH_WATER = 256 * 1024

CONNECTING, ESTABLISHED, CLOSING = 0, 1, 2


async def open_tcp_listener(rt: Runtime, svc: ServiceState) -> asyncio.AbstractServer:
    sock = bind_socket(svc.vs.name, svc.address, svc.vs.port, socket.SOCK_STREAM)
    try:
        sock.listen(BACKLOG)
        return await rt.loop.create_server(
            lambda: TcpConnection(rt, svc), sock=sock, backlog=BACKLOG
        )
    except BaseException:
        sock.close()
        raise


class TcpConnection(asyncio.Protocol):
    """One client connection and, once connected, its real server."""

    __slots__ = (
        "client",
        "client_eof",
        "client_open",
        "connecting",
        "dest",
        "finished",
        "last_seen",
        "pending",
        "pending_size",
        "rt",
        "seen",
        "src",
        "src_port",
        "state",
        "svc",
        "task",
        "timed_out",
        "tmpl",
        "up",
        "upstream",
    )

    client: asyncio.Transport
    dest: DestState
    src: IPAddress
    src_port: int

    def __init__(self, rt: Runtime, svc: ServiceState) -> None:
        self.rt = rt
        self.svc = svc
        # client, src, src_port: set by connection_made; dest: set by attach
        self.upstream: asyncio.Transport | None = None
        self.up: _Upstream | None = None
        self.tmpl: Template | None = None
        self.task: asyncio.Task[None] | None = None
        self.state = CONNECTING
        self.client_open = False
        self.client_eof = False
        self.connecting = False
        self.timed_out = False
        self.finished = False
        self.pending: list[bytes] | None = None
        self.pending_size = 0
        self.seen = False
        self.last_seen = 0.0

    def __repr__(self) -> str:
        src = getattr(self, "src", "?")
        return f"<TcpConnection {self.svc.key} from {src} state={self.state}>"

    # -- client side ---------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.client = transport  # type: ignore[assignment]  # no cast(): hot path
        self.client_open = True
        rt = self.rt
        rt.conns.add(self)
        now = rt.clock()
        self.last_seen = now
        peer = transport.get_extra_info("peername")
        if peer is None:  # reset before we got to it: nothing to relay
            self.client.abort()
            return
        self.src = src = parse_address(peer[0])
        self.src_port = peer[1]
        dest, self.tmpl = self.svc.pick(src, self.src_port, now)
        if dest is None:
            log.debug("%s: no real server available for %s", self.svc.key, peer[0])
            reset_transport(self.client)
            return
        self.connecting = True
        self.task = rt.loop.create_task(self._connect(dest))

    def data_received(self, data: bytes) -> None:
        upstream = self.upstream
        if upstream is None:
            self._hold(data)
            return
        try:
            upstream.write(data)
        except RuntimeError:  # upstream handle already closed; its connection_lost follows
            return
        n = len(data)
        self.dest.in_bytes += n
        self.svc.in_bytes += n
        self.seen = True

    def eof_received(self) -> bool:
        self.client_eof = True
        if self.upstream is not None:  # otherwise forwarded once connected
            self._to_inactive()
            if self.up is not None and self.up.eof:
                self._close_both()
            else:
                _write_eof(self.upstream)
        return True  # keep the client readable for the real server's reply

    def connection_lost(self, exc: Exception | None) -> None:
        self.client_open = False
        up = self.up
        if up is not None:
            self._to_inactive()
            if up.open:
                if exc is None:
                    up.transport.close()
                else:
                    reset_transport(up.transport)
        elif self.task is not None and self.connecting:
            self.task.cancel()  # a client leaving mid-connect cancels the connect
        self._maybe_finish()

    def pause_writing(self) -> None:
        # client write buffer full: stop reading the real server that fills it
        if self.upstream is not None:
            self.upstream.pause_reading()

    def resume_writing(self) -> None:
        # not after its EOF: reading again would only report the EOF again
        if self.upstream is not None and self.up is not None and not self.up.eof:
            self.upstream.resume_reading()

    def _hold(self, data: bytes) -> None:
        if self.pending is None:
            self.pending = [data]
        else:
            self.pending.append(data)
        self.pending_size += len(data)
        self.seen = True
        if self.pending_size >= PRECONNECT_LIMIT:
            self.client.pause_reading()

    # -- connecting ----------------------------------------------------------

    async def _connect(self, dest: DestState) -> None:
        """Connect to `dest`, falling over to the next scheduled destination
        (never one already tried) when it refuses or times out."""
        tried: list[DestState] = []
        try:
            while not await self._connect_one(dest):
                if not self.client_open:
                    return
                tried.append(dest)
                nxt = self.svc.schedule(self.src, self.src_port, self.rt.clock(), tried)
                if nxt is None:
                    log.debug("%s: no reachable real server for %s", self.svc.key, self.src)
                    reset_transport(self.client)
                    return
                dest = nxt
        finally:
            self.connecting = False
            self._maybe_finish()

    async def _connect_one(self, dest: DestState) -> bool:
        """One connect attempt. False if `dest` refused or timed out."""
        loop = self.rt.loop
        dest.open_inactive()  # IPVS counts a connection in SYN state as inactive
        # a plain timer, cheaper than asyncio.timeout() on this per-connection path
        timer = loop.call_later(self.rt.connect_timeout, self._connect_timed_out)
        try:
            await loop.create_connection(partial(_Upstream, self, dest), dest.host, dest.port)
        except asyncio.CancelledError:
            if not self.timed_out:  # the client left
                if self.up is None:
                    dest.close_inactive()
                raise
            self.timed_out = False
            cast("asyncio.Task[None]", self.task).uncancel()
            error: OSError = TimeoutError(f"no answer within {self.rt.connect_timeout}s")
        except OSError as exc:  # refused, unreachable
            error = exc
        else:
            if self.up is None:  # connected, but the client had left: abandoned
                dest.close_inactive()
            return True
        finally:
            timer.cancel()
        if self.up is not None:  # connected just as the timer fired: it is relaying
            return True
        dest.close_inactive()
        dest.connect_failures += 1
        log.debug("%s: real server %s unreachable: %s", self.svc.key, dest.label, error)
        return False

    def _connect_timed_out(self) -> None:
        if self.connecting and self.task is not None:
            self.timed_out = True
            self.task.cancel()

    def attach(self, up: _Upstream, transport: asyncio.Transport) -> bool:
        """The real server accepted: start relaying. False if the client is gone."""
        if not self.client_open:
            return False
        dest = up.dest
        self.up = up
        self.upstream = transport
        self.dest = dest
        dest.inactive -= 1  # connecting counted inactive; now established
        dest.active += 1
        dest.connections += 1
        self.svc.connections += 1
        self.state = ESTABLISHED
        transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        self.client.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        if self.pending_size >= PRECONNECT_LIMIT and not self.client_eof:
            self.client.resume_reading()  # before writing: the write may pause it again
        if self.pending is not None:
            data = b"".join(self.pending)
            self.pending = None
            transport.write(data)
            dest.in_bytes += len(data)
            self.svc.in_bytes += len(data)
        if self.client_eof:
            transport.write_eof()
            self._to_inactive()
        return True

    # -- shared --------------------------------------------------------------

    def _to_inactive(self) -> None:
        if self.state == ESTABLISHED:
            self.state = CLOSING
            dest = self.dest
            dest.active -= 1
            dest.inactive += 1

    def _close_both(self) -> None:
        self.client.close()
        if self.up is not None:
            self.up.transport.close()

    def upstream_lost(self, exc: Exception | None) -> None:
        self._to_inactive()
        if self.client_open:
            if exc is None:
                self.client.close()
            else:
                reset_transport(self.client)  # propagate the reset
        self._maybe_finish()

    def _maybe_finish(self) -> None:
        if self.finished or self.client_open or self.connecting:
            return
        up = self.up
        if up is not None and up.open:
            return
        self.finished = True
        self.rt.forget(self)
        if up is not None:
            self.rt.lingering.add(self.dest, self.tmpl)  # counted inactive for tcp_fin
        elif self.tmpl is not None:
            self.tmpl.release()

    def check_idle(self, now: float, since: float) -> None:
        """Reset if idle too long; `seen` means traffic after the sweep at `since`."""
        if self.seen:
            self.seen = False
            self.last_seen = max(self.last_seen, since)
            return
        timeouts = self.rt.timeouts
        if self.state == ESTABLISHED:
            limit = timeouts.tcp
        elif self.state == CLOSING:
            limit = timeouts.tcp_fin  # half-closed: IPVS's FIN_WAIT timeout
        else:
            return  # connecting: connect_timeout applies
        if now - self.last_seen >= limit:
            log.debug("%r idle for %.0fs: reset", self, now - self.last_seen)
            self.reset()

    def reset(self) -> None:
        if self.client_open:
            reset_transport(self.client)
        if self.up is not None and self.up.open:
            reset_transport(self.up.transport)


class _Upstream(asyncio.Protocol):
    """The real-server side of a `TcpConnection`."""

    __slots__ = ("attached", "client", "conn", "dest", "eof", "open", "transport")

    transport: asyncio.Transport  # set by connection_made

    def __init__(self, conn: TcpConnection, dest: DestState) -> None:
        self.conn = conn
        self.dest = dest
        self.client = conn.client
        self.open = False
        self.attached = False
        self.eof = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        tr: asyncio.Transport = transport  # type: ignore[assignment]
        self.transport = tr
        self.open = True
        self.attached = self.conn.attach(self, tr)
        if not self.attached:
            tr.close()

    def data_received(self, data: bytes) -> None:
        conn = self.conn
        try:
            self.client.write(data)
        except RuntimeError:  # client handle already closed; its connection_lost follows
            return
        n = len(data)
        self.dest.out_bytes += n
        conn.svc.out_bytes += n
        conn.seen = True

    def eof_received(self) -> bool:
        if not self.attached:
            return False
        self.eof = True
        conn = self.conn
        conn._to_inactive()
        if conn.client_eof:
            conn._close_both()
        else:
            _write_eof(self.client)
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.open = False
        if self.attached:
            self.conn.upstream_lost(exc)

    def pause_writing(self) -> None:
        self.client.pause_reading()

    def resume_writing(self) -> None:
        if not self.conn.client_eof:  # reading past the EOF would only repeat it
            self.client.resume_reading()


def _write_eof(transport: asyncio.Transport) -> None:
    try:
        transport.write_eof()
    except (RuntimeError, OSError):  # closed underneath: its connection_lost follows
        return
