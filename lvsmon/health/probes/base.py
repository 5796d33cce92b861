"""What every checker shares: the two kinds of checker, non-blocking sockets, error mapping.

- `SocketChecker` (tcp, plain http: the checks that run by the thousand) is
  driven by the engine's readiness callbacks: `start()` opens the socket and
  returns its fd, the engine watches it (edge-triggered, registered once per
  run) and calls `ready(events)` until it gives a verdict. No coroutine, task,
  future or timer per run: on a 10k-checks/s budget each of those showed.
- `Checker` (https, send_expect, dns, exec) is a coroutine, run in a task per
  run with the async helpers below; the engine cancels it at its timeout.
"""

from __future__ import annotations

import _socket
import errno
import os
import select
import socket
import ssl
import struct
from collections.abc import Awaitable, Callable
from typing import ClassVar, Protocol

from lvsmon.health.probes import poller
from lvsmon.model.health import Reason, Result, fail

# SO_LINGER {on, 0}: close() sends RST, so 10k probes a second leave no TIME_WAIT
# sockets on the director (HAProxy closes its health checks the same way).
_LINGER0 = struct.pack("ii", 1, 0)
_UNREACHABLE = {errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN, errno.ENETDOWN}


Reader = Callable[[int], Awaitable[bytes]]  # one read of at most n bytes; b"" at EOF


class Checker(Protocol):
    @property
    def phase(self) -> str:  # what the probe was doing, for a timeout's detail
        ...

    async def __call__(self) -> Result: ...


_STREAM = socket.SOCK_STREAM | socket.SOCK_NONBLOCK
# module globals, not attribute chains: start() runs 10k times a second
_new_socket = _socket.socket
_SOL_SOCKET, _SO_LINGER, _EINPROGRESS = socket.SOL_SOCKET, socket.SO_LINGER, errno.EINPROGRESS
FAILED = select.EPOLLERR | select.EPOLLHUP


class SocketChecker:
    """A TCP probe as a state machine over one non-blocking socket (see the module doc).

    The contract with the engine: `start()` returns the fd to watch with `events`,
    or raises (the engine then calls `abort()`); `ready(events)` returns None to
    wait for more, a Result once decided (the socket closed), or raises;
    `abort()` closes whatever is open (timeout, stop); `phase` says what the run
    was doing. One run at a time."""

    events: ClassVar[int] = select.EPOLLOUT | select.EPOLLET

    def __init__(self, address: str, port: int):
        self.address = address
        self.port = port
        self._peer = (address, port)
        self._family = socket.AF_INET6 if ":" in address else socket.AF_INET
        self.sock: _socket.socket | None = None

    @property
    def phase(self) -> str:
        return "connect"

    def start(self) -> int:
        """Open a socket and start connecting (numeric addresses: no resolver call)."""
        # a bare _socket.socket: socket.socket's Python-level __init__ doubles the cost
        sock = self.sock = _new_socket(self._family, _STREAM)
        sock.setsockopt(_SOL_SOCKET, _SO_LINGER, _LINGER0)
        code = sock.connect_ex(self._peer)
        if code and code != _EINPROGRESS:
            raise OSError(code, os.strerror(code))
        return sock.fileno()  # connected or not: an established socket reports EPOLLOUT

    def ready(self, events: int) -> Result | None:
        raise NotImplementedError

    def abort(self) -> None:
        sock = self.sock
        if sock is not None:
            self.sock = None
            sock.close()  # SO_LINGER 0: RST; the kernel takes it out of the epoll set

    def connect_error(self, sock: _socket.socket) -> OSError:
        """Why the connect failed (called on EPOLLERR/EPOLLHUP before it completed)."""
        code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) or errno.ECONNRESET
        return OSError(code, os.strerror(code))  # OSError picks the subclass: refused...


async def connect(address: str, port: int, kind: int = socket.SOCK_STREAM) -> _socket.socket:
    """A connected non-blocking socket. Numeric addresses only: no resolver call
    (asyncio's sock_connect may consult getaddrinfo; at 10k probes/s that shows).
    A bare _socket.socket (close-on-exec like every Python socket): socket.socket's
    Python-level __init__ doubles the cost of creating one. Close it with close()."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = _socket.socket(family, kind | socket.SOCK_NONBLOCK)
    try:
        if kind == socket.SOCK_STREAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER0)
        code = sock.connect_ex((address, port))
        if code == errno.EINPROGRESS:
            await poller.current().wait(sock.fileno(), poller.OUT)
            code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code:
            raise OSError(code, errno.errorcode.get(code, str(code)))
    except BaseException:
        close(sock)
        raise
    return sock


def close(sock: _socket.socket) -> None:
    fd = sock.fileno()
    if fd >= 0:
        poller.current().forget(fd)
    sock.close()


def detach(sock: _socket.socket) -> socket.socket:
    """The same connection as a socket.socket, for asyncio's transports (TLS)."""
    poller.current().forget(sock.fileno())
    return socket.socket(fileno=sock.detach())


async def recv(sock: _socket.socket, size: int) -> bytes:
    """One read; b"" at EOF. Waits for readability first: right after a request the
    answer is almost never there yet, and a failed recv costs a syscall and an exception."""
    await poller.current().wait(sock.fileno(), poller.IN)
    try:
        return sock.recv(size)
    except BlockingIOError:  # a spurious wake-up: wait again
        return await recv(sock, size)


async def send(sock: _socket.socket, data: bytes) -> None:
    """All of `data` (small requests: the first send nearly always takes it all)."""
    view = memoryview(data)
    while view:
        try:
            sent = sock.send(view)
        except BlockingIOError:
            await poller.current().wait(sock.fileno(), poller.OUT)
            continue
        view = view[sent:]


def classify(exc: BaseException) -> Result:
    """An exception from a probe as a failure with its reason."""
    if isinstance(exc, TimeoutError):
        return fail(Reason.TIMEOUT, str(exc) or "timed out")
    if isinstance(exc, ConnectionRefusedError):
        return fail(Reason.REFUSED, "connection refused")
    if isinstance(exc, ConnectionResetError | BrokenPipeError | ConnectionAbortedError):
        return fail(Reason.RESET, "connection reset by the real server")
    if isinstance(exc, ssl.SSLError | ssl.CertificateError):
        return fail(Reason.TLS, getattr(exc, "verify_message", None) or str(exc))
    if isinstance(exc, OSError):
        if exc.errno in _UNREACHABLE:
            return fail(Reason.UNREACHABLE, exc.strerror or str(exc))
        if exc.errno == errno.ECONNREFUSED:
            return fail(Reason.REFUSED, "connection refused")
        if exc.errno in (errno.ECONNRESET, errno.EPIPE):
            return fail(Reason.RESET, "connection reset by the real server")
        if exc.errno == errno.ETIMEDOUT:
            return fail(Reason.TIMEOUT, "connect timed out")
        return fail(Reason.ERROR, f"{exc.strerror or exc}")
    return fail(Reason.ERROR, f"{type(exc).__name__}: {exc}")
