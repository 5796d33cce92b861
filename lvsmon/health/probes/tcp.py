"""`tcp`: the three-way handshake completes; then RST (no TIME_WAIT, nothing sent)."""

from __future__ import annotations

from lvsmon.health.probes import base
from lvsmon.model.health import OK, Result


class TcpChecker(base.SocketChecker):
    """Watched for EPOLLOUT only: the first event is the verdict."""

    def ready(self, events: int) -> Result | None:
        sock = self.sock
        assert sock is not None
        if events & base.FAILED:
            raise self.connect_error(sock)
        self.abort()
        return OK
