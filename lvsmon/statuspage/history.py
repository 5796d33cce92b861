"""The daemon's own short memory of rates: no Prometheus needed for the page's sparklines.

    history.record(now, counters)   at a fixed period (the daemon's sampler)
    history.rates(key)              -> Rates(connections/s, bytes/s, the conn/s sparkline)

Pure: the caller passes the time and the counters. Each key keeps its last counters
and a ring (collections.deque with maxlen) of the connection rates between samples:
memory is bounded by the table size times `samples`, whatever the uptime, and a rate
is computed once, when its sample arrives, not on every read of the page. Keys absent
from a sample are forgotten (a removed real server leaves nothing behind). A counter
that goes down (a data plane restarted, a real server re-added) starts the series
again rather than showing a negative rate.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Rates:
    connections_per_second: float | None  # None: fewer than two samples yet
    bytes_per_second: float | None  # incoming + outgoing
    history: list[float]  # connections per second between consecutive samples, oldest first


NO_RATES = Rates(None, None, [])


@dataclass(slots=True)
class _Series:
    at: float  # the last sample: time and counters
    connections: int
    bytes: int
    history: deque[float]
    rates: Rates = NO_RATES


class RateHistory:
    def __init__(self, samples: int):
        """`samples`: points per key (the sparkline shows samples - 1 rates)."""
        self.samples = _checked(samples)
        self._series: dict[Hashable, _Series] = {}

    def record(self, now: float, counters: Mapping[Any, tuple[int, int]]) -> None:
        """`counters`: key -> (connections so far, bytes so far)."""
        series = self._series
        for key in [k for k in series if k not in counters]:
            del series[key]
        for key, (connections, nbytes) in counters.items():
            s = series.get(key)
            if s is None:
                series[key] = _Series(now, connections, nbytes, deque(maxlen=self.samples - 1))
                continue
            span = now - s.at
            if connections < s.connections or nbytes < s.bytes:
                s.history.clear()  # the counter was reset: rates from here on
                s.rates = NO_RATES
            elif span > 0:
                cps = (connections - s.connections) / span
                s.history.append(round(cps, 3))
                s.rates = Rates(cps, (nbytes - s.bytes) / span, list(s.history))
            s.at, s.connections, s.bytes = now, connections, nbytes

    def resize(self, samples: int) -> None:
        """A reload changed history or sample_interval: keep the newest rates that fit."""
        self.samples = _checked(samples)
        for s in self._series.values():
            s.history = deque(s.history, maxlen=samples - 1)
            if s.rates is not NO_RATES:
                s.rates = Rates(
                    s.rates.connections_per_second,
                    s.rates.bytes_per_second,
                    list(s.history),
                )

    def rates(self, key: Hashable) -> Rates:
        s = self._series.get(key)
        return NO_RATES if s is None else s.rates

    def __len__(self) -> int:
        return len(self._series)


def _checked(samples: int) -> int:
    if samples < 2:
        raise ValueError(f"a rate needs two samples, got {samples}")
    return samples
