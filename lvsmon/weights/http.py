"""One HTTP(S) GET with a deadline and a size cap: all the load sources need from HTTP.

HTTP/1.1 with `Connection: close` and no compression, so the body ends at
Content-Length, the last chunk, or EOF. Anything but 200 is an error that
names the status. Polls are seconds apart, so no connection is kept.
"""

from __future__ import annotations

import asyncio
import os
import ssl
from collections.abc import Mapping
from urllib.parse import urlsplit

from lvsmon import __version__, http1

READ_SIZE = 65536


class FetchError(Exception):
    """The request failed; the message says how (for logs and `lvsmon status`)."""


def describe(exc: OSError) -> str:
    """'Connection refused', not asyncio's "Connect call failed ('10.0.0.2', 9100)"."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS: certificate verify failed: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS: {exc.reason or exc}"
    return os.strerror(exc.errno) if exc.errno else str(exc)


def tls_context(verify: bool, ca_file: str = "") -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=ca_file or None)
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


async def get(
    url: str,
    *,
    timeout: float,
    headers: Mapping[str, str] | None = None,
    tls: ssl.SSLContext | None = None,
    cap: int = 8 * 1024 * 1024,
) -> bytes:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise FetchError(f"not an http(s) URL: {url}")
    secure = parts.scheme == "https"
    port = parts.port or (443 if secure else 80)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    lines = [
        f"GET {target} HTTP/1.1",
        f"Host: {parts.netloc}",
        f"User-Agent: lvsmon-weights/{__version__}",
        "Accept-Encoding: identity",
        "Connection: close",
    ]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    context = (tls or tls_context(True)) if secure else None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(
                parts.hostname,
                port,
                ssl=context,
                server_hostname=parts.hostname if secure else None,
            )
            try:
                writer.write(request)
                raw = await _read_all(reader, cap)
            finally:
                writer.transport.abort()
    except TimeoutError:
        raise FetchError(f"no answer within {timeout:g}s") from None
    except (OSError, ssl.SSLError) as exc:
        raise FetchError(describe(exc)) from None
    return _body(raw)


async def _read_all(reader: asyncio.StreamReader, cap: int) -> bytes:
    buf = bytearray()
    while chunk := await reader.read(READ_SIZE):
        buf += chunk
        if len(buf) > cap:
            raise FetchError(f"answer larger than {cap} bytes")
    return bytes(buf)


def _body(raw: bytes) -> bytes:
    start = http1.head_end(raw)
    if start < 0:
        raise FetchError("closed before the end of the headers")
    try:
        head = http1.parse_head(raw)
        if head.status != 200:
            raise FetchError(f"HTTP {head.status} {head.reason}".rstrip())
        return http1.body(raw, head, start)
    except (http1.NotHttp, http1.Truncated) as exc:
        raise FetchError(str(exc)) from None
