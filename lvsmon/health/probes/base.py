"""What every checker shares: the Checker protocol, non-blocking sockets, error mapping."""

from __future__ import annotations

import _socket
import errno
import socket
import ssl
import struct
from collections.abc import Awaitable, Callable
from typing import Protocol

from lvsmon.health.check import Reason, Result, fail
from lvsmon.health.probes import poller

# SO_LINGER {on, 0}: close() sends RST, so 10k probes a second leave no TIME_WAIT
# sockets on the director (HAProxy closes its health checks the same way).
_LINGER0 = struct.pack("ii", 1, 0)
_UNREACHABLE = {errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN, errno.ENETDOWN}


Reader = Callable[[int], Awaitable[bytes]]  # one read of at most n bytes; b"" at EOF


class Checker(Protocol):
    phase: str  # what the probe was doing, for a timeout's detail

    async def __call__(self) -> Result: ...


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
