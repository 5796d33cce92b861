"""The status page's HTTP face: `/`, `/static/*`, `/status.json`, `/status.schema.json`,
`POST /admin`. Served by lvsmon.httpd on the metrics listener, behind the same web
config (TLS, client certificates, basic auth) as /metrics.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from functools import cache
from importlib import resources
from typing import Protocol

from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from lvsmon import catalog
from lvsmon.health.monitor import HealthMonitor
from lvsmon.httpmsg import Request, Response
from lvsmon.logs import fields
from lvsmon.model import Config, endpoint_label
from lvsmon.status import DirectorView
from lvsmon.statuspage.admin import (
    ACTIONS,
    CSRF_COOKIE,
    CSRF_HEADER,
    Action,
    AdminState,
    Key,
    Refusal,
    csrf_refusal,
    csrf_token,
    override_for,
    parse_action,
)
from lvsmon.statuspage.document import AdminAccess, ReloadRecord, build_document
from lvsmon.statuspage.history import RateHistory

log = logging.getLogger("lvsmon.admin")

STATIC = {
    "/": ("static/index.html", "text/html; charset=utf-8"),
    "/static/page.css": ("static/page.css", "text/css; charset=utf-8"),
    "/static/page.js": ("static/page.js", "text/javascript; charset=utf-8"),
}
SCHEMA = "status.schema.json"
MAX_BODY = 4096
# the page loads only its own files; no inline script or style, no framing
PAGE_HEADERS = (
    ("Cache-Control", "no-store"),
    (
        "Content-Security-Policy",
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    ),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
)


class PageHost(Protocol):
    """What the page reads from and asks of the daemon (lvsmon.daemon.Director)."""

    config: Config
    health: HealthMonitor
    rates: RateHistory
    admin: AdminState

    @property
    def reloads(self) -> Sequence[ReloadRecord]: ...

    def status_view(self) -> DirectorView: ...

    def request_reload(self, trigger: str) -> None: ...

    def operator_changed(self) -> None:
        """A drain or temporary weight was set or cleared: the table must follow."""


@cache
def static_file(name: str) -> bytes:
    return resources.files("lvsmon.statuspage").joinpath(name).read_bytes()


class StatusPage:
    def __init__(self, host: PageHost):
        self._host = host
        self._key = secrets.token_bytes(32)  # CSRF tokens die with the process
        self.applied: Counter[str] = Counter()
        self.refused: Counter[tuple[str, str]] = Counter()
        # (who may act, time.monotonic(), body): several open pages share one build
        self._cache: tuple[AdminAccess, float, bytes] | None = None

    @staticmethod
    def handles(path: str) -> bool:
        return path in STATIC or path in ("/status.json", "/status.schema.json", "/admin")

    def respond(self, req: Request) -> Response:
        if req.path == "/admin":
            if req.method != "POST":
                return Response("405 Method Not Allowed", "text/plain", b"only POST\n")
            return self._admin(req)
        if req.method != "GET":
            return Response("405 Method Not Allowed", "text/plain", b"only GET\n")
        if req.path == "/status.json":
            return Response(
                "200 OK", "application/json", self._json(req), (("Cache-Control", "no-store"),)
            )
        if req.path == "/status.schema.json":
            return Response("200 OK", "application/schema+json", static_file(SCHEMA))
        name, ctype = STATIC[req.path]
        headers: tuple[tuple[str, str], ...] = PAGE_HEADERS
        access = self.access(req)
        if req.path == "/" and access.allowed and req.user is not None:
            token = csrf_token(self._key, req.user)
            cookie = f"{CSRF_COOKIE}={token}; Path=/; Secure; SameSite=Strict"
            headers = (*headers, ("Set-Cookie", cookie))
        return Response("200 OK", ctype, static_file(name), headers)

    def _json(self, req: Request) -> bytes:
        """The document, built at most once per half refresh period (up to 1 s) for
        readers with the same admin access: at 4,000 real servers a build costs the
        daemon's loop a few hundred milliseconds."""
        access, now = self.access(req), time.monotonic()
        ttl = min(1.0, self._host.config.daemon.status_page.refresh / 2)
        cached = self._cache
        if cached is not None and cached[0] == access and now - cached[1] < ttl:
            return cached[2]
        body = json.dumps(self.document(req), separators=(",", ":")).encode()
        self._cache = (access, now, body)
        return body

    def document(self, req: Request) -> dict[str, object]:
        host = self._host
        return build_document(
            host.status_view(),
            now=time.time(),
            settings=host.config.daemon.status_page,
            history=host.rates,
            health=host.health.details(),
            overrides=host.admin.get,
            reloads=host.reloads,
            admin=self.access(req),
        )

    def access(self, req: Request) -> AdminAccess:
        refusal = self._refusal(req)
        if refusal is None:
            return AdminAccess(True, True, "", req.user or "")
        enabled = self._host.config.daemon.status_page.admin
        return AdminAccess(enabled, False, refusal.message, req.user or "")

    def _refusal(self, req: Request) -> Refusal | None:
        if not self._host.config.daemon.status_page.admin:
            return Refusal(
                "disabled", "admin actions are off (daemon.status_page.admin = false): read-only"
            )
        if not req.tls:
            return Refusal("tls", "admin actions need TLS (tls_server_config in the web config)")
        if not req.user:
            return Refusal(
                "auth",
                "admin actions need an authenticated user (basic_auth_users in the web config)",
            )
        return None

    # --- POST /admin ---

    def _admin(self, req: Request) -> Response:
        parsed = parse_action(req.body[:MAX_BODY])
        name = parsed.action if isinstance(parsed, Action) else "invalid"
        refusal = self._refusal(req)
        if refusal is None and req.user is not None:
            cookie, header = req.cookie(CSRF_COOKIE), req.headers.get(CSRF_HEADER)
            refusal = csrf_refusal(self._key, req.user, cookie, header)
        if refusal is None and isinstance(parsed, Refusal):
            refusal = parsed
        if refusal is None and isinstance(parsed, Action):
            self._cache = None  # the next read shows the action's effect
            outcome = self._apply(parsed, req.user or "")
            if isinstance(outcome, Refusal):
                refusal = outcome
            else:
                self.applied[name] += 1
                log.warning(
                    "admin action",
                    extra=fields(user=req.user, peer=req.peer, action=name, result=outcome),
                )
                return _json("200 OK", {"ok": True, "message": outcome})
        assert refusal is not None
        self.refused[(name, refusal.reason)] += 1
        log.warning(
            "admin action refused",
            extra=fields(
                user=req.user or "",
                peer=req.peer,
                action=name,
                reason=refusal.reason,
                why=refusal.message,
            ),
        )
        return _json(
            refusal.status, {"ok": False, "reason": refusal.reason, "message": refusal.message}
        )

    def _apply(self, action: Action, user: str) -> str | Refusal:
        host = self._host
        if action.action == "reload":
            host.request_reload(f"admin ({user})")
            return "reload requested"
        key = self._key_of(action)
        if isinstance(key, Refusal):
            return key
        where = f"{action.real_server} in {action.virtual_server}"
        if action.action == "restore":
            if not host.admin.clear(key):
                return Refusal(
                    "bad_request", f"{where} has no drain or temporary weight", "409 Conflict"
                )
            host.operator_changed()
            return f"{where}: restored"
        override = override_for(action, user, time.time(), time.monotonic())
        host.admin.set(key, override)
        host.operator_changed()
        until = (
            f" until {time.strftime('%H:%M:%S', time.localtime(override.until))}"
            if override.until
            else " until restored"
        )
        if action.action == "drain":
            return f"{where}: drained (weight 0){until}"
        return f"{where}: weight {override.weight}{until}"

    def _key_of(self, action: Action) -> Key | Refusal:
        for vs in self._host.config.virtual_servers:
            if vs.name != action.virtual_server:
                continue
            for rs in vs.real_servers:
                if endpoint_label(rs.address, rs.port) == action.real_server:
                    return (vs.key, rs.key)
            return Refusal(
                "unknown_target",
                f"virtual server {vs.name} has no configured real server {action.real_server}",
                "404 Not Found",
            )
        return Refusal(
            "unknown_target", f"no virtual server named {action.virtual_server!r}", "404 Not Found"
        )


def _json(status: str, data: dict[str, object]) -> Response:
    return Response(
        status, "application/json", json.dumps(data).encode(), (("Cache-Control", "no-store"),)
    )


class AdminCollector(Collector):
    """lvsmon_admin_actions_total{action}, lvsmon_admin_actions_refused_total{action,reason}."""

    def __init__(self, page: StatusPage):
        self._page = page

    def collect(self) -> Iterator[Metric]:
        applied = catalog.counter("lvsmon_admin_actions_total")
        for action in ACTIONS:
            applied.add_metric([action], self._page.applied[action])
        yield applied
        refused = catalog.counter("lvsmon_admin_actions_refused_total")
        for (action, reason), n in sorted(self._page.refused.items()):
            refused.add_metric([action, reason], n)
        yield refused
