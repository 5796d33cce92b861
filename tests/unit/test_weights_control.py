"""The adaptive-weight control law: bounded, monotone, stable, fail-static on time."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from lvsmon.model.adaptive import BALANCE, PIRANHA, PROPORTIONAL, Params
from lvsmon.weights.control import (
    Balance,
    Piranha,
    Proportional,
    Sample,
    ServerState,
    current,
    target,
)

loads = st.floats(0, 4, allow_nan=False)


@st.composite
def params(draw: st.DrawFn) -> Params:
    low = draw(st.floats(0, 1.5))
    return Params(
        mode=PROPORTIONAL,
        smoothing=draw(st.floats(0.05, 1)),
        half_life=draw(st.sampled_from([0.0, 0.5, 3.0])),
        deadband=draw(st.floats(0, 0.3)),
        max_change=draw(st.floats(0.01, 1)),
        min_weight=draw(st.floats(0, 1)),
        max_weight=draw(st.floats(1, 5)),
        load_low=low,
        load_high=low + draw(st.floats(0.01, 2)),
        stale_after=5.0,
        expire_after=30.0,
    )


def run(
    law: Proportional | Piranha,
    samples: Sequence[float | None],
    start: ServerState | None = None,
    dt: float = 1.0,
) -> list[float]:
    state = start or law.initial(100)
    out = []
    for i, load in enumerate(samples):
        now = (i + 1) * dt
        sample = None if load is None else Sample(now, load=load)
        state, factor = law.step(state, sample, now)
        out.append(factor)
    return out


def spread(xs: list[float]) -> float:
    return max(xs) - min(xs)


def reversals(xs: list[float]) -> int:
    signs = [b - a for a, b in itertools.pairwise(xs) if abs(b - a) > 1e-12]
    return sum(1 for a, b in itertools.pairwise(signs) if (a > 0) != (b > 0))


def monotone(xs: list[float]) -> bool:
    ups = all(b >= a - 1e-12 for a, b in itertools.pairwise(xs))
    downs = all(b <= a + 1e-12 for a, b in itertools.pairwise(xs))
    return ups or downs


# --- proportional ---


def test_formula_by_hand() -> None:
    p = Params(
        smoothing=1.0,
        deadband=0.0,
        max_change=1.0,
        min_weight=0.1,
        max_weight=1.0,
        load_low=0.5,
        load_high=0.9,
    )
    assert target(p, 0.2) == 1.0 and target(p, 0.5) == 1.0
    assert math.isclose(target(p, 0.7), 0.55) and target(p, 0.9) == target(p, 3.0) == 0.1
    assert run(Proportional(p), [0.7, 0.9, 0.2]) == [0.55, 0.1, 1.0]


def test_smoothing_deadband_and_rate_limit() -> None:
    p = Params(
        smoothing=0.5,
        deadband=0.05,
        max_change=0.25,
        min_weight=0.1,
        max_weight=1.0,
        load_low=0.0,
        load_high=1.0,
    )
    factors = run(Proportional(p), [1.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    # first sample is taken as is (S=1, T=0.1): the factor walks down 0.25 per update
    assert [round(f, 3) for f in factors] == [0.75, 0.5, 0.25, 0.1, 0.1, 0.1]
    state = ServerState(configured=100, factor=0.5, smoothed=0.52, fresh_at=0.0)
    _, f = Proportional(p).step(state, Sample(1.0, load=0.54), 1.0)
    assert f == 0.5  # target 0.514: within the deadband, no change


@given(params(), st.lists(st.one_of(st.none(), loads), max_size=40))
def test_bounded(p: Params, samples: list[float | None]) -> None:
    for f in run(Proportional(p), samples):
        assert p.min_weight - 1e-9 <= f <= p.max_weight + 1e-9


@given(params(), loads, loads)
def test_target_never_increases_with_load(p: Params, a: float, b: float) -> None:
    lo, hi = sorted((a, b))
    assert target(p, hi) <= target(p, lo)


@given(params(), st.lists(loads, min_size=1, max_size=10), loads, loads)
def test_one_step_is_monotone_in_the_sample(
    p: Params, history: list[float], a: float, b: float
) -> None:
    law = Proportional(p)
    state = law.initial(100)
    for i, load in enumerate(history):
        state, _ = law.step(state, Sample(float(i), load=load), float(i))
    now = float(len(history))
    lo, hi = sorted((a, b))
    _, f_lo = law.step(state, Sample(now, load=lo), now)
    _, f_hi = law.step(state, Sample(now, load=hi), now)
    assert f_hi <= f_lo + 1e-12


@given(params(), loads, loads)
@settings(deadline=None)
def test_settled_factor_is_monotone_in_load(p: Params, a: float, b: float) -> None:
    lo, hi = sorted((a, b))
    law = Proportional(p)
    settle = settle_steps(p)
    f_lo, f_hi = run(law, [lo] * settle)[-1], run(law, [hi] * settle)[-1]
    # both end within the deadband of their targets, whose order is the loads' reversed
    assert f_hi <= f_lo + 2 * p.deadband + 1e-9
    assert abs(f_lo - target(p, lo)) < p.deadband + 1e-9
    assert abs(f_hi - target(p, hi)) < p.deadband + 1e-9


def settle_steps(p: Params) -> int:
    """Enough updates for the rate limit to cover the range and the EWMA to reach 1e-9."""
    a = 1 - 2 ** (-1 / p.half_life) if p.half_life > 0 else p.smoothing
    ewma = math.ceil(math.log(1e-9) / math.log(1 - a)) if a < 1 else 1
    return int(p.max_weight / p.max_change) + ewma + 50


@given(params(), loads)
@settings(deadline=None)
def test_no_oscillation_under_a_constant_load(p: Params, load: float) -> None:
    factors = run(Proportional(p), [load] * settle_steps(p))
    assert monotone(factors)
    assert spread(factors[-50:]) <= 1e-6  # settled (exactly, when the deadband is above 0)


@given(params(), loads, loads, st.integers(0, 30))
@settings(deadline=None)
def test_converges_after_a_step(p: Params, before: float, after: float, warmup: int) -> None:
    law = Proportional(p)
    factors = run(law, [before] * warmup + [after] * settle_steps(p))
    tail = factors[warmup:]
    assert reversals(tail) <= 1  # it may first finish the old direction, then turns once
    assert abs(tail[-1] - target(p, after)) < p.deadband + 1e-4
    assert spread(tail[-50:]) <= 1e-4


def test_converges_within_the_predicted_number_of_updates() -> None:
    p = Params(smoothing=0.5, deadband=0.05, max_change=0.25, load_low=0.5, load_high=0.9)
    factors = run(Proportional(p), [0.2] * 5 + [0.95] * 20)
    after = factors[5:]
    # 1.0 -> 0.1 at 0.25 per update while the EWMA crosses load_high: done in 6 updates
    first = next(i for i, f in enumerate(after) if abs(f - 0.1) < p.deadband)
    assert first <= 6 and all(abs(f - 0.1) < p.deadband for f in after[first:])


# --- fail-static ---


def test_fail_static_holds_then_returns_to_the_configured_weight() -> None:
    p = Params(
        mode=PROPORTIONAL,
        smoothing=1.0,
        deadband=0.0,
        max_change=1.0,
        load_low=0.5,
        stale_after=5.0,
        expire_after=20.0,
    )
    law = Proportional(p)
    state, f = law.step(law.initial(100), Sample(0.0, load=0.9), 0.0)
    assert f == 0.1
    for now in (1.0, 5.0, 19.9):  # the source is down: held
        state, f = law.step(state, None, now)
        assert f == 0.1 and current(state, now, p) == 0.1
    assert current(state, 20.0, p) == 1.0  # expiry applies between polls too
    state, f = law.step(state, None, 20.0)
    assert f == 1.0 and state.smoothed is None
    state, f = law.step(state, Sample(21.0, load=0.9), 21.0)
    assert f == 0.1  # fresh data again: the EWMA starts over, not from the old value


def test_a_stale_sample_counts_as_missing() -> None:
    p = Params(
        mode=PROPORTIONAL,
        smoothing=1.0,
        deadband=0.0,
        max_change=1.0,
        load_low=0.5,
        stale_after=5.0,
        expire_after=20.0,
    )
    law = Proportional(p)
    state, _ = law.step(law.initial(100), Sample(0.0, load=0.2), 0.0)
    state, f = law.step(state, Sample(1.0, load=0.9), 7.0)  # measured 6 s ago
    assert f == 1.0 and state.load == 0.2 and state.fresh_at == 0.0
    assert state.freshness(7.0, p) == "holding" and state.freshness(20.0, p) == "expired"


@given(params(), st.lists(loads, min_size=1, max_size=20), st.floats(0, 200))
def test_an_outage_never_takes_a_server_out(p: Params, history: list[float], gap: float) -> None:
    law = Proportional(p)
    state = law.initial(100)
    for i, load in enumerate(history):
        state, _ = law.step(state, Sample(float(i), load=load), float(i))
    last = float(len(history) - 1)
    now = last + gap
    state, f = law.step(state, None, now)
    expected = 1.0 if gap >= p.expire_after else run(law, history)[-1]
    assert math.isclose(f, expected)
    assume(p.min_weight > 0)
    assert f > 0


# --- agent answers ---


def test_agent_percent_drain_and_up() -> None:
    p = Params(deadband=0.0, max_change=1.0, min_weight=0.1, max_weight=1.0)
    law = Proportional(p)
    state, f = law.step(law.initial(10), Sample(0.0, weight=0.75), 0.0)
    assert f == 0.75
    state, f = law.step(state, Sample(1.0, command="drain"), 1.0)
    assert f == 0.0
    state, f = law.step(state, Sample(2.0, weight=0.5), 2.0)
    assert f == 0.0  # as HAProxy: a percentage does not end a drain
    state, f = law.step(state, Sample(3.0, command="ready"), 3.0)
    assert f == 0.5
    state, f = law.step(state, Sample(4.0, weight=3.0), 4.0)
    assert f == 1.0  # clamped to max_weight
    state, f = law.step(state, Sample(5.0, weight=0.0, command="down"), 5.0)
    state, f = law.step(state, None, 5.0 + p.expire_after)
    assert f == 1.0 and not state.off  # an agent gone silent: back to the configured weight


# --- piranha ---


def nanny(weight: int, last: int, load: float, scale: int) -> int:
    """nanny.c adjustWeight()'s load branch, transliterated (C int truncation)."""
    scale_factor = weight / 2
    diff_thresh = weight / 4
    new = last
    if load >= 0.0 and load != 1.0:
        if load < 1.0:
            new = math.trunc(last + scale_factor * math.pow(1.0 - load, 1 / 3))
            new = min(new, scale * weight)
        else:
            new = math.trunc(last - scale_factor * math.pow(load - 1.0, 1 / 3))
            new = max(new, weight)
        if abs(new - last) >= diff_thresh:
            return new
    return last


