"""HTTP/1.x responses, sans-IO: the status line, the headers, the body's framing.

One parser for every client in lvsmon: the health checker judges a response as it
arrives (lvsmon.health.probes.http), the adaptive-weight sources read whole answers
(lvsmon.weights.http). Both send `Connection: close` and no Accept-Encoding, so a
body ends at Content-Length, at the last chunk, or at EOF.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_STATUS = re.compile(rb"HTTP/\d(?:\.\d)? (\d{3})(?: ([^\r\n]*))?")


class NotHttp(ValueError):
    """The bytes are no HTTP/1.x status line; the message quotes their start."""


class Truncated(ValueError):
    """A chunked body ends before its last chunk; the message says where."""


@dataclass(frozen=True, slots=True)
class Head:
    status: int
    reason: str
    headers: dict[str, str]  # lower-case names; a repeated header keeps its last value
    length: int | None  # Content-Length, None when absent or unreadable
    chunked: bool  # Transfer-Encoding: chunked


def status(data: bytes | bytearray) -> tuple[int, str]:
    """The status code and reason of a response that starts with its status line."""
    match = _STATUS.match(data)
    if not match:
        raise NotHttp(f"not HTTP: {bytes(data[:40])!r}")
    return int(match.group(1)), (match.group(2) or b"").decode("latin-1", "replace").strip()


def head_end(data: bytes | bytearray) -> int:
    """Where the body starts (after the blank line), or -1 while the head is incomplete."""
    end = data.find(b"\r\n\r\n")
    return -1 if end < 0 else end + 4


def parse_head(data: bytes | bytearray) -> Head:
    """The status line and headers of a complete head (data up to head_end or beyond)."""
    code, reason = status(data)
    end = data.find(b"\r\n\r\n")
    lines = bytes(data[: end if end >= 0 else len(data)]).split(b"\r\n")[1:]
    headers: dict[str, str] = {}
    for line in lines:
        name, sep, value = line.partition(b":")
        if sep:
            headers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
    raw_length = headers.get("content-length", "")
    length = int(raw_length) if raw_length.isdigit() else None
    chunked = "chunked" in headers.get("transfer-encoding", "").lower()
    return Head(code, reason, headers, length, chunked)


def dechunk(data: bytes | bytearray, *, complete: bool = True) -> bytes:
    """The payload of a chunked body. `complete`: the body must end with its last chunk
    (raise Truncated otherwise); else best effort on a capped read (what arrived)."""
    out, pos = bytearray(), 0
    while True:
        eol = data.find(b"\r\n", pos)
        if eol < 0:
            if complete:
                raise Truncated("chunked body cut short")
            return bytes(out)
        try:
            size = int(bytes(data[pos:eol]).split(b";", 1)[0], 16)
        except ValueError:
            if complete:
                raise Truncated("bad chunk size") from None
            return bytes(out)
        if size == 0:
            return bytes(out)
        if complete and eol + 2 + size > len(data):
            raise Truncated("chunked body cut short")
        out += data[eol + 2 : eol + 2 + size]
        pos = eol + 2 + size + 2


def body(data: bytes | bytearray, head: Head, start: int, *, complete: bool = True) -> bytes:
    """The body of a response read until EOF (or a cap, with complete=False), decoded."""
    raw = bytes(data[start:])
    if head.chunked:
        return dechunk(raw, complete=complete)
    if head.length is not None:
        if complete and len(raw) < head.length:
            raise Truncated(f"body cut short ({len(raw)} of {head.length} bytes)")
        return raw[: head.length]
    return raw
