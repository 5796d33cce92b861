"""Slow start: the weight ramp of a returning real server, as the daemon rounds it."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from lvsmon.health.slowstart import slow_start_fraction
from lvsmon.weights.effective import effective_weight

times = st.floats(0, 1000, allow_nan=False)


def ramped(goal: int, since: float, now: float, window: float) -> int:
    """The weight the daemon programs for `goal` while ramping (effective_weight rounds)."""
    return effective_weight(goal, slow_start=slow_start_fraction(since, now, window))


def test_linear_ramp_to_the_goal_never_zero() -> None:
    assert [ramped(100, 10.0, 10.0 + t, 30.0) for t in (0, 3, 15, 29.9, 30, 99)] == [
        1,
        10,
        50,
        100,
        100,
        100,
    ]


def test_no_window_or_zero_goal_means_no_ramp() -> None:
    assert slow_start_fraction(0.0, 0.0, 0.0) == 1.0
    assert ramped(5, 0.0, 0.0, 0.0) == 5
    assert ramped(0, 0.0, 1.0, 30.0) == 0
    assert slow_start_fraction(float("-inf"), 0.0, 30.0) == 1.0  # never transitioned: no ramp


@given(st.integers(1, 65535), times, times, st.floats(0.001, 600, allow_nan=False))
def test_ramp_stays_between_1_and_goal_and_never_decreases(
    goal: int, since: float, dt: float, window: float
) -> None:
    w1 = ramped(goal, since, since + dt, window)
    w2 = ramped(goal, since, since + dt + 0.5, window)
    assert 1 <= w1 <= w2 <= goal
    assert ramped(goal, since, since + window, window) == goal
