"""The daemon's HTTP messages, shared by lvsmon.httpd and the status page (lvsmon.statuspage)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Response:
    status: str
    ctype: str
    body: bytes
    headers: tuple[tuple[str, str], ...] = field(default=())


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str  # without the query
    headers: dict[str, str]  # lower-case names
    body: bytes = b""
    tls: bool = False  # came over TLS
    user: str | None = None  # authenticated by basic auth (None: no auth configured)
    peer: str = ""

    def cookie(self, name: str) -> str | None:
        for part in self.headers.get("cookie", "").split(";"):
            key, sep, value = part.strip().partition("=")
            if sep and key == name:
                return value
        return None
