"""HealthMonitor: runs the probes, keeps the verdicts, reports transitions.

- `configure(targets)` is reload-safe: a probe whose (endpoint, check) is
  unchanged keeps its state, counters and schedule; removed probes stop; new
  ones start at a random point of their first interval (jitter: 10k checks
  never fire in the same millisecond). A target whose check changed carries
  its verdict over to the new probe (a down server stays down until `rise`).
- One probe per distinct (connect address, connect port, check): every
  virtual server sharing that real server and check reads the same verdict.
  Exec probes are per virtual server too (the program is told which one).
- At most `max_in_flight` probes run at once (an asyncio.Semaphore): a burst
  never exhausts file descriptors; late probes show up as lag, not errors.
- Verdicts leave as `overrides()`: the mapping lvsmon.desired.desired_table
  takes ((service, dest) -> None = out of service, or an int weight: slow-start
  ramp or exec dynamic weight). `changed` is set whenever they may differ
  from the last read, so the daemon can sync at once instead of on its tick.
- Each transition is logged once per (virtual server, real server), with the
  reason, and passed to `on_transition`.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from lvsmon.health.check import CheckType, HealthCheck, Reason, Result, fail
from lvsmon.health.probes import Checker, classify, make_checker, poller
from lvsmon.health.probes import exec as exec_probe
from lvsmon.health.slowstart import ramp_weight, slow_start_fraction
from lvsmon.health.state import CheckState, Transition, inherited, step
from lvsmon.health.ticker import Limit, Ticker
from lvsmon.logs import fields
from lvsmon.model import DestKey, ServiceKey, endpoint_label

log = logging.getLogger("lvsmon.health")

TargetKey = tuple[ServiceKey, DestKey]
DEFAULT_IN_FLIGHT = 256
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass(frozen=True, slots=True)
class Target:
    """One real server of one virtual server, with the check that judges it."""

    service: ServiceKey
    dest: DestKey
    check: HealthCheck
    virtual_server: str = ""  # the name: logs, metrics, the exec environment
    weight: int = 1  # configured weight: what slow start ramps to
    slow_start: float = 0.0  # seconds; 0 = the weight is restored at once

    @property
    def key(self) -> TargetKey:
        return (self.service, self.dest)


@dataclass(frozen=True, slots=True)
class ProbeKey:
    address: str
    port: int
    check: HealthCheck
    scope: str = ""  # the virtual server, for exec checks only

    @classmethod
    def of(cls, target: Target) -> ProbeKey:
        address, port = target.check.endpoint(target.dest.address, target.dest.port)
        scope = target.virtual_server if target.check.type is CheckType.EXEC else ""
        return cls(address, port, target.check, scope)

    def __str__(self) -> str:
        return f"{self.check.type} {endpoint_label(self.address, self.port)}"


@dataclass(frozen=True, slots=True)
class TransitionEvent:
    target: Target
    up: bool
    reason: Reason | None
    why: str
    at: float  # the monitor's clock (loop.time())


class Histogram:
    """Cumulative-at-read histogram: one bisect per observation, no label lookups."""

    __slots__ = ("counts", "sum")

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(BUCKETS, value)] += 1
        self.sum += value


@dataclass(slots=True)
class Probe:
    key: ProbeKey
    checker: Checker
    targets: dict[TargetKey, Target]
    state: CheckState
    durations: Histogram = field(default_factory=Histogram)
    failures: dict[Reason, int] = field(default_factory=dict)
    transitions: int = 0
    task: asyncio.Task[None] | None = None
    expired: bool = False  # the running check hit its timeout (vs. a cancel from stop)

    def expire(self) -> None:
        if self.task is not None:
            self.expired = True
            self.task.cancel()


# (probe, scheduled start, actual start, result, duration): for benchmarks and tests
Observer = Callable[[Probe, float, float, Result, float], None]


class HealthMonitor:
    def __init__(
        self,
        *,
        max_in_flight: int = DEFAULT_IN_FLIGHT,
        on_transition: Callable[[TransitionEvent], None] | None = None,
        rng: random.Random | None = None,
        observer: Observer | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        """`clock` stamps verdicts (slow start counts from it); scheduling uses the loop's."""
        self.max_in_flight = max_in_flight
        self.changed = asyncio.Event()
        self._limit = Limit(max_in_flight)
        self._ticker = Ticker()
        self._on_transition = on_transition
        self._rng = rng or random.Random()
        self._observer = observer
        self._clock = clock
        self._probes: dict[ProbeKey, Probe] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: set[asyncio.Task[None]] = set()

    # --- lifecycle ---

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._ticker.start()
        poller.acquire()
        for probe in self._probes.values():
            self._launch(probe)

    async def stop(self) -> None:
        if self._loop is None:
            return
        for probe in self._probes.values():
            self._cancel(probe)
        self._loop = None
        if self._stopping:
            await asyncio.gather(*self._stopping, return_exceptions=True)
        await self._ticker.stop()
        await exec_probe.settle()  # exec programs given up on mid-start: killed and reaped
        poller.release()

    def configure(self, targets: Iterable[Target]) -> None:
        wanted: dict[ProbeKey, dict[TargetKey, Target]] = {}
        for t in targets:
            wanted.setdefault(ProbeKey.of(t), {})[t.key] = t
        before = {tk: (p.state, t) for p in self._probes.values() for tk, t in p.targets.items()}
        for key in [k for k in self._probes if k not in wanted]:
            self._cancel(self._probes.pop(key))
        for key, members in wanted.items():
            probe = self._probes.get(key)
            if probe is not None:
                probe.targets = members
                continue
            olds = [before[tk][0] for tk in members if tk in before]
            state = inherited(min(olds, key=lambda s: s.up)) if olds else CheckState()
            checker = make_checker(key.check, key.address, key.port, key.scope)
            probe = self._probes[key] = Probe(key, checker, members, state)
            if self._loop is not None:
                self._launch(probe)
        now = self._now()
        for probe in self._probes.values():  # a target moved onto a probe with another verdict
            for tk, target in probe.targets.items():
                if tk in before and before[tk][0].up != probe.state.up:
                    why = f"now judged by the shared probe {probe.key}"
                    state = probe.state
                    self._emit(TransitionEvent(target, state.up, state.reason, why, now))
        self.changed.set()

    # --- verdicts ---

    def overrides(self, now: float | None = None) -> dict[TargetKey, int | None]:
        """For lvsmon.desired.desired_table: only targets that differ from the config."""
        now = self._now() if now is None else now
        out: dict[TargetKey, int | None] = {}
        for probe in self._probes.values():
            state = probe.state
            for key, target in probe.targets.items():
                if not state.up:
                    out[key] = None
                    continue
                goal = target.weight if state.weight is None or not target.weight else state.weight
                weight = ramp_weight(goal, state.since, now, target.slow_start)
                if weight != target.weight:
                    out[key] = weight
        return out

    def weights(
        self, now: float | None = None
    ) -> tuple[dict[TargetKey, float], dict[TargetKey, int]]:
        """For lvsmon.weights.effective: the slow-start fraction of every ramping target in
        service, and the exec checks' dynamic weights (where they replace the configured)."""
        now = self._now() if now is None else now
        ramps: dict[TargetKey, float] = {}
        dynamic: dict[TargetKey, int] = {}
        for probe in self._probes.values():
            state = probe.state
            if not state.up:
                continue
            for key, target in probe.targets.items():
                fraction = slow_start_fraction(state.since, now, target.slow_start)
                if fraction < 1.0:
                    ramps[key] = fraction
                if state.weight is not None and target.weight and state.weight != target.weight:
                    dynamic[key] = state.weight
        return ramps, dynamic

    def down(self) -> frozenset[TargetKey]:
        """Targets out of service by their verdict (lvsmon.status.build_view's `down`)."""
        return frozenset(tk for p in self._probes.values() if not p.state.up for tk in p.targets)

    def ramping(self, now: float | None = None) -> bool:
        """True while some weight is still ramping (the caller keeps syncing)."""
        now = self._now() if now is None else now
        return any(
            p.state.up and now - p.state.since < t.slow_start
            for p in self._probes.values() for t in p.targets.values()
        )  # fmt: skip

    def probes(self) -> list[Probe]:
        """The live probes (read-only use: the metrics collector)."""
        return list(self._probes.values())

    @property
    def in_flight(self) -> int:
        return self._limit.in_use

    # --- running ---

    def _now(self) -> float:
        return self._clock()

    def _launch(self, probe: Probe) -> None:
        assert self._loop is not None
        delay = self._rng.uniform(0, probe.key.check.interval)
        probe.task = self._loop.create_task(self._run(probe, delay), name=f"health {probe.key}")
        probe.task.add_done_callback(_report_crash)

    def _cancel(self, probe: Probe) -> None:
        if probe.task is not None and not probe.task.done():
            probe.task.cancel()
            self._stopping.add(probe.task)
            probe.task.add_done_callback(self._stopping.discard)
        probe.task = None

    async def _run(self, probe: Probe, delay: float) -> None:
        loop = asyncio.get_running_loop()
        limit, ticker = self._limit, self._ticker
        check = probe.key.check
        interval, timeout = check.interval, check.timeout
        due = loop.time() + delay
        while True:
            if due > loop.time():
                await ticker.sleep_until(due)
            if limit.free:
                limit.free -= 1
            else:
                await limit.wait()
            try:
                started = loop.time()
                deadline = ticker.at(started + timeout, probe.expire)
                try:
                    result = await probe.checker()
                except asyncio.CancelledError:
                    if not probe.expired:
                        raise
                    probe.task.uncancel()  # type: ignore[union-attr]
                    result = fail(Reason.TIMEOUT, f"no answer within {timeout:g}s "
                                                  f"({probe.checker.phase})")  # fmt: skip
                except Exception as exc:
                    result = classify(exc)
                finally:
                    ticker.cancel(deadline)
                    probe.expired = False
                ended = loop.time()
            finally:
                limit.release()
            self._record(probe, result, ended - started, self._clock())
            if self._observer is not None:
                self._observer(probe, due, started, result, ended - started)
            # the next start is an interval after this one's actual start, not its
            # planned one: a late probe never squeezes the next (`fall` failures always
            # span (fall-1) intervals) and lag never accumulates into a burst
            due = started + interval

    def _record(self, probe: Probe, result: Result, duration: float, now: float) -> None:
        probe.durations.observe(duration)
        if not result.ok and result.reason is not None:
            probe.failures[result.reason] = probe.failures.get(result.reason, 0) + 1
        check = probe.key.check
        old = probe.state
        probe.state, transition = step(old, result, now, rise=check.rise, fall=check.fall)
        if transition is not None:
            probe.transitions += 1
            self._transition(probe, transition)
        elif probe.state.up and probe.state.weight != old.weight:
            self.changed.set()  # a new dynamic weight

    def _transition(self, probe: Probe, tr: Transition) -> None:
        for target in probe.targets.values():
            self._emit(TransitionEvent(target, tr.up, tr.reason, tr.why, tr.at))
        self.changed.set()

    def _emit(self, event: TransitionEvent) -> None:
        t = event.target
        log.warning(
            "real server up" if event.up else "real server down",
            extra=fields(virtual_server=t.virtual_server, real_server=str(t.dest),
                         check=t.check.type.value, reason=event.reason or "", why=event.why),
        )  # fmt: skip
        if self._on_transition is not None:
            self._on_transition(event)


def _report_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("health probe stopped by a bug", exc_info=task.exception(),
                  extra=fields(probe=task.get_name()))  # fmt: skip