def test_piranha_by_hand() -> None:
    law = Piranha(Params(mode=PIRANHA, min_weight=1.0, max_weight=10.0))
    state = law.initial(10)
    weights = []
    for i, load in enumerate([0.0, 0.5, 0.9, 2.0, 9.0, 1.0]):
        state, f = law.step(state, Sample(float(i), load=load), float(i))
        weights.append(state.weight)
        assert f == state.weight / 10
    # 10+5=15; 15+5*0.794=18.97->18; 18+5*0.464=20.3->20 (2 < 2.5: not applied);
    # 18-5=13; 13-5*2=3 -> floored at 10; load 1.0: unchanged
    assert weights == [15, 18, 18, 13, 10, 10]


@settings(max_examples=300)
@given(st.integers(1, 1000), st.integers(1, 20), st.lists(st.floats(0, 20), max_size=30))
def test_piranha_matches_nanny(weight: int, scale: int, samples: list[float]) -> None:
    law = Piranha(Params(mode=PIRANHA, min_weight=1.0, max_weight=float(scale)))
    state, last = law.initial(weight), weight
    for i, load in enumerate(samples):
        state, f = law.step(state, Sample(float(i), load=load), float(i))
        last = nanny(weight, last, load, scale)
        assert state.weight == last
        assert 1.0 <= f <= scale


