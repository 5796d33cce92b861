"""The proxy's TCP relay: one client connection and, once scheduled, its real
server, on plain non-blocking sockets registered with the data plane's epoll
(`proxy_poller`). No transports, futures, tasks or timers per connection: a
short connection makes about the system calls HAProxy makes for it, and a
handful of Python calls per readiness event.

Accounting follows IPVS (the counters and their transitions are `DestState`'s):
a connection is inactive while its real server is being connected, active once
connected, inactive again from the first FIN or close on either side, and
stays counted inactive for tcp_fin after both sockets are closed (`Lingering`).
"""

from __future__ import annotations

import _socket
import errno
import logging
import os
import socket
from typing import Any

from lvsmon.dataplane.proxy_net import parse_address, reset_socket
from lvsmon.dataplane.proxy_poller import (
    EPOLLIN,
    EPOLLOUT,
    EPOLLRDHUP,
    READ,
    READ_SIZE,
    TROUBLE,
    UNREGISTERED,
    Poller,
)
from lvsmon.dataplane.proxy_state import DestState, ServiceState

log = logging.getLogger("lvsmon.proxy")

# Client bytes held while the real server is being connected; beyond this the
# client is not read until the connect finishes.
PRECONNECT_LIMIT = 256 * 1024

DONTWAIT = socket.MSG_DONTWAIT
SHUT_WR = socket.SHUT_WR
SOL_SOCKET = socket.SOL_SOCKET
SO_ERROR = socket.SO_ERROR
IPPROTO_TCP = socket.IPPROTO_TCP
TCP_NODELAY = socket.TCP_NODELAY
STREAM = socket.SOCK_STREAM
NONBLOCKING_STREAM = socket.SOCK_STREAM | socket.SOCK_NONBLOCK
EINPROGRESS = errno.EINPROGRESS

# The relays use the C-level socket type: no Python __init__, enum properties,
# close() wrapper or GC tracking per connection (socket.socket subclasses it).
Socket = _socket.socket

CONNECTING, ESTABLISHED, CLOSING = 0, 1, 2


