"""`send_expect`: Piranha's send/expect over TCP or UDP.

TCP: connect, send (may be empty: a banner check), then read until `expect`
matches, the server closes, or `max_response_bytes` arrived. UDP: send one
datagram, read datagrams until one matches; an ICMP port unreachable is
`refused`. `expect = "*"`: any answer at all.
"""

from __future__ import annotations

import _socket
import socket

from lvsmon.health.probes import base
from lvsmon.model.health import OK, Reason, Result, SendExpectSpec, fail


class SendExpectChecker:
    def __init__(self, spec: SendExpectSpec, address: str, port: int, cap: int):
        self.spec = spec
        self.address = address
        self.port = port
        self.cap = cap
        self.phase = "connect"
        self.udp = spec.protocol == "udp"

    async def __call__(self) -> Result:
        spec = self.spec
        self.phase = "connect"
        kind = socket.SOCK_DGRAM if self.udp else socket.SOCK_STREAM
        sock = await base.connect(self.address, self.port, kind)
        try:
            self.phase = "send"
            if spec.send or self.udp:
                await base.send(sock, spec.send)
            if spec.expect is None and not spec.expect_any:
                return OK
            self.phase = "wait for the answer"
            return await (self._udp(sock) if self.udp else self._tcp(sock))
        finally:
            base.close(sock)

    def _matches(self, data: bytes | bytearray) -> bool:
        if self.spec.expect_any:
            return bool(data)
        return self.spec.expect is not None and self.spec.expect.search(data) is not None

    async def _tcp(self, sock: _socket.socket) -> Result:
        buf = bytearray()
        while len(buf) < self.cap:
            chunk = await base.recv(sock, min(65536, self.cap - len(buf)))
            if not chunk:
                break
            buf += chunk
            self.phase = f"wait for the answer (got {len(buf)} bytes, no match yet)"
            if self._matches(buf):
                return OK
        if not buf:
            return fail(Reason.CLOSED, "closed by the real server without answering")
        return fail(Reason.BAD_ANSWER, f"the answer did not match: {_excerpt(buf)}")

    async def _udp(self, sock: _socket.socket) -> Result:
        while True:  # until a datagram matches; the monitor's timeout ends the wait
            data = await base.recv(sock, self.cap)
            if self._matches(data):
                return OK
            self.phase = f"wait for the answer (last datagram did not match: {_excerpt(data)})"


def _excerpt(data: bytes | bytearray) -> str:
    text = repr(bytes(data[:60]))
    return text + ("..." if len(data) > 60 else "")
