"""The status page's ring buffer of rates (lvsmon.statuspage.history): bounded, pure."""

from __future__ import annotations

import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lvsmon.statuspage.history import NO_RATES, RateHistory


def test_rates_come_from_the_last_two_samples_and_the_sparkline_from_all() -> None:
    h = RateHistory(4)
    assert h.rates("a") is NO_RATES
    h.record(0.0, {"a": (0, 0)})
    assert h.rates("a").connections_per_second is None  # one sample: no rate yet
    h.record(5.0, {"a": (10, 5_000_000)})
    h.record(10.0, {"a": (40, 15_000_000)})
    r = h.rates("a")
    assert r.connections_per_second == 6.0
    assert r.bytes_per_second == 2_000_000.0
    assert r.history == [2.0, 6.0]


def test_the_ring_is_bounded_whatever_the_uptime() -> None:
    h = RateHistory(3)
    for i in range(1000):
        h.record(float(i), {"a": (i * 2, i)})
    assert len(h.rates("a").history) == 2  # 3 samples -> 2 rates
    assert h.rates("a").history == [2.0, 2.0]


def test_a_removed_key_is_forgotten() -> None:
    h = RateHistory(3)
    h.record(0.0, {"a": (0, 0), "b": (0, 0)})
    h.record(1.0, {"a": (1, 1)})
    assert len(h) == 1
    assert h.rates("b") is NO_RATES


def test_a_counter_that_goes_down_restarts_the_series_not_a_negative_rate() -> None:
    h = RateHistory(5)
    h.record(0.0, {"a": (100, 100)})
    h.record(1.0, {"a": (110, 200)})
    h.record(2.0, {"a": (3, 10)})  # the data plane restarted
    assert h.rates("a") is not None
    assert h.rates("a").history == []
    h.record(3.0, {"a": (5, 20)})
    assert h.rates("a").history == [2.0]


def test_resize_keeps_the_newest_samples() -> None:
    h = RateHistory(10)
    for i in range(10):
        h.record(float(i), {"a": (i * i, 0)})
    h.resize(3)
    assert h.rates("a").history == [15.0, 17.0]  # 7->8->9 squared
    with pytest.raises(ValueError):
        h.resize(1)
    with pytest.raises(ValueError):
        RateHistory(1)


@given(st.lists(st.integers(0, 1000), min_size=2, max_size=50), st.integers(2, 20))
def test_rates_are_never_negative_and_never_more_than_the_ring(
    steps: list[int], samples: int
) -> None:
    h = RateHistory(samples)
    total = 0
    for i, step in enumerate(steps):
        total = total + step if step % 7 else step  # sometimes a reset
        h.record(float(i), {"k": (total, total * 10)})
    r = h.rates("k")
    assert len(r.history) <= samples - 1
    assert all(v >= 0 for v in r.history)
    assert r.connections_per_second is None or r.connections_per_second >= 0


def test_the_monitor_keeps_each_targets_last_failure_after_it_recovers() -> None:
    """HealthMonitor.details(): what the page's "last health failure" column shows."""
    from lvsmon.health.monitor import HealthMonitor, Target
    from lvsmon.model import DestKey, ServiceKey
    from lvsmon.model.health import OK, CheckType, HealthCheck, Reason, fail

    web, rs = ServiceKey("tcp", "192.0.2.10", 80), DestKey("10.0.0.1", 80)
    clock = iter(float(t) for t in range(100, 200))
    monitor = HealthMonitor(clock=lambda: next(clock))
    monitor.configure([Target(web, rs, HealthCheck(CheckType.TCP, rise=1, fall=1), "web")])
    (probe,) = monitor.probes()
    assert monitor.details()[(web, rs)].last_failure_at is None
    before = time.time()
    monitor._record(probe, fail(Reason.REFUSED, "connection refused"), 0.0)
    down = monitor.details()[(web, rs)]
    assert not down.up and down.failures == 1
    assert (down.last_failure_reason, down.last_failure_detail) == ("refused", "connection refused")
    assert down.last_failure_at is not None and before <= down.last_failure_at <= time.time()
    monitor._record(probe, OK, 0.0)
    up = monitor.details()[(web, rs)]
    assert up.up and up.last_failure_reason == "refused"  # kept after it recovered
    assert up.since is not None and abs(up.since - time.time()) < 5
