"""`[virtual_server.adaptive_weights]` as frozen values (read by lvsmon.config.adaptive).

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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

SOURCES = ("prometheus", "scrape", "agent")
PLACEHOLDERS = ("address", "host", "port", "real_server", "virtual_server")


# --- control-law parameters (lvsmon.weights.control runs the law) ---

BALANCE, PROPORTIONAL, PIRANHA = "balance", "proportional", "piranha"
MODES = (BALANCE, PROPORTIONAL, PIRANHA)
# HAProxy agent-check words: these take the server out until one of ON comes
OFF = frozenset({"drain", "down", "maint", "stopped", "fail"})
ON = frozenset({"up", "ready"})


@dataclass(frozen=True, slots=True)
class Params:
    """Control-law parameters; weights are fractions of the configured weight."""

    mode: str = BALANCE
    smoothing: float = 0.5  # EWMA weight of a new sample (1 = no smoothing)
    half_life: float = 0.0  # seconds; > 0 replaces `smoothing` (uneven intervals)
    deadband: float = 0.1
    max_change: float = 0.25  # per update
    gain: float = 0.4  # balance: how hard a relative load difference pushes
    min_weight: float = 0.1
    max_weight: float = 1.0  # piranha: nanny's --scale
    load_low: float = 0.1  # balance: adapt above this mean load; proportional: see above
    load_high: float = 0.9  # proportional only
    stale_after: float = 15.0
    expire_after: float = 120.0


def defaults(mode: str) -> Params:
    if mode == PROPORTIONAL:
        return Params(mode=PROPORTIONAL, deadband=0.05, load_low=0.5)
    if mode == PIRANHA:
        return Params(mode=PIRANHA, smoothing=1.0, min_weight=1.0, max_weight=10.0)
    return Params()


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


# --- the `scrape` source's expression tree (lvsmon.weights.expr parses and evaluates it) ---

Labels = tuple[tuple[str, str], ...]
# sample name -> [(labels, value)]
Samples = Mapping[str, Sequence[tuple[Labels, float]]]


@dataclass(frozen=True, slots=True)
class Matcher:
    label: str
    op: str  # = != =~ !~
    value: str
    regex: re.Pattern[str] | None = None

    def matches(self, labels: Mapping[str, str]) -> bool:
        have = labels.get(self.label, "")
        if self.regex is not None:
            return bool(self.regex.fullmatch(have)) == (self.op == "=~")
        return (have == self.value) == (self.op == "=")


@dataclass(frozen=True, slots=True)
class Selector:
    name: str
    matchers: tuple[Matcher, ...] = ()
    rate: bool = False

    def select(self, samples: Samples) -> dict[Labels, float]:
        out: dict[Labels, float] = {}
        for labels, value in samples.get(self.name, ()):
            d = dict(labels)
            if all(m.matches(d) for m in self.matchers):
                out[labels] = value
        return out


@dataclass(frozen=True, slots=True)
class Number:
    value: float


@dataclass(frozen=True, slots=True)
class Aggregate:
    op: str
    vector: Selector


@dataclass(frozen=True, slots=True)
class Binary:
    op: str
    left: Node
    right: Node


@dataclass(frozen=True, slots=True)
class Negate:
    operand: Node


Node = Number | Selector | Aggregate | Binary | Negate


@dataclass(frozen=True, slots=True)
class Expr:
    """A parsed `scrape` expression: its text and tree (lvsmon.weights.expr evaluates it)."""

    text: str
    root: Node
