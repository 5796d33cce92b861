"""A virtual server's listening socket on the proxy's poller: accept in batches,
hand each client to a new relay (`proxy_tcp.TcpConnection`, which schedules it),
refuse clients at once when descriptors run low, and rest a moment when out of
them rather than spin."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import resource
import socket
import struct
import time
from collections.abc import Callable
from typing import Any

from lvsmon.dataplane.base import DataPlaneError
from lvsmon.dataplane.proxy_net import bind_socket
from lvsmon.dataplane.proxy_poller import EPOLLIN, Poller
from lvsmon.dataplane.proxy_state import ServiceState
from lvsmon.dataplane.proxy_tcp import SOL_SOCKET, STREAM, Socket, TcpConnection
from lvsmon.model import endpoint_label

log = logging.getLogger("lvsmon.proxy")

BACKLOG = 4096
# Connections accepted per readiness event of a listener, so one busy virtual
# server cannot starve the others (or the loop).
ACCEPT_BATCH = 64
# After EMFILE and the like, a listener rests this long before accepting again.
ACCEPT_PAUSE = 0.5
# Descriptors kept free for everything but new client connections: /metrics, health
# checks, reloads, the real-server side of connections being set up. A client whose
# descriptor lands in this reserve is refused at once (RST), not left in the backlog.
FD_RESERVE = 64
LINGER_RESET = struct.pack("ii", 1, 0)
_ACCEPT_PAUSE_ERRORS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


class TcpListener:
    """A virtual server's listening socket."""

    def __init__(self, poller: Poller, svc: ServiceState) -> None:
        self.poller = poller
        self.svc = svc
        self.sock = sock = bind_socket(svc.vs.name, svc.address, svc.vs.port, socket.SOCK_STREAM)
        try:
            sock.listen(BACKLOG)
        except OSError as exc:
            sock.close()
            where = endpoint_label(svc.address, svc.vs.port)
            raise DataPlaneError(
                f"virtual server {svc.vs.name!r}: cannot listen on tcp {where}: "
                f"{exc.strerror or exc}"
            ) from exc
        self.fd = sock.fileno()
        self.family = sock.family
        # (fd, address) of the next client, without a socket.socket around it
        self._accept: Callable[[], tuple[int, Any]] = sock._accept  # type: ignore[attr-defined]
        self.closed = False
        self._paused: asyncio.TimerHandle | None = None
        self._last_complaint = 0.0
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        # the kernel hands out the lowest free descriptor: one this high means few are left
        self._ceiling = max(soft - FD_RESERVE, soft // 2) if soft > 0 else 1 << 30
        self._watch()

    def _watch(self) -> None:
        self.poller.handlers[self.fd] = self._readable
        self.poller.ep.register(self.fd, EPOLLIN)

    def close(self) -> None:
        """Stop listening; accepted connections are left to finish."""
        if self.closed:
            return
        self.closed = True
        if self._paused is not None:
            self._paused.cancel()
        else:
            self.poller.forget(self.fd)
        self.sock.close()

    def _readable(self, _events: int) -> None:
        accept = self._accept
        family = self.family
        poller = self.poller
        svc = self.svc
        for _ in range(ACCEPT_BATCH):
            try:
                fd, peer = accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in _ACCEPT_PAUSE_ERRORS:
                    self._pause(exc)
                    return
                continue  # ECONNABORTED and the like: that client is gone
            if fd >= self._ceiling:
                self._refuse(fd)
                continue
            TcpConnection(poller, svc, Socket(family, STREAM, 0, fd), fd, peer)

    def _refuse(self, fd: int) -> None:
        """Out of descriptors but the reserve: reset the client at once, say so (rarely)."""
        with contextlib.suppress(OSError):
            sock = Socket(self.family, STREAM, 0, fd)
            sock.setsockopt(SOL_SOCKET, socket.SO_LINGER, LINGER_RESET)
            sock.close()
        now = time.monotonic()
        if now - self._last_complaint >= 10:
            self._last_complaint = now
            log.warning(
                "%s: refusing new connections: descriptors near the limit (ulimit -n)",
                self.svc.key,
            )

    def _pause(self, exc: OSError) -> None:
        """Out of descriptors or memory: stop accepting for a moment rather than spin."""
        now = time.monotonic()
        if now - self._last_complaint >= 10:
            self._last_complaint = now
            log.warning("%s: cannot accept connections: %s", self.svc.key, exc.strerror or exc)
        self.poller.forget(self.fd)
        self.poller.ep.unregister(self.fd)
        self._paused = self.poller.loop.call_later(ACCEPT_PAUSE, self._resume)

    def _resume(self) -> None:
        self._paused = None
        if not self.closed and not self.poller.closed:
            self._watch()