def test_piranha_fail_static() -> None:
    p = Params(mode=PIRANHA, min_weight=1.0, max_weight=10.0, stale_after=30, expire_after=60)
    law = Piranha(p)
    state, f = law.step(law.initial(4), Sample(0.0, load=0.0), 0.0)
    assert f == 1.5  # 4 + 2 = 6
    state, f = law.step(state, None, 59.0)
    assert f == 1.5  # nanny: "the weight is not adjusted"
    state, f = law.step(state, None, 60.0)
    assert f == 1.0 and state.weight == 4  # lvsmon: then back to the configured weight


# --- balance ---

BAL = Params(mode=BALANCE, stale_after=5.0, expire_after=30.0)


def group_run(law: Balance, loads: Sequence[Sequence[float | None]]) -> list[list[float]]:
    """Open loop: loads[t][i] given; -> factors[t][i]."""
    keys = list(range(len(loads[0])))
    states = {k: law.initial(100) for k in keys}
    out = []
    for t, row in enumerate(loads):
        samples = {
            k: None if v is None else Sample(float(t), load=v)
            for k, v in zip(keys, row, strict=True)
        }
        stepped = law.step_group(states, samples, float(t))
        states = {k: s for k, (s, _) in stepped.items()}
        out.append([stepped[k][1] for k in keys])
    return out


