"""What the monitor runs: targets, probes (one per distinct endpoint and check), counters."""

from __future__ import annotations

import asyncio
import bisect
from dataclasses import dataclass, field

from lvsmon.health.probes import Checker
from lvsmon.health.state import CheckState
from lvsmon.model import DestKey, ServiceKey, endpoint_label
from lvsmon.model.health import CheckType, HealthCheck, Reason, Result

TargetKey = tuple[ServiceKey, DestKey]
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


class Histogram:
    """Cumulative-at-read histogram: one bisect per observation, no label lookups."""

    __slots__ = ("counts", "sum")

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(BUCKETS, value)] += 1
        self.sum += value


@dataclass(slots=True, eq=False)
class Probe:
    key: ProbeKey
    checker: Checker
    targets: dict[TargetKey, Target]
    state: CheckState
    durations: Histogram = field(default_factory=Histogram)
    failures: dict[Reason, int] = field(default_factory=dict)
    transitions: int = 0
    # the last failed check: (reason, detail, Unix time); kept after the server recovers
    last_failure: tuple[str, str, float] | None = None
    # run state, owned by the engine (times on its clock, time.monotonic)
    live: bool = False  # scheduled; False once dropped (its queued entries are skipped)
    busy: bool = False  # a run is in flight
    overdue: bool = False  # its next run came due while this one was still ending
    expired: bool = False  # the running (coroutine) check is being cancelled at its timeout
    interval: float = 0.0  # the check's, copied: read on every run
    timeout: float = 0.0
    slack: float = 0.0  # how late a run may start and keep the rhythm (engine._run)
    due: float = 0.0  # when the current (or last) run was due
    next_due: float = 0.0
    started: float = 0.0
    deadline: float = 0.0
    fd: int = -1  # the socket the engine watches for a socket checker
    task: asyncio.Task[Result] | None = None  # the run of a coroutine checker
