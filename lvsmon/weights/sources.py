"""The load sources: one poll asks about every real server of one virtual server.

- prometheus: one instant query to a Prometheus server's HTTP API; each
  series of the resulting vector is matched to a real server by one label.
- scrape: each real server's exporter, fetched and parsed with
  prometheus_client's parser; an expression (lvsmon.weights.expr) picks the
  signal, e.g. load average per CPU, or CPU utilisation from counters.
- agent: an HAProxy-style agent on each real server (lvsmon.weights.agent).

A poll never raises: what failed is in `Poll.errors` (per real server) or
`Poll.error` (the whole source), and those real servers get no sample (the
control law holds their weight: fail-static).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlencode

from prometheus_client.parser import text_string_to_metric_families

from lvsmon.model import DestKey
from lvsmon.model.adaptive import (
    AdaptiveSpec,
    AgentSpec,
    Labels,
    PrometheusSpec,
    Samples,
    ScrapeSpec,
)
from lvsmon.weights import agent, expr, http
from lvsmon.weights.control import Sample
from lvsmon.weights.expr import ExprError, NoData
from lvsmon.weights.templates import instances_regex, render, values_for

Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class Member:
    """A real server whose weight adapts: its identity and configured weight."""

    dest: DestKey
    weight: int = 1


@dataclass(slots=True)
class Poll:
    samples: dict[DestKey, Sample] = field(default_factory=dict)
    errors: dict[DestKey, str] = field(default_factory=dict)
    error: str = ""  # the whole source failed

    @property
    def up(self) -> bool:
        """The source answered: the query succeeded, or some real server answered."""
        return not self.error and (bool(self.samples) or not self.errors)


async def poll_each(
    members: Sequence[Member], one: Callable[[DestKey], Awaitable[Sample | str]]
) -> Poll:
    """Sources that ask every real server (scrape, agent): all at once, a sample or an
    error per server."""
    out = Poll()
    results = await asyncio.gather(*(one(m.dest) for m in members))
    for m, result in zip(members, results, strict=True):
        if isinstance(result, Sample):
            out.samples[m.dest] = result
        else:
            out.errors[m.dest] = result
    return out


class Source(Protocol):
    kind: str

    async def poll(self, members: Sequence[Member], clock: Clock) -> Poll: ...


class Limits:
    """At most `per_source` requests of one virtual server and `overall` in total at once."""

    def __init__(self, per_source: int, overall: asyncio.Semaphore | None = None):
        self._own = asyncio.Semaphore(per_source)
        self._overall = overall

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        async with self._own:
            if self._overall is None:
                yield
                return
            async with self._overall:
                yield


def make_source(
    spec: AdaptiveSpec, virtual_server: str, overall: asyncio.Semaphore | None = None
) -> Source:
    limits = Limits(spec.concurrency, overall)
    if spec.prometheus is not None:
        return PrometheusSource(spec, spec.prometheus, virtual_server, limits)
    if spec.scrape is not None:
        return ScrapeSource(spec, spec.scrape, virtual_server, limits)
    assert spec.agent is not None
    return AgentSource(spec, spec.agent, virtual_server, limits)


class _HttpSource:
    def __init__(self, spec: AdaptiveSpec, virtual_server: str, limits: Limits):
        self.spec = spec
        self.virtual_server = virtual_server
        self.limits = limits
        opts = spec.http
        self.headers = {"Authorization": opts.authorization} if opts.authorization else {}
        self._tls: ssl.SSLContext | None = None

    def tls(self) -> ssl.SSLContext:
        if self._tls is None:  # built on first use: a CA file is read once per config
            self._tls = http.tls_context(self.spec.http.tls_verify, self.spec.http.ca_file)
        return self._tls

    async def fetch(self, url: str) -> bytes:
        tls = self.tls() if url.startswith("https:") else None
        async with self.limits.slot():
            return await http.get(
                url,
                timeout=self.spec.timeout,
                headers=self.headers,
                tls=tls,
                cap=self.spec.http.max_response_bytes,
            )

    def load(self, value: float) -> float:
        return value / self.spec.capacity


class PrometheusSource(_HttpSource):
    kind = "prometheus"

    def __init__(self, spec: AdaptiveSpec, prom: PrometheusSpec, vs: str, limits: Limits):
        super().__init__(spec, vs, limits)
        self.prom = prom

    def match_values(self, members: Sequence[Member]) -> dict[str, DestKey]:
        return {
            render(
                self.prom.match_value, values_for(m.dest.address, m.dest.port, self.virtual_server)
            ): m.dest
            for m in members
        }

    def url(self, members: Sequence[Member]) -> str:
        wanted = self.match_values(members)
        query = render(
            self.prom.query,
            {"virtual_server": self.virtual_server, "instances": instances_regex(list(wanted))},
        )
        return self.prom.url.rstrip("/") + "/api/v1/query?" + urlencode({"query": query})

    async def poll(self, members: Sequence[Member], clock: Clock) -> Poll:
        out = Poll()
        wanted = self.match_values(members)
        try:
            body = await self.fetch(self.url(members))
            series = _vector(body)
        except (http.FetchError, ValueError) as exc:
            out.error = str(exc)
            return out
        at = clock()
        seen: dict[DestKey, int] = {}
        label = self.prom.match_label
        for labels, value in series:
            dest = wanted.get(labels.get(label, ""))
            if dest is None:
                continue
            seen[dest] = seen.get(dest, 0) + 1
            if not math.isfinite(value):
                out.errors[dest] = f"value {value}"
            else:
                out.samples[dest] = Sample(at, load=self.load(value))
        for match, dest in wanted.items():
            if seen.get(dest, 0) > 1:
                out.samples.pop(dest, None)
                out.errors[dest] = f'{seen[dest]} series with {label}="{match}"'
            elif dest not in seen:
                out.errors[dest] = f'no series with {label}="{match}"'
        return out


def _vector(body: bytes) -> list[tuple[dict[str, str], float]]:
    """The API's answer to an instant query -> [(labels, value)]. Raises ValueError."""
    try:
        doc: Any = json.loads(body)
    except ValueError:
        raise ValueError("the answer is not JSON") from None
    if not isinstance(doc, dict) or doc.get("status") != "success":
        err = doc.get("error", "no status") if isinstance(doc, dict) else "not an object"
        raise ValueError(f"query failed: {err}")
    data = doc.get("data") or {}
    if data.get("resultType") != "vector":
        raise ValueError(f"the query gave a {data.get('resultType')}, not an instant vector")
    out = []
    try:
        for item in data.get("result") or []:
            labels, (_, text) = item["metric"], item["value"]
            out.append(({str(k): str(v) for k, v in labels.items()}, float(text)))
    except (KeyError, TypeError, ValueError, AttributeError):
        raise ValueError("the answer is not a Prometheus vector") from None
    return out


