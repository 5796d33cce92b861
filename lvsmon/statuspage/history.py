"""The daemon's own short memory of rates: no Prometheus needed for the page's sparklines.

    history.record(now, counters)   at a fixed period (the daemon's sampler)
    history.rates(key)              -> Rates(connections/s, bytes/s, the conn/s sparkline)

Pure: the caller passes the time and the counters. Each key keeps at most `samples`
points in a ring (collections.deque with maxlen): memory is bounded by the table size
times `samples`, whatever the uptime. Keys absent from a sample are forgotten (a
removed real server leaves nothing behind). A counter that goes down (a data plane
restarted, a real server re-added) starts the series again rather than showing a
negative rate.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Sample:
    at: float
    connections: int
    bytes: int  # incoming + outgoing


@dataclass(frozen=True, slots=True)
class Rates:
    connections_per_second: float | None  # None: fewer than two samples yet
    bytes_per_second: float | None
    history: list[float]  # connections per second between consecutive samples, oldest first


NO_RATES = Rates(None, None, [])


class RateHistory:
    def __init__(self, samples: int):
        if samples < 2:
            raise ValueError(f"a rate needs two samples, got {samples}")
        self.samples = samples
        self._series: dict[Hashable, deque[Sample]] = {}

    def record(self, now: float, counters: Mapping[Any, tuple[int, int]]) -> None:
        """`counters`: key -> (connections so far, bytes so far)."""
        series = self._series
        for key in [k for k in series if k not in counters]:
            del series[key]
        for key, (connections, nbytes) in counters.items():
            ring = series.get(key)
            if ring is None or ring.maxlen != self.samples:
                ring = series[key] = deque(ring or (), maxlen=self.samples)
            if ring and (connections < ring[-1].connections or nbytes < ring[-1].bytes):
                ring.clear()  # the counter was reset: rates from here on
            ring.append(Sample(now, connections, nbytes))

    def resize(self, samples: int) -> None:
        """A reload changed history or sample_interval: keep the newest samples that fit."""
        if samples < 2:
            raise ValueError(f"a rate needs two samples, got {samples}")
        self.samples = samples
        for key, ring in self._series.items():
            self._series[key] = deque(ring, maxlen=samples)

    def rates(self, key: Hashable) -> Rates:
        ring = self._series.get(key)
        if ring is None or len(ring) < 2:
            return NO_RATES
        points = list(ring)
        history = [
            (b.connections - a.connections) / (b.at - a.at)
            for a, b in itertools.pairwise(points)
            if b.at > a.at
        ]
        last, before = points[-1], points[-2]
        span = last.at - before.at
        if span <= 0:
            return Rates(None, None, history)
        return Rates(
            (last.connections - before.connections) / span,
            (last.bytes - before.bytes) / span,
            history,
        )

    def __len__(self) -> int:
        return len(self._series)
