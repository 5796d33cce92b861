"""A minimal HTTP/1.0 endpoint on the daemon's event loop: /metrics, /status.

On the loop rather than in prometheus_client's thread so a scrape reads the
data plane's state from the thread that owns it (no locks on the hot path).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from lvsmon.status import DirectorView

log = logging.getLogger("lvsmon.http")

MAX_HEAD = 8192
READ_TIMEOUT = 10.0


class StatusServer:
    def __init__(self, registry: CollectorRegistry, view: Callable[[], DirectorView]):
        self._registry = registry
        self._view = view
        self._server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> None:
        self._server = await asyncio.start_server(
            self._handle, host, port, reuse_address=True, limit=MAX_HEAD
        )

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT)
            status, ctype, body = self._route(head)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
            status, ctype, body = "400 Bad Request", "text/plain", b"bad request\n"
        except Exception:  # a bug must not kill the daemon's endpoint
            log.exception("status endpoint failed")
            status, ctype, body = "500 Internal Server Error", "text/plain", b"error\n"
        try:
            writer.write(
                f"HTTP/1.0 {status}\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    def _route(self, head: bytes) -> tuple[str, str, bytes]:
        request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
        parts = request_line.split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            return "400 Bad Request", "text/plain", b"bad request line\n"
        method, target = parts[0], parts[1].split("?", 1)[0]
        if method != "GET":
            return "405 Method Not Allowed", "text/plain", b"only GET\n"
        if target == "/metrics":
            return "200 OK", CONTENT_TYPE_LATEST, generate_latest(self._registry)
        if target == "/status":
            body = json.dumps(self._view().to_json(), indent=1).encode()
            return "200 OK", "application/json", body
        if target == "/":
            return "200 OK", "text/plain", b"lvsmon: /metrics /status\n"
        return "404 Not Found", "text/plain", b"not found\n"