class ScrapeSource(_HttpSource):
    kind = "scrape"

    def __init__(self, spec: AdaptiveSpec, scrape: ScrapeSpec, vs: str, limits: Limits):
        super().__init__(spec, vs, limits)
        self.scrape = scrape
        self.names = expr.names(scrape.expression)
        self._previous: dict[DestKey, tuple[Samples, float]] = {}  # for rate()

    async def poll(self, members: Sequence[Member], clock: Clock) -> Poll:
        out = await poll_each(members, lambda dest: self._one(dest, clock))
        self._previous = {
            m.dest: self._previous[m.dest] for m in members if m.dest in self._previous
        }
        return out

    async def _one(self, dest: DestKey, clock: Clock) -> Sample | str:
        url = render(self.scrape.url, values_for(dest.address, dest.port, self.virtual_server))
        try:
            body = await self.fetch(url)
        except http.FetchError as exc:
            return str(exc)
        at = clock()
        try:
            samples = parse_exposition(body.decode("utf-8", "replace"), self.names)
        except ValueError as exc:
            return f"cannot parse the exposition: {exc}"
        before = self._previous.get(dest)
        self._previous[dest] = (samples, at)
        try:
            if before is None:
                value = expr.evaluate(self.scrape.expression, samples)
            else:
                value = expr.evaluate(self.scrape.expression, samples, before[0], at - before[1])
        except (NoData, ExprError) as exc:
            return str(exc)
        if not math.isfinite(value):
            return f"the expression gave {value}"
        return Sample(at, load=self.load(value))


def parse_exposition(text: str, names: frozenset[str]) -> dict[str, list[tuple[Labels, float]]]:
    """Samples named in `names` (the rest is skipped before parsing: node_exporter
    exposes thousands of lines, an expression reads a few)."""
    kept = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        end = len(line)
        for stop in ("{", " ", "\t"):
            i = line.find(stop)
            if 0 <= i < end:
                end = i
        if line[:end] in names:
            kept.append(line)
    out: dict[str, list[tuple[Labels, float]]] = {}
    for family in text_string_to_metric_families("\n".join(kept) + "\n"):
        for s in family.samples:
            out.setdefault(s.name, []).append((tuple(sorted(s.labels.items())), s.value))
    return out


class AgentSource:
    kind = "agent"

    def __init__(self, spec: AdaptiveSpec, agent_spec: AgentSpec, vs: str, limits: Limits):
        self.spec = spec
        self.agent = agent_spec
        self.virtual_server = vs
        self.limits = limits

    async def poll(self, members: Sequence[Member], clock: Clock) -> Poll:
        return await poll_each(members, lambda dest: self._one(dest, clock))

    async def _one(self, dest: DestKey, clock: Clock) -> Sample | str:
        values = values_for(dest.address, dest.port, self.virtual_server)
        address = render(self.agent.address, values)
        try:
            async with self.limits.slot():
                line = await agent.ask(address, self.agent.port, self.agent.send, self.spec.timeout)
            weight, command = agent.parse_reply(line)
        except agent.AgentError as exc:
            return str(exc)
        return Sample(clock(), weight=weight, command=command)
