"""WeightController: polls each virtual server's load source, runs the control law.

- One task per virtual server with adaptive weights, polling every
  `interval` from a random point of the first one (jitter: many virtual
  servers never poll in the same millisecond). A poll that falls more than
  an interval behind skips ahead instead of bursting.
- Requests are bounded twice: `concurrency` per virtual server and
  `max_in_flight` overall (a semaphore), with `timeout` on each.
- `configure(groups)` is reload-safe: an unchanged virtual server keeps its
  task and every real server's state; a changed spec keeps the factors
  (same mode) and restarts the poll; new real servers start at factor 1.0.
- Results leave as `factors(now)`: (virtual server, real server) -> factor
  for lvsmon.weights.effective. `changed` is set whenever a factor moved
  enough to change a programmed weight, so the daemon can sync at once.
- A source going down or up, and each real server's error, is logged once
  per change, not once per poll.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from lvsmon.logs import fields
from lvsmon.model import DestKey, ServiceKey, VirtualServer
from lvsmon.model.adaptive import PIRANHA, AdaptiveSpec
from lvsmon.weights.control import Law, ServerState, current, law_for
from lvsmon.weights.effective import effective_weight
from lvsmon.weights.sources import Member, Poll, Source, make_source

log = logging.getLogger("lvsmon.weights")

Key = tuple[ServiceKey, DestKey]
SourceFactory = Callable[[AdaptiveSpec, str, asyncio.Semaphore], Source]
DEFAULT_IN_FLIGHT = 256


@dataclass(frozen=True, slots=True)
class Group:
    """A virtual server with adaptive weights: what the controller polls for."""

    service: ServiceKey
    name: str  # the `virtual_server` label
    spec: AdaptiveSpec
    members: tuple[Member, ...]


def group_for(vs: VirtualServer, spec: AdaptiveSpec) -> Group:
    return Group(vs.key, vs.name, spec, tuple(Member(rs.key, rs.weight) for rs in vs.real_servers))


@dataclass(frozen=True, slots=True)
class SourceView:
    service: ServiceKey
    virtual_server: str
    source: str  # prometheus, scrape, agent
    up: bool | None  # None: not polled yet
    last_success: float  # Unix time, 0 = never
    error: str


@dataclass(frozen=True, slots=True)
class ServerView:
    service: ServiceKey
    dest: DestKey
    factor: float
    load: float | None  # fresh normalised load, None when not fresh
    freshness: str  # fresh, holding, expired
    updates: int
    error: str


@dataclass(slots=True)
class _Runner:
    group: Group
    source: Source
    law: Law
    states: dict[DestKey, ServerState]
    updates: dict[DestKey, int] = field(default_factory=dict)
    errors: dict[DestKey, str] = field(default_factory=dict)
    up: bool | None = None
    error: str = ""
    last_success: float = 0.0
    task: asyncio.Task[None] | None = None


class WeightController:
    def __init__(
        self,
        *,
        max_in_flight: int = DEFAULT_IN_FLIGHT,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        source_factory: SourceFactory = make_source,
    ):
        """`clock` times samples and expiry; `wall` stamps last-success for the metric;
        `source_factory` builds a virtual server's source (tests pass fakes)."""
        self.changed = asyncio.Event()
        self._overall = asyncio.Semaphore(max_in_flight)
        self._clock = clock
        self._wall = wall
        self._rng = rng or random.Random()
        self._make_source = source_factory
        self._runners: dict[ServiceKey, _Runner] = {}
        self._running = False
        self._stopping: set[asyncio.Task[None]] = set()

    # --- lifecycle ---

    async def start(self) -> None:
        self._running = True
        for runner in self._runners.values():
            self._launch(runner)

    async def stop(self) -> None:
        self._running = False
        for runner in self._runners.values():
            self._cancel(runner)
        if self._stopping:
            await asyncio.gather(*self._stopping, return_exceptions=True)

    def configure(self, groups: Iterable[Group]) -> None:
        wanted = {g.service: g for g in groups}
        for key in [k for k in self._runners if k not in wanted]:
            self._cancel(self._runners.pop(key))
        for key, group in wanted.items():
            old = self._runners.get(key)
            if old is not None and old.group.spec == group.spec and old.group.name == group.name:
                old.states = _carry(old.law, old.states, group.members)
                old.group = group
                continue
            law = law_for(group.spec.params)
            same_mode = old is not None and old.law.params.mode == law.params.mode
            states = _carry(law, old.states if old is not None and same_mode else {}, group.members)
            runner = _Runner(
                group, self._make_source(group.spec, group.name, self._overall), law, states
            )
            if old is not None:
                runner.updates = old.updates
                self._cancel(old)
            self._runners[key] = runner
            if self._running:
                self._launch(runner)
        self.changed.set()

    # --- results ---

    def factors(self, now: float | None = None) -> dict[Key, float]:
        now = self._clock() if now is None else now
        return {
            (svc, dest): current(state, now, r.law.params)
            for svc, r in self._runners.items()
            for dest, state in r.states.items()
        }

    def loads(self, now: float | None = None) -> dict[Key, float]:
        """Fresh normalised loads, clamped to 0..1 (the metric's range)."""
        now = self._clock() if now is None else now
        return {
            (svc, dest): min(1.0, max(0.0, s.load))
            for svc, r in self._runners.items()
            for dest, s in r.states.items()
            if s.load is not None and s.freshness(now, r.law.params) == "fresh"
        }

    def updates(self) -> dict[Key, int]:
        return {
            (svc, dest): n
            for svc, r in self._runners.items()
            for dest, n in r.updates.items()
            if dest in r.states
        }

    def sources(self) -> list[SourceView]:
        return [
            SourceView(svc, r.group.name, r.source.kind, r.up, r.last_success, r.error)
            for svc, r in self._runners.items()
        ]

    def servers(self, now: float | None = None) -> list[ServerView]:
        now = self._clock() if now is None else now
        out = []
        for svc, r in self._runners.items():
            for dest, s in r.states.items():
                fresh = s.freshness(now, r.law.params)
                load = s.load if fresh == "fresh" else None
                out.append(
                    ServerView(
                        svc,
                        dest,
                        current(s, now, r.law.params),
                        load,
                        fresh,
                        r.updates.get(dest, 0),
                        r.errors.get(dest, ""),
                    )
                )
        return out

    def services(self) -> frozenset[ServiceKey]:
        return frozenset(self._runners)

    # --- polling ---

    async def poll(self, service: ServiceKey) -> None:
        """One poll of one virtual server's source, now (the task does this every interval)."""
        runner = self._runners[service]
        members = runner.group.members
        try:
            result = await runner.source.poll(members, self._clock)
        except Exception as exc:  # a bug in a source must not stop the polling
            log.exception(
                "load source failed unexpectedly", extra=fields(virtual_server=runner.group.name)
            )
            result = Poll(error=f"internal error: {exc}")
        if self._runners.get(service) is not runner:
            return  # reconfigured while polling
        self._record(runner, result)

    def _record(self, runner: _Runner, result: Poll) -> None:
        now = self._clock()
        name, kind = runner.group.name, runner.source.kind
        if result.up != runner.up or (not result.up and result.error != runner.error):
            if result.up:  # the first answer is news only in debug logs
                level = logging.DEBUG if runner.up is None else logging.WARNING
                log.log(level, "load source up", extra=fields(virtual_server=name, source=kind))
            else:
                why = result.error or "no real server answered"
                log.warning(
                    "load source down; weights held (fail-static)",
                    extra=fields(virtual_server=name, source=kind, error=why),
                )
        runner.up, runner.error = result.up, result.error
        if result.up:
            runner.last_success = self._wall()
        samples = {m.dest: result.samples.get(m.dest) for m in runner.group.members}
        stepped = runner.law.step_group(runner.states, samples, now)
        moved = False
        for m in runner.group.members:
            error = result.errors.get(m.dest, result.error if samples[m.dest] is None else "")
            if error != runner.errors.get(m.dest, "") and error and not result.error:
                log.info(
                    "no load for real server",
                    extra=fields(virtual_server=name, real_server=str(m.dest), error=error),
                )
            runner.errors[m.dest] = error
            before = effective_weight(m.weight, adaptive=runner.states[m.dest].output)
            runner.states[m.dest], factor = stepped[m.dest]
            after = effective_weight(m.weight, adaptive=factor)
            if before != after:
                runner.updates[m.dest] = runner.updates.get(m.dest, 0) + 1
                moved = True
                log.info(
                    "adaptive weight",
                    extra=fields(
                        virtual_server=name,
                        real_server=str(m.dest),
                        factor=round(factor, 3),
                        weight=after,
                    ),
                )
        if moved:
            self.changed.set()

    def _launch(self, runner: _Runner) -> None:
        delay = self._rng.uniform(0, runner.group.spec.interval)
        runner.task = asyncio.get_running_loop().create_task(
            self._run(runner, delay), name=f"weights {runner.group.name}"
        )
        runner.task.add_done_callback(_report_crash)

    def _cancel(self, runner: _Runner) -> None:
        if runner.task is not None and not runner.task.done():
            runner.task.cancel()
            self._stopping.add(runner.task)
            runner.task.add_done_callback(self._stopping.discard)
        runner.task = None

    async def _run(self, runner: _Runner, delay: float) -> None:
        loop = asyncio.get_running_loop()
        interval = runner.group.spec.interval
        due = loop.time() + delay
        while True:
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            await self.poll(runner.group.service)
            due += interval
            now = loop.time()
            if due <= now:  # fell behind by more than an interval: skip, don't burst
                due += ((now - due) // interval + 1) * interval


def _carry(
    law: Law, states: Mapping[DestKey, ServerState], members: Iterable[Member]
) -> dict[DestKey, ServerState]:
    """Keep the state of real servers still configured. A new configured weight keeps a
    proportional factor (a fraction); piranha's integer weights start over."""
    out = {}
    for m in members:
        old = states.get(m.dest)
        if old is None or (old.configured != m.weight and law.params.mode == PIRANHA):
            out[m.dest] = law.initial(m.weight)
        else:
            out[m.dest] = dataclasses.replace(old, configured=m.weight)
    return out


def _report_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error(
            "weight polling stopped by a bug",
            exc_info=task.exception(),
            extra=fields(task=task.get_name()),
        )
