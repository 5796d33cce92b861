"""`http` and `https`: one request, `Connection: close`; judge status, then body.

The status line is judged as soon as it arrives; the body is read only when
`expect_body` is set, up to Content-Length, EOF or `max_response_bytes`
(whichever comes first: a 10 MB answer costs at most the cap). HTTPS runs
on asyncio's TLS streams; plain HTTP on bare non-blocking sockets (cheaper:
at 10k probes/s the per-probe cost is the budget).
"""

from __future__ import annotations

import asyncio
import re
import ssl

from lvsmon import __version__
from lvsmon.health.check import OK, HttpSpec, Reason, Result, TlsSpec, fail
from lvsmon.health.probes import base

_STATUS = re.compile(rb"HTTP/\d(?:\.\d)? (\d{3})")
_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)", re.IGNORECASE)
_CHUNKED = re.compile(rb"\r\ntransfer-encoding:[^\r\n]*chunked", re.IGNORECASE)
READ_SIZE = 65536


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


class HttpChecker:
    def __init__(self, spec: HttpSpec, address: str, port: int, cap: int):
        self.spec = spec
        self.address = address
        self.port = port
        self.cap = cap
        self.phase = "connect"
        bracketed = f"[{address}]" if ":" in address else address
        host = spec.host or f"{bracketed}:{port}"
        self.request = (
            f"{spec.method} {spec.path} HTTP/1.1\r\nHost: {host}\r\n"
            f"User-Agent: lvsmon-health/{__version__}\r\nAccept: */*\r\nConnection: close\r\n\r\n"
        ).encode("latin-1")
        self.ssl: ssl.SSLContext | None = None
        self.server_hostname = address
        if spec.tls is not None:
            self.ssl = tls_context(spec.tls)
            # SNI and the name verified: tls_sni, else the Host header's name, else the
            # address (Python sends no SNI for an IP and matches it to the IP SANs)
            name = spec.tls.sni or _host_name(spec.host)
            self.server_hostname = name or address

    async def __call__(self) -> Result:
        self.phase = "connect"
        sock = await base.connect(self.address, self.port)
        if self.ssl is None:
            try:
                self.phase = "send the request"
                await base.send(sock, self.request)
                return await self._response(lambda n: base.recv(sock, n))
            finally:
                base.close(sock)
        self.phase = "TLS handshake"
        stream_sock = base.detach(sock)
        try:
            reader, writer = await asyncio.open_connection(
                sock=stream_sock, ssl=self.ssl, server_hostname=self.server_hostname,
            )  # fmt: skip
        except BaseException:
            stream_sock.close()
            raise
        try:
            self.phase = "send the request"
            writer.write(self.request)
            return await self._response(reader.read)
        finally:
            writer.transport.abort()  # no TLS close_notify dance: RST, like plain probes

    async def _response(self, read: base.Reader) -> Result:
        spec = self.spec
        self.phase = "read the status line"
        buf = bytearray()
        while b"\r\n" not in buf:
            if not await self._fill(buf, read):
                return self._short(buf, "status line")
        match = _STATUS.match(buf)
        if not match:
            return fail(Reason.BAD_RESPONSE, f"not HTTP: {bytes(buf[:40])!r}")
        code = int(match.group(1))
        if not spec.status_ok(code):
            return fail(Reason.BAD_STATUS, f"status {code}")
        if spec.expect_body is None:
            return OK
        self.phase = "read the headers"
        while (end := buf.find(b"\r\n\r\n")) < 0:
            if not await self._fill(buf, read):
                return self._short(buf, "headers")
        head = bytes(buf[:end])
        length = _LENGTH.search(head)
        want = int(length.group(1)) if length else None
        self.phase = "read the body"
        body_start = end + 4
        while (want is None or len(buf) - body_start < want) and await self._fill(buf, read):
            pass
        body = bytes(buf[body_start:])
        if _CHUNKED.search(head):
            body = dechunk(body)
        if spec.expect_body.search(body):
            return OK
        return fail(Reason.BAD_BODY, f"expect_body did not match the first {len(body)} bytes")

    async def _fill(self, buf: bytearray, read: base.Reader) -> bool:
        """Read more into buf; False at EOF or at the cap (the caller judges what it has)."""
        room = self.cap - len(buf)
        if room <= 0:
            return False
        chunk = await read(min(room, READ_SIZE))
        buf += chunk
        return bool(chunk)

    def _short(self, buf: bytearray, what: str) -> Result:
        if len(buf) >= self.cap:
            return fail(Reason.BAD_RESPONSE, f"{what} longer than {self.cap} bytes")
        return fail(Reason.CLOSED, f"closed by the real server before the {what} ended"
                                   f" ({len(buf)} bytes)")  # fmt: skip


def dechunk(data: bytes) -> bytes:
    """Chunked transfer coding -> the payload; best effort on a capped read."""
    out, pos = bytearray(), 0
    while True:
        eol = data.find(b"\r\n", pos)
        if eol < 0:
            break
        try:
            size = int(data[pos:eol].split(b";", 1)[0], 16)
        except ValueError:
            break
        if size == 0:
            break
        out += data[eol + 2 : eol + 2 + size]
        pos = eol + 2 + size + 2
    return bytes(out)