def closed_loop(
    law: Balance,
    capacity: list[float],
    rho: float,
    steps: int,
    change: tuple[int, int, float] | None = None,
) -> tuple[list[list[float]], list[list[float]]]:
    """Shares follow weights (wrr), load = demand x share / capacity, measured a step late."""
    cap = list(capacity)
    demand = rho * sum(cap)
    keys = list(range(len(cap)))
    states = {k: law.initial(100) for k in keys}
    factors, loads = [[1.0] * len(cap)], []
    for t in range(steps):
        if change is not None and t == change[0]:
            cap[change[1]] = change[2]
        f = factors[-1]
        loads.append([demand * f[k] / sum(f) / cap[k] for k in keys])
        seen = loads[-2] if len(loads) > 1 else loads[-1]  # one poll of delay
        samples = {k: Sample(float(t), load=seen[k]) for k in keys}
        stepped = law.step_group(states, samples, float(t))
        states = {k: s for k, (s, _) in stepped.items()}
        factors.append([stepped[k][1] for k in keys])
    return factors[1:], loads


def test_balance_by_hand() -> None:
    ((a, b),) = group_run(Balance(BAL), [[0.8, 0.2]])
    # r = 1.6 and 0.4: 1.6^-0.4 = 0.83; 0.4^-0.4 = 1.44 -> clamped to 1.25;
    # both rescaled by 0.8 so the largest is max_weight 1.0
    assert a == pytest.approx(1.6**-0.4 * 0.8) and b == 1.0


def test_balance_holds_on_an_idle_pool_or_a_single_source() -> None:
    law = Balance(BAL)
    assert group_run(law, [[0.05, 0.0]])[-1] == [1.0, 1.0]  # mean <= load_low
    assert group_run(law, [[0.9, None]])[-1] == [1.0, 1.0]  # nothing to compare with
    assert group_run(law, [[0.5, 0.55]])[-1] == [1.0, 1.0]  # within the deadband


@st.composite
def groups(draw: st.DrawFn) -> list[list[float | None]]:
    n = draw(st.integers(2, 5))
    row = st.lists(st.one_of(st.none(), loads), min_size=n, max_size=n)
    return draw(st.lists(row, min_size=1, max_size=30))


@given(groups())
def test_balance_is_bounded(loads_: list[list[float | None]]) -> None:
    for row in group_run(Balance(BAL), loads_):
        assert all(BAL.min_weight - 1e-9 <= f <= BAL.max_weight + 1e-9 for f in row)


@given(st.lists(loads, min_size=2, max_size=5), st.integers(0, 4), loads, st.integers(0, 5))
def test_balance_a_higher_load_never_earns_a_larger_share(
    row: list[float], i: int, other: float, warmup: int
) -> None:
    i %= len(row)
    law = Balance(BAL)
    history: list[list[float | None]] = [list(row)] * warmup
    lo_row, hi_row = list(row), list(row)
    lo_row[i], hi_row[i] = sorted((row[i], other))
    f_lo = group_run(law, [*history, lo_row])[-1]
    f_hi = group_run(law, [*history, hi_row])[-1]
    assert f_hi[i] / sum(f_hi) <= f_lo[i] / sum(f_lo) + 1e-9


@given(st.lists(st.floats(0.2, 4), min_size=2, max_size=5))
def test_balance_no_oscillation_under_constant_loads(row: list[float]) -> None:
    """Open loop (loads that do not answer the weights): each factor moves one way only,
    towards a bound (settling is a closed-loop property: the next test)."""
    factors = group_run(Balance(BAL), [list(row)] * 200)
    for i in range(len(row)):
        assert monotone([f[i] for f in factors])


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.floats(1, 8), min_size=2, max_size=5),
    st.floats(0.3, 0.9),
    st.integers(0, 4),
    st.floats(1, 8),
)
def test_balance_converges_in_closed_loop_after_a_step(
    capacity: list[float], rho: float, which: int, new: float
) -> None:
    """The acceptance property that matters: weights settle where the loads are equal,
    and settle again after a server's capacity changes, with no sustained oscillation."""
    law = Balance(BAL)
    which %= len(capacity)
    factors, loads_ = closed_loop(law, capacity, rho, 160, change=(80, which, new))
    for end in (80, 160):
        settled = loads_[end - 20 : end]
        mean = sum(settled[-1]) / len(settled[-1])
        if mean > BAL.load_low:  # below it the law leaves an idle group alone, by design
            assert all(abs(u / mean - 1) < BAL.deadband + 0.05 for u in settled[-1]), settled[-1]
        window = factors[end - 20 : end]
        for i in range(len(capacity)):
            assert spread([f[i] for f in window]) <= 1e-9  # no updates once settled
    for i in range(len(capacity)):  # damped: at most a small overshoot or two
        assert reversals([f[i] for f in factors[:80]]) <= 3
        assert reversals([f[i] for f in factors[80:]]) <= 3
