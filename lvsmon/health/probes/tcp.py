"""`tcp`: the three-way handshake completes; then RST (no TIME_WAIT, nothing sent)."""

from __future__ import annotations

from lvsmon.health.check import OK, Result
from lvsmon.health.probes import base


class TcpChecker:
    def __init__(self, address: str, port: int):
        self.address = address
        self.port = port
        self.phase = "connect"

    async def __call__(self) -> Result:
        sock = await base.connect(self.address, self.port)
        base.close(sock)
        return OK
