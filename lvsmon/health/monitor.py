"""HealthMonitor: runs the probes, keeps the verdicts, reports transitions.

- `configure(targets)` is reload-safe: a probe whose (endpoint, check) is
  unchanged keeps its state, counters and schedule; removed probes stop; new
  ones start at a random point of their first interval (jitter: 10k checks
  never fire in the same millisecond). A target whose check changed carries
  its verdict over to the new probe (a down server stays down until `rise`).
- One probe per distinct (connect address, connect port, check): every
  virtual server sharing that real server and check reads the same verdict.
  Exec probes are per virtual server too (the program is told which one).
- At most `max_in_flight` probes run at once (engine.py): a burst
  never exhausts file descriptors; late probes show up as lag, not errors.
- Verdicts leave as `down()` (out of service) and `weights()` (slow-start
  fractions, exec dynamic weights); lvsmon.weights.effective.from_verdicts
  turns them, with the adaptive factors, into the weights the daemon programs.
  `changed` is set whenever they may differ from the last read, so the daemon
  can sync at once instead of on its tick.
- Each transition is logged once per (virtual server, real server), with the
  reason, and passed to `on_transition`.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from lvsmon.health.engine import Engine
from lvsmon.health.probe import BUCKETS, Histogram, Probe, ProbeKey, Target, TargetKey
from lvsmon.health.probes import exec as exec_probe
from lvsmon.health.probes import make_checker, poller
from lvsmon.health.slowstart import slow_start_fraction
from lvsmon.health.state import NEVER, CheckState, HealthDetail, Transition, inherited, step
from lvsmon.logs import fields
from lvsmon.model.health import OK, Reason, Result

__all__ = [
    "BUCKETS",
    "HealthDetail",
    "HealthMonitor",
    "Histogram",
    "Observer",
    "Probe",
    "ProbeKey",
    "Target",
    "TargetKey",
    "TransitionEvent",
]

log = logging.getLogger("lvsmon.health")

DEFAULT_IN_FLIGHT = 256


@dataclass(frozen=True, slots=True)
class TransitionEvent:
    target: Target
    up: bool
    reason: Reason | None
    why: str
    at: float  # the monitor's clock


# (probe, scheduled start, actual start, result, duration): for benchmarks and tests;
# the times are on the engine's clock (time.monotonic)
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
        """`clock` stamps verdicts (slow start counts from it); the engine schedules on
        time.monotonic."""
        self.max_in_flight = max_in_flight
        self.changed = asyncio.Event()
        self._engine = Engine(max_in_flight, self._record)
        self._on_transition = on_transition
        self._rng = rng or random.Random()
        self._observer = observer
        self._clock = clock
        self._probes: dict[ProbeKey, Probe] = {}
        self._running = False

    # --- lifecycle ---

    async def start(self) -> None:
        self._running = True
        poller.acquire()  # the coroutine checkers' sockets (send_expect, dns, https)
        self._engine.start(asyncio.get_running_loop())
        for probe in self._probes.values():
            self._launch(probe)

    async def stop(self) -> None:
        if not self._running:
            return
        self._running = False
        await self._engine.stop()
        await exec_probe.settle()  # exec programs given up on mid-start: killed and reaped
        poller.release()

    def configure(self, targets: Iterable[Target]) -> None:
        wanted: dict[ProbeKey, dict[TargetKey, Target]] = {}
        for t in targets:
            wanted.setdefault(ProbeKey.of(t), {})[t.key] = t
        before = {tk: (p.state, t) for p in self._probes.values() for tk, t in p.targets.items()}
        for key in [k for k in self._probes if k not in wanted]:
            self._engine.drop(self._probes.pop(key))
        for key, members in wanted.items():
            probe = self._probes.get(key)
            if probe is not None:
                probe.targets = members
                continue
            olds = [before[tk][0] for tk in members if tk in before]
            state = inherited(min(olds, key=lambda s: s.up)) if olds else CheckState()
            checker = make_checker(key.check, key.address, key.port, key.scope)
            probe = self._probes[key] = Probe(key, checker, members, state)
            if self._running:
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
            for p in self._probes.values()
            for t in p.targets.values()
        )

    def details(self, now: float | None = None) -> dict[TargetKey, HealthDetail]:
        """Per target: its check, verdict, last failure (reason, detail, Unix time) and
        since when the verdict holds (Unix time): for the status page."""
        now = self._now() if now is None else now
        wall = time.time()
        out: dict[TargetKey, HealthDetail] = {}
        for probe in self._probes.values():
            state = probe.state
            since = wall - (now - state.since) if state.since != NEVER else None
            reason, why, at = probe.last_failure or ("", "", None)
            detail = HealthDetail(
                check=str(probe.key.check.type),
                up=state.up,
                since=since,
                last_failure_reason=reason,
                last_failure_detail=why,
                last_failure_at=at,
                failures=sum(probe.failures.values()),
            )
            for key in probe.targets:
                out[key] = detail
        return out

    def probes(self) -> list[Probe]:
        """The live probes (read-only use: the metrics collector)."""
        return list(self._probes.values())

    @property
    def in_flight(self) -> int:
        return self._engine.in_flight

    # --- running ---

    def _now(self) -> float:
        return self._clock()

    def _launch(self, probe: Probe) -> None:
        # jitter: the first run at a random point of the first interval
        self._engine.add(probe, self._rng.uniform(0, probe.key.check.interval))

    def _record(self, probe: Probe, result: Result, ended: float) -> None:
        """The engine's callback at the end of every run."""
        duration = ended - probe.started
        histogram = probe.durations  # Histogram.observe, inlined: once per check
        histogram.counts[bisect_left(BUCKETS, duration)] += 1
        histogram.sum += duration
        state = probe.state
        # the steady state (nearly every result) changes nothing: skip step() and the clock
        if not (
            result is OK
            and state.up
            and state.settled
            and not state.streak
            and state.weight is None
        ):
            if not result.ok and result.reason is not None:
                probe.failures[result.reason] = probe.failures.get(result.reason, 0) + 1
                # wall time: the status page shows when
                probe.last_failure = (str(result.reason), result.detail, time.time())
            check = probe.key.check
            probe.state, transition = step(
                state, result, self._clock(), rise=check.rise, fall=check.fall
            )
            if transition is not None:
                probe.transitions += 1
                self._transition(probe, transition)
            elif probe.state.up and probe.state.weight != state.weight:
                self.changed.set()  # a new dynamic weight
        if self._observer is not None:
            self._observer(probe, probe.due, probe.started, result, duration)

    def _transition(self, probe: Probe, tr: Transition) -> None:
        for target in probe.targets.values():
            self._emit(TransitionEvent(target, tr.up, tr.reason, tr.why, tr.at))
        self.changed.set()

    def _emit(self, event: TransitionEvent) -> None:
        t = event.target
        log.warning(
            "real server up" if event.up else "real server down",
            extra=fields(
                virtual_server=t.virtual_server,
                real_server=str(t.dest),
                check=t.check.type.value,
                reason=event.reason or "",
                why=event.why,
            ),
        )
        if self._on_transition is not None:
            self._on_transition(event)
