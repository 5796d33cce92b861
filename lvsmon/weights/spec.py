"""`[virtual_server.adaptive_weights]` as frozen values (read by lvsmon.weights.config).

Templates (URLs, the Prometheus query and match value, the agent address)
use `${name}` placeholders, which PromQL's braces never collide with:

  ${address}         the real server's address            10.0.0.2 / 2001:db8::2
  ${host}            the address, bracketed when IPv6     10.0.0.2 / [2001:db8::2]
  ${port}            the real server's port               80
  ${real_server}     the `real_server` label              10.0.0.2:80 / [2001:db8::2]:80
  ${virtual_server}  the virtual server's name            web
  ${instances}       (query only) a regular expression matching every real
                     server's rendered match_value: `instance=~"${instances}"`
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass, field

from lvsmon.weights.control import Params
from lvsmon.weights.expr import Expr

SOURCES = ("prometheus", "scrape", "agent")
PLACEHOLDERS = ("address", "host", "port", "real_server", "virtual_server")


@dataclass(frozen=True, slots=True)
class HttpOptions:
    tls_verify: bool = True
    ca_file: str = ""  # "" = the system store
    authorization: str = ""  # the Authorization header's value, "" = none
    max_response_bytes: int = 8 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class PrometheusSpec:
    url: str  # the server's base URL: http://prometheus:9090
    query: str  # one instant query returning a vector
    match_label: str = "instance"
    match_value: str = "${address}:9100"  # node_exporter's default instance label


@dataclass(frozen=True, slots=True)
class ScrapeSpec:
    url: str  # template: http://${host}:9100/metrics
    expression: Expr  # the load signal, from the exposition's samples


@dataclass(frozen=True, slots=True)
class AgentSpec:
    port: int  # HAProxy's agent-port
    address: str = "${address}"  # agent-addr
    send: bytes = b""  # agent-send


@dataclass(frozen=True, slots=True)
class AdaptiveSpec:
    source: str  # one of SOURCES
    interval: float = 5.0
    timeout: float = 2.0
    concurrency: int = 16  # requests at once (scrape, agent: one per real server)
    capacity: float = 1.0  # source value meaning "saturated": load = value / capacity
    params: Params = field(default_factory=Params)
    http: HttpOptions = field(default_factory=HttpOptions)
    prometheus: PrometheusSpec | None = None
    scrape: ScrapeSpec | None = None
    agent: AgentSpec | None = None


def render(template: str, values: dict[str, str]) -> str:
    """Fill `${name}` placeholders; unknown names are left as they are."""
    return string.Template(template).safe_substitute(values)


def placeholders(template: str) -> set[str]:
    return {
        m.group("braced") or m.group("named") or ""
        for m in string.Template.pattern.finditer(template)
        if m.group("braced") or m.group("named")
    }


def values_for(address: str, port: int, virtual_server: str) -> dict[str, str]:
    host = f"[{address}]" if ":" in address else address
    return {
        "address": address,
        "host": host,
        "port": str(port),
        "real_server": f"{host}:{port}",
        "virtual_server": virtual_server,
    }


def instances_regex(values: list[str]) -> str:
    """A PromQL (RE2, fully anchored) alternation of literal values, ready for a "..." string."""
    escaped = (re.escape(v) for v in sorted(set(values)))
    return "|".join(escaped).replace("\\", "\\\\")