class TcpConnection:
    """One client connection and, once scheduled, its real server.

    Per direction at most one read is held unsent (`to_up`, `to_client`); while
    it is, the side it came from is not read: backpressure with one buffer per
    direction, like HAProxy. Before the real server accepts, the client's bytes
    are held up to PRECONNECT_LIMIT.
    """

    __slots__ = (
        "client",
        "client_eof",
        "client_mask",
        "client_open",
        "dest",
        "fd",
        "finished",
        "last_seen",
        "poller",
        "rt",
        "seen",
        "shut_client",
        "shut_up",
        "src",
        "src_port",
        "state",
        "svc",
        "tmpl",
        "to_client",
        "to_up",
        "tried",
        "ufd",
        "up",
        "up_eof",
        "up_mask",
        "up_open",
    )

    def __init__(
        self, poller: Poller, svc: ServiceState, client: Socket, fd: int, peer: Any
    ) -> None:
        self.poller = poller
        self.rt = rt = poller.rt
        self.svc = svc
        self.client = client
        self.fd = fd
        self.up: Socket | None = None
        self.ufd = -1
        self.up_mask = UNREGISTERED
        self.dest: DestState | None = None  # being connected, or connected
        self.tried: list[DestState] | None = None  # destinations that failed
        self.state = CONNECTING
        self.client_open = True
        self.up_open = False
        self.client_eof = False  # FIN read from the client
        self.up_eof = False  # FIN read from the real server
        self.shut_client = False  # FIN sent to the client
        self.shut_up = False  # FIN sent to the real server
        self.to_client: bytes | None = None  # read from the real server, not yet sent
        self.to_up: bytes | None = None  # read from the client, not yet sent
        self.finished = False
        self.seen = False
        rt.conns.add(self)
        self.last_seen = now = rt.clock()
        client.setsockopt(IPPROTO_TCP, TCP_NODELAY, 1)
        poller.handlers[fd] = self._client_event
        self.client_mask = UNREGISTERED
        self.src = src = parse_address(peer[0])
        self.src_port = peer[1]
        dest, self.tmpl = svc.pick(src, self.src_port, now)
        if dest is None:
            log.debug("%s: no real server available for %s", svc.key, peer[0])
            self.reset()
            return
        # Most clients have sent their request by the time they are accepted: read
        # it now (as HAProxy does), so that it can go with the connect (_connect).
        try:
            n = client.recv_into(poller.buf, READ_SIZE, DONTWAIT)
        except (BlockingIOError, InterruptedError):
            n = -1
        except OSError:  # reset already: nothing to relay
            self._close_client()
            self._maybe_finish()
            return
        if n > 0:
            self.to_up = bytes(poller.view[:n])
            self.seen = True
        elif n == 0:
            self.client_eof = True
        self.client_mask = mask = 0 if self.client_eof or n >= PRECONNECT_LIMIT else READ
        poller.ep.register(fd, mask)
        self._connect(dest)

    def __repr__(self) -> str:
        return f"<TcpConnection {self.svc.key} from {self.src} state={self.state}>"

    # -- connecting ----------------------------------------------------------

    def _connect(self, dest: DestState) -> None:
        """Start connecting to `dest`; a failure falls over to the next destination."""
        self.dest = dest
        dest.open_inactive()  # IPVS counts a connection in SYN state as inactive
        try:
            up = Socket(dest.family, NONBLOCKING_STREAM)
            up.setsockopt(IPPROTO_TCP, TCP_NODELAY, 1)
        except OSError as exc:  # out of descriptors
            self._connect_failed(exc)
            return
        err = up.connect_ex(dest.sockaddr)
        if err and err != EINPROGRESS:  # unreachable, no local port left
            up.close()
            self._connect_failed(OSError(err, os.strerror(err)))
            return
        self.up = up
        self.ufd = ufd = up.fileno()
        self.up_open = True
        poller = self.poller
        poller.handlers[ufd] = self._up_event
        held = self.to_up
        if held is not None:
            # To a local real server (loopback, veth) the handshake completes within
            # connect(), though it says EINPROGRESS: sending the held request tells,
            # and saves waiting for EPOLLOUT. Otherwise this send just fails (EAGAIN).
            try:
                sent = up.send(held, DONTWAIT)
            except (BlockingIOError, InterruptedError):
                sent = -1
            except OSError as exc:  # refused, reset: the connect failed
                self._connect_failed(exc)
                return
            if sent >= 0:
                self.to_up = held[sent:] if sent < len(held) else None
                self._established(len(held))
                mask = READ if self.to_up is None else READ | EPOLLOUT
                poller.ep.register(ufd, mask)
                self.up_mask = mask
                self._after_established()
                return
        poller.ep.register(ufd, EPOLLOUT)
        self.up_mask = EPOLLOUT
        poller.watch_connect(self)

    def _established(self, sent: int) -> None:
        """IPVS accounting: the real server accepted; `sent` client bytes went with it."""
        dest = self.dest
        assert dest is not None
        dest.establish()
        svc = self.svc
        svc.connections += 1
        if sent:
            dest.in_bytes += sent
            svc.in_bytes += sent
        self.state = ESTABLISHED
        self.tried = None

    def _after_established(self) -> None:
        """Pass on a FIN the client sent while connecting; read it as the relay needs."""
        if self.client_eof:
            self._to_inactive()
            if self.to_up is None:
                self._shut_up()
                if not self.up_open:
                    return
        if self.client_mask != READ or self.to_up is not None:
            self._update_client()  # paused at PRECONNECT_LIMIT, or the held bytes did not fit

    def _connected(self) -> None:
        """EPOLLOUT while connecting: the real server accepted. Start relaying."""
        self.poller.connecting.pop(self, None)
        held = self.to_up
        self._established(0 if held is None else len(held))
        if held is not None:
            self.to_up = None
            if not self._send_up(held):
                return
        self._update_up()
        self._after_established()

    def _connect_failed(self, error: OSError) -> None:
        """One attempt failed: count it, then try the next scheduled destination
        (never one already tried)."""
        dest = self.dest
        assert dest is not None
        self._drop_up()
        dest.close_inactive()
        dest.connect_failures += 1
        log.debug("%s: real server %s unreachable: %s", self.svc.key, dest.label, error)
        if self.tried is None:
            self.tried = [dest]
        else:
            self.tried.append(dest)
        nxt = self.svc.schedule(self.src, self.src_port, self.rt.clock(), self.tried)
        if nxt is None:
            log.debug("%s: no reachable real server for %s", self.svc.key, self.src)
            self.dest = None
            self.reset()
            return
        self._connect(nxt)

    def connect_timed_out(self) -> None:
        """Called by the poller, which has stopped watching this connection."""
        if self.state == CONNECTING and self.up_open:
            timeout = self.rt.connect_timeout
            self._connect_failed(TimeoutError(f"no answer within {timeout}s"))

    def _cancel_connect(self) -> None:
        """The client left while its real server was being connected."""
        self.poller.connecting.pop(self, None)
        self._drop_up()
        if self.dest is not None:
            self.dest.close_inactive()
            self.dest = None

    # -- events --------------------------------------------------------------

    def _client_event(self, ev: int) -> None:
        if ev & EPOLLOUT and self.to_client is not None:
            self._flush_to_client()
            if not self.client_open:
                return
        if not self.client_mask & EPOLLIN:
            if ev & TROUBLE:
                self._trouble_client()
            return
        if not ev & (READ | TROUBLE):
            return
        poller = self.poller
        try:
            n = self.client.recv_into(poller.buf, READ_SIZE, DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._client_lost(exc)
            return
        if not n:
            self._client_got_eof()
            return
        self.seen = True
        if self.state == CONNECTING:
            held = self.to_up
            self.to_up = held = bytes(poller.view[:n]) if held is None else held + poller.view[:n]
            if len(held) >= PRECONNECT_LIMIT:
                self._update_client()
        else:
            dest = self.dest
            assert dest is not None
            dest.in_bytes += n
            self.svc.in_bytes += n
            if not self._send_up(poller.view[:n]):
                return
        if ev & EPOLLRDHUP and n < READ_SIZE:  # its FIN is next: spare the read
            self._client_got_eof()

    def _up_event(self, ev: int) -> None:
        if self.state == CONNECTING:
            if ev & TROUBLE:
                up = self.up
                assert up is not None
                err = up.getsockopt(SOL_SOCKET, SO_ERROR) or errno.ECONNREFUSED
                self.poller.connecting.pop(self, None)
                self._connect_failed(OSError(err, os.strerror(err)))
            elif ev & EPOLLOUT:
                self._connected()
            return
        if ev & EPOLLOUT and self.to_up is not None:
            self._flush_to_up()
            if not self.up_open:
                return
        if not self.up_mask & EPOLLIN:
            if ev & TROUBLE:
                self._trouble_up()
            return
        if not ev & (READ | TROUBLE):
            return
        poller = self.poller
        up = self.up
        assert up is not None
        try:
            n = up.recv_into(poller.buf, READ_SIZE, DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._up_lost(exc)
            return
        if not n:
            self._up_got_eof()
            return
        self.seen = True
        dest = self.dest
        assert dest is not None
        dest.out_bytes += n
        self.svc.out_bytes += n
        if not self._send_client(poller.view[:n]):
            return
        if ev & EPOLLRDHUP and n < READ_SIZE:
            self._up_got_eof()

    # -- sending -------------------------------------------------------------

    def _send_up(self, data: memoryview | bytes) -> bool:
        """Forward to the real server; what does not fit waits, and the client with
        it. False if the real server's socket failed (the relay is torn down)."""
        up = self.up
        assert up is not None
        try:
            sent = up.send(data, DONTWAIT)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as exc:
            self._up_lost(exc)
            return False
        if sent < len(data):
            self.to_up = bytes(data[sent:])
            self._update_client()
            self._update_up()
        return True

    def _send_client(self, data: memoryview | bytes) -> bool:
        try:
            sent = self.client.send(data, DONTWAIT)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as exc:
            self._client_lost(exc)
            return False
        if sent < len(data):
            self.to_client = bytes(data[sent:])
            self._update_up()
            self._update_client()
        return True

    def _flush_to_up(self) -> None:
        data = self.to_up
        assert data is not None
        self.to_up = None
        if not self._send_up(data) or self.to_up is not None:
            return  # torn down, or still more than fits
        if self.client_eof:
            self._shut_up()
        self._update_up()
        self._update_client()

    def _flush_to_client(self) -> None:
        data = self.to_client
        assert data is not None
        self.to_client = None
        if not self._send_client(data) or self.to_client is not None:
            return
        if self.up_eof:
            self._shut_client()
        self._update_client()
        self._update_up()

    # -- FINs ----------------------------------------------------------------

    def _client_got_eof(self) -> None:
        self.client_eof = True
        if self.state != CONNECTING:  # otherwise forwarded once connected
            if self.state == ESTABLISHED:
                self._to_inactive()
            if self.to_up is None:
                self._shut_up()  # closes both if the real server's FIN came already
        if self.client_open:
            self._update_client()

    def _up_got_eof(self) -> None:
        self.up_eof = True
        self._to_inactive()
        if self.to_client is None:
            self._shut_client()
        self._update_up()

    def _shut_up(self) -> None:
        """Pass the client's FIN on, or close when the real server's came already."""
        if self.shut_up or not self.up_open:
            return
        if self.up_eof and self.to_client is None:
            self._close_both()
            return
        self.shut_up = True
        up = self.up
        assert up is not None
        try:
            up.shutdown(SHUT_WR)
        except OSError as exc:
            self._up_lost(exc)

    def _shut_client(self) -> None:
        if self.shut_client or not self.client_open:
            return
        if self.client_eof and self.to_up is None:
            self._close_both()
            return
        self.shut_client = True
        try:
            self.client.shutdown(SHUT_WR)
        except OSError as exc:
            self._client_lost(exc)

    def _close_both(self) -> None:
        """Both sides sent their FIN and everything was delivered: a clean close.
        (The common end of every relay, so spelled out rather than composed.)"""
        poller = self.poller
        handlers = poller.handlers
        stale = poller.stale if poller.dispatching else None
        if self.client_open:
            self.client_open = False
            del handlers[self.fd]
            if stale is not None:
                stale.add(self.fd)
            self.client.close()
        up = self.up
        if self.up_open and up is not None:
            self.up_open = False
            del handlers[self.ufd]
            if stale is not None:
                stale.add(self.ufd)
            up.close()
        self.up = None
        self.up_mask = UNREGISTERED
        self._maybe_finish()

    # -- a side that is not being read reports trouble ---------------------------

    def _trouble_client(self) -> None:
        err = self.client.getsockopt(SOL_SOCKET, SO_ERROR)
        if err:
            self._client_lost(OSError(err, os.strerror(err)))
        elif self.to_client is not None:
            self._flush_to_client()  # fails if it is really gone
        elif self.client_mask != UNREGISTERED:
            # hung up while not being read (backpressure, or after its FIN):
            # level-triggered, so stop watching it until it is wanted again
            self.poller.ep.unregister(self.fd)
            self.client_mask = UNREGISTERED

    def _trouble_up(self) -> None:
        up = self.up
        assert up is not None
        err = up.getsockopt(SOL_SOCKET, SO_ERROR)
        if err:
            self._up_lost(OSError(err, os.strerror(err)))
        elif self.to_up is not None:
            self._flush_to_up()
        elif self.up_mask != UNREGISTERED:
            self.poller.ep.unregister(self.ufd)
            self.up_mask = UNREGISTERED

    # -- losing a side -------------------------------------------------------

    def _client_lost(self, exc: OSError) -> None:
        """The client reset or failed: pass the reset on to the real server."""
        log.debug("%r: client lost: %s", self, exc)
        self._close_client()
        if self.state == CONNECTING:
            self._cancel_connect()  # a client leaving mid-connect cancels the connect
        else:
            self._to_inactive()
            self._reset_up()
        self._maybe_finish()

    def _up_lost(self, exc: OSError) -> None:
        """The real server reset or failed: pass the reset on to the client."""
        log.debug("%r: real server lost: %s", self, exc)
        self._to_inactive()
        self._drop_up()
        self._reset_client()
        self._maybe_finish()

    def _close_client(self) -> None:
        if self.client_open:
            self.client_open = False
            self.poller.forget(self.fd)
            self.client.close()

    def _drop_up(self) -> None:
        up = self.up
        if self.up_open and up is not None:
            self.up_open = False
            self.poller.forget(self.ufd)
            up.close()
        self.up = None
        self.up_mask = UNREGISTERED

    def _reset_client(self) -> None:
        if self.client_open:
            reset_socket(self.client)
            self._close_client()

    def _reset_up(self) -> None:
        if self.up_open and self.up is not None:
            reset_socket(self.up)
            self._drop_up()

    # -- interest ------------------------------------------------------------

    def _update_client(self) -> None:
        """Watch the client for what the relay needs of it now."""
        if not self.client_open:
            return
        if self.client_eof:
            mask = 0
        elif self.to_up is None:
            mask = READ
        elif self.state == CONNECTING:
            mask = READ if len(self.to_up) < PRECONNECT_LIMIT else 0
        else:
            mask = 0  # backpressure: the real server has not taken the last read
        if self.to_client is not None:
            mask |= EPOLLOUT
        old = self.client_mask
        if mask == old:
            return
        if old == UNREGISTERED:
            if not mask:
                return
            self.poller.ep.register(self.fd, mask)
        else:
            self.poller.ep.modify(self.fd, mask)
        self.client_mask = mask

    def _update_up(self) -> None:
        if not self.up_open or self.state == CONNECTING:
            return
        mask = 0 if self.up_eof or self.to_client is not None else READ
        if self.to_up is not None:
            mask |= EPOLLOUT
        old = self.up_mask
        if mask == old:
            return
        if old == UNREGISTERED:
            if not mask:
                return
            self.poller.ep.register(self.ufd, mask)
        else:
            self.poller.ep.modify(self.ufd, mask)
        self.up_mask = mask

    # -- shared --------------------------------------------------------------

    def _to_inactive(self) -> None:
        if self.state == ESTABLISHED:
            self.state = CLOSING
            dest = self.dest
            assert dest is not None
            dest.close_active()

    def _maybe_finish(self) -> None:
        if self.finished or self.client_open or self.up_open:
            return
        self.finished = True
        self.to_up = self.to_client = None
        self.rt.forget(self)
        if self.state != CONNECTING:
            assert self.dest is not None
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
        """Reset both sides (SO_LINGER 0): idle timeout, shutdown, no real server."""
        if self.finished:
            return
        self._reset_client()
        if self.state == CONNECTING:
            self._cancel_connect()
        else:
            self._to_inactive()
            self._reset_up()
        self._maybe_finish()
