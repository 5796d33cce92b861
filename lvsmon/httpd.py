"""A minimal HTTP/1.0 endpoint on the daemon's event loop: /metrics, /status, and the
status page (`/`, `/status.json`, `POST /admin`: lvsmon.statuspage).

On the loop rather than in prometheus_client's thread so a scrape reads the
data plane's state from the thread that owns it (no locks on the hot path).
TLS, client certificates and basic auth come from the web config
(`daemon.web_config_file`, lvsmon.config.web); every path is protected alike.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry

from lvsmon.exposition import render
from lvsmon.httpmsg import Request, Response
from lvsmon.logs import fields
from lvsmon.metrics import ScrapeCollector
from lvsmon.model.web import TlsServer, WebConfig
from lvsmon.status import DirectorView
from lvsmon.webauth import REALM, BasicAuth, parse_basic

if TYPE_CHECKING:
    from lvsmon.statuspage.page import StatusPage

__all__ = ["Response", "StatusServer"]

log = logging.getLogger("lvsmon.http")

MAX_HEAD = 8192
READ_TIMEOUT = 10.0
MAX_BODY = 4096  # POST /admin: a small JSON object
# Connections still sending their request head. Beyond this many the oldest is closed:
# slowloris clients cannot use up the daemon's descriptors. A scrape sends its head at
# once, but a burst of them (200 at a time, a fleet's Prometheus servers and probes)
# waits here together while the loop completes their TLS handshakes: 64 evicted
# genuine scrapes on a loaded machine, so the cap sits above such a burst.
MAX_IDLE_CLIENTS = 256


UNAUTHORIZED = Response(
    "401 Unauthorized",
    "text/plain",
    b"unauthorized\n",
    (("WWW-Authenticate", f'Basic realm="{REALM}", charset="UTF-8"'),),
)


class StatusServer:
    def __init__(
        self,
        registry: CollectorRegistry,
        view: Callable[[], DirectorView] | None,
        web: WebConfig | None = None,
        page: StatusPage | None = None,
    ):
        self._registry = registry
        self._view = view
        self._page = page
        self._scrape = ScrapeCollector()
        registry.register(self._scrape)
        self._web: WebConfig | None = None
        self._users: tuple[tuple[str, str], ...] = ()
        self._auth: BasicAuth | None = None
        self.configure(web)
        self._server: asyncio.Server | None = None
        self._heading: dict[asyncio.StreamWriter, None] = {}  # oldest first

    def configure(self, web: WebConfig | None) -> bool:
        """Take a (re)loaded web config; users and headers apply to the next request.
        True when TLS changed (a renewed certificate too): the caller must rebind."""
        old, self._web = self._web, web
        users = web.users if web else ()
        if users != self._users:  # unchanged users keep their verified-password cache
            self._users = users
            self._auth = BasicAuth(users) if users else None
        return _tls(old) != _tls(web)

    async def start(self, host: str, port: int) -> None:
        tls = _tls(self._web)
        self._server = await asyncio.start_server(
            self._handle,
            host,
            port,
            reuse_address=True,
            limit=MAX_HEAD,
            ssl=tls.context if tls else None,
            ssl_handshake_timeout=READ_TIMEOUT if tls else None,
        )

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        web = self._web
        self._heading[writer] = None
        if len(self._heading) > MAX_IDLE_CLIENTS:
            oldest = next(iter(self._heading))
            del self._heading[oldest]
            oldest.transport.abort()
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
            head = b""
        except (ConnectionError, ssl.SSLError):
            head = None
        if self._heading.pop(writer, False) is False or head is None:
            writer.transport.abort()  # evicted, the client went away, or its TLS failed
            return
        try:
            if not head:
                response = Response("400 Bad Request", "text/plain", b"bad request\n")
            else:
                response = await self._respond(head, web, reader, writer)
        except (ConnectionError, ssl.SSLError):
            writer.close()  # the client went away, or its TLS failed mid-request
            return
        except Exception:  # a bug must not kill the daemon's endpoint
            log.exception("status endpoint failed")
            response = Response("500 Internal Server Error", "text/plain", b"error\n")
        extra = (web.headers if web else ()) + response.headers
        try:
            writer.write(
                f"HTTP/1.0 {response.status}\r\nContent-Type: {response.ctype}\r\n"
                f"Content-Length: {len(response.body)}\r\nConnection: close\r\n".encode()
                + "".join(f"{k}: {v}\r\n" for k, v in extra).encode("latin-1")
                + b"\r\n"
                + response.body
            )
            await writer.drain()
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    async def _respond(
        self,
        head: bytes,
        web: WebConfig | None,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> Response:
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            return Response("400 Bad Request", "text/plain", b"bad request line\n")
        tls = _tls(web)
        if tls is not None and not tls.allows_peer(_peercert(writer)):
            log.info(
                "client certificate not in client_allowed_sans",
                extra=fields(peer=str(writer.get_extra_info("peername"))),
            )
            return Response("403 Forbidden", "text/plain", b"client certificate not allowed\n")
        auth = self._auth
        authorization = _header(lines, "authorization")
        if auth is not None and not await auth.allows(authorization):
            return UNAUTHORIZED
        method, target = parts[0], parts[1].split("?", 1)[0]
        if self._page is not None and self._page.handles(target):
            credentials = parse_basic(authorization) if auth is not None else None
            body = await self._body(lines, method, reader)
            if body is None:
                return Response("413 Content Too Large", "text/plain", b"body too large\n")
            request = Request(
                method,
                target,
                {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:])},
                body,
                tls=tls is not None,
                user=credentials[0] if credentials else None,
                peer=str(writer.get_extra_info("peername")),
            )
            return self._page.respond(request)
        return self._route(method, target)

    @staticmethod
    async def _body(lines: list[str], method: str, reader: asyncio.StreamReader) -> bytes | None:
        """A POST's body (Content-Length, at most MAX_BODY bytes); None: too large."""
        if method != "POST":
            return b""
        try:
            length = int(_header(lines, "content-length") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY:
            return None
        return await asyncio.wait_for(reader.readexactly(length), READ_TIMEOUT) if length else b""

    def _route(self, method: str, target: str) -> Response:
        if method != "GET":
            return Response("405 Method Not Allowed", "text/plain", b"only GET\n")
        if target == "/metrics":
            start = time.perf_counter()
            body = render(self._registry)
            self._scrape.last = time.perf_counter() - start
            return Response("200 OK", CONTENT_TYPE_LATEST, body)
        if target == "/status" and self._view is not None:
            body = json.dumps(self._view().to_json(), indent=1).encode()
            return Response("200 OK", "application/json", body)
        if target == "/":  # without a status page (the VRRP process alone)
            return Response("200 OK", "text/plain", b"lvsmon: /metrics /status\n")
        return Response("404 Not Found", "text/plain", b"not found\n")


def _tls(web: WebConfig | None) -> TlsServer | None:
    return web.tls if web is not None else None


def _header(lines: list[str], name: str) -> str | None:
    for line in lines[1:]:
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() == name:
            return value.strip()
    return None


def _peercert(writer: asyncio.StreamWriter) -> dict[str, object] | None:
    sslobj = writer.get_extra_info("ssl_object")
    cert = sslobj.getpeercert() if sslobj is not None else None
    return dict(cert) if cert else None
