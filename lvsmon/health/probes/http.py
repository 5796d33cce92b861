"""`http` and `https`: one request, `Connection: close`; judge status, then body.

The status line is judged as soon as it arrives; the body is read only when
`expect_body` is set, up to Content-Length, EOF or `max_response_bytes`
(whichever comes first: a 10 MB answer costs at most the cap). `Response`
judges the bytes (sans-IO) for both: plain HTTP is a `SocketChecker` driven
by the engine's epoll callbacks (one recv usually decides), HTTPS runs on
asyncio's TLS streams.
"""

from __future__ import annotations

import asyncio
import functools
import select
import ssl

from lvsmon import __version__, http1
from lvsmon.health.probes import base
from lvsmon.model.health import OK, HttpSpec, Reason, Result, TlsSpec, fail

READ_SIZE = 65536
_READABLE = select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR
STATUS_LINE, HEADERS, BODY = "read the status line", "read the headers", "read the body"


def tls_context(tls: TlsSpec) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=tls.ca_file or None)
    if not tls.verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if tls.client_cert:
        ctx.load_cert_chain(tls.client_cert, tls.client_key or None)
    return ctx


def _host_name(host: str) -> str:
    """'example.com:8443' -> 'example.com'; '[::1]:443' -> '::1'."""
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def request(spec: HttpSpec, address: str, port: int) -> bytes:
    bracketed = f"[{address}]" if ":" in address else address
    host = spec.host or f"{bracketed}:{port}"
    return (
        f"{spec.method} {spec.path} HTTP/1.1\r\nHost: {host}\r\n"
        f"User-Agent: lvsmon-health/{__version__}\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    ).encode("latin-1")


@functools.cache
def _ok_codes(expect_status: tuple[tuple[int, int], ...]) -> frozenset[int]:
    """expect_status as a set: one lookup per response (shared by every probe)."""
    return frozenset(
        c for low, high in expect_status for c in range(max(low, 100), min(high, 999) + 1)
    )


class Response:
    """The verdict on one response, fed as it arrives: `feed(chunk)` gives None while
    more is needed (then `room` > 0: read at most that), b"" is EOF."""

    __slots__ = ("_body_start", "_chunked", "_ok", "_want", "buf", "cap", "phase", "spec")

    def __init__(self, spec: HttpSpec, cap: int):
        self.spec = spec
        self.cap = cap
        self._ok = _ok_codes(spec.expect_status)
        self.reset()

    def reset(self) -> None:
        self.buf = bytearray()
        self.phase = STATUS_LINE
        self._body_start = 0
        self._want: int | None = None
        self._chunked = False

    @property
    def room(self) -> int:
        return self.cap - len(self.buf)

    def feed(self, chunk: bytes) -> Result | None:
        if self.buf:
            self.buf += chunk
            data: bytes | bytearray = self.buf
        else:
            data = chunk  # the usual case: the first chunk decides, nothing is copied
        done = not chunk or len(data) >= self.cap  # EOF or the cap: judge what there is
        result = self._judge(data, done)
        if result is None and data is chunk:
            self.buf += chunk
        return result

    def _judge(self, data: bytes | bytearray, done: bool) -> Result | None:
        if self.phase is STATUS_LINE:
            if b"\r\n" not in data:
                return self._short(data, "status line") if done else None
            try:
                code, _ = http1.status(data)
            except http1.NotHttp as exc:
                return fail(Reason.BAD_RESPONSE, str(exc))
            if code not in self._ok:
                return fail(Reason.BAD_STATUS, f"status {code}")
            if self.spec.expect_body is None:
                return OK
            self.phase = HEADERS
        if self.phase is HEADERS:
            start = http1.head_end(data)
            if start < 0:
                return self._short(data, "headers") if done else None
            head = http1.parse_head(data[:start])
            self._want = head.length
            self._chunked = head.chunked
            self._body_start = start
            self.phase = BODY
        want = self._want
        if not done and (want is None or len(data) - self._body_start < want):
            return None
        body = bytes(data[self._body_start :])
        if self._chunked:
            body = http1.dechunk(body, complete=False)  # a capped read judges what came
        assert self.spec.expect_body is not None
        if self.spec.expect_body.search(body):
            return OK
        return fail(Reason.BAD_BODY, f"expect_body did not match the first {len(body)} bytes")

    def _short(self, data: bytes | bytearray, what: str) -> Result:
        if len(data) >= self.cap:
            return fail(Reason.BAD_RESPONSE, f"{what} longer than {self.cap} bytes")
        return fail(
            Reason.CLOSED, f"closed by the real server before the {what} ended ({len(data)} bytes)"
        )


_CONNECT, _SEND, _READ = 0, 1, 2


class HttpChecker(base.SocketChecker):
    """Plain HTTP. Watched for IN and OUT, edge-triggered, from one registration:
    connected (OUT) -> send -> the answer (IN); no epoll_ctl MOD between the two."""

    events = select.EPOLLIN | select.EPOLLOUT | select.EPOLLET

    def __init__(self, spec: HttpSpec, address: str, port: int, cap: int):
        super().__init__(address, port)
        self.spec = spec
        self.request = request(spec, address, port)
        self.response = Response(spec, cap)
        self._stage = _CONNECT
        self._unsent = b""

    @property
    def phase(self) -> str:
        if self._stage == _READ:
            return self.response.phase
        return "connect" if self._stage == _CONNECT else "send the request"

    def start(self) -> int:
        self._stage = _CONNECT
        self.response.reset()
        return super().start()

    def ready(self, events: int) -> Result | None:
        sock = self.sock
        assert sock is not None
        if self._stage == _CONNECT:
            if events & base.FAILED:
                raise self.connect_error(sock)
            self._stage = _SEND
            self._unsent = self.request
        if self._stage == _SEND:
            try:
                sent = sock.send(self._unsent)
            except BlockingIOError:  # the next OUT edge
                return None
            self._unsent = self._unsent[sent:]
            if self._unsent:
                return None
            self._stage = _READ
            if not events & _READABLE:  # the usual case: the answer comes with a later event
                return None
        response = self.response
        while True:  # edge-triggered: read until EAGAIN or a verdict
            try:
                chunk = sock.recv(min(response.room, READ_SIZE))
            except BlockingIOError:
                return None
            result = response.feed(chunk)
            if result is not None:
                self.abort()
                return result


class HttpsChecker:
    """HTTPS: a coroutine checker on asyncio's TLS streams."""

    def __init__(self, spec: HttpSpec, address: str, port: int, cap: int):
        assert spec.tls is not None
        self.address = address
        self.port = port
        self.request = request(spec, address, port)
        self.response = Response(spec, cap)
        self._phase = "connect"
        self.ssl = tls_context(spec.tls)
        # SNI and the name verified: tls_sni, else the Host header's name, else the
        # address (Python sends no SNI for an IP and matches it to the IP SANs)
        self.server_hostname = spec.tls.sni or _host_name(spec.host) or address

    @property
    def phase(self) -> str:
        return self.response.phase if self._phase == STATUS_LINE else self._phase

    async def __call__(self) -> Result:
        self._phase = "connect"
        sock = await base.connect(self.address, self.port)
        self._phase = "TLS handshake"
        stream_sock = base.detach(sock)
        try:
            reader, writer = await asyncio.open_connection(
                sock=stream_sock,
                ssl=self.ssl,
                server_hostname=self.server_hostname,
            )
        except BaseException:
            stream_sock.close()
            raise
        try:
            self._phase = "send the request"
            writer.write(self.request)
            self._phase = STATUS_LINE  # from here on, the response's own phase
            response = self.response
            response.reset()
            while True:
                result = response.feed(await reader.read(min(response.room, READ_SIZE)))
                if result is not None:
                    return result
        finally:
            writer.transport.abort()  # no TLS close_notify dance: RST, like plain probes
