"""The adaptive-weight control law. Pure: no I/O, no clock reads.

    law.step_group(states, samples, now) -> {real server: (state, factor)}
    law.step(state, sample | None, now) -> (state, factor)    (proportional, piranha)

`factor` multiplies the configured weight (lvsmon.weights.effective rounds
the product). A sample is what one poll of the load source said about one
real server: L, its load normalised by `capacity` (1.0 = saturated); None
means the poll gave nothing usable for it. Every mode smooths L first:

    S = L on the first sample, then S + a·(L - S)        (EWMA)
        a = smoothing, or 1 - 2^(-Δt / half_life) when a half-life is set

balance (the default): equal load across the real servers of a virtual server
    m = mean of S over the real servers with a fresh sample
    r = S / m                                            relative load
    F = F · clamp(r^(-gain), 1/(1 + max_change), 1 + max_change)   when |r - 1| >= deadband
    then every F is rescaled (by at most the same clamp) so the largest is
    max_weight, and bounded to [min_weight, max_weight]
  Nothing changes while m <= load_low (an idle pool's loads say nothing) or
  fewer than two real servers have fresh data. The update is multiplicative
  and integrating: it stops only when all loads are within the deadband of
  each other, so weights settle at the servers' relative capacities (what a
  static-map law cannot: it needs a load difference to hold a weight
  difference). A higher load never earns a larger share; under constant
  loads factors move one way only until they settle (no oscillation).

proportional: an absolute map, for "back off above X% CPU" policies
    T = f(S) = max_w - (max_w - min_w) · clamp((S - load_low) / (load_high - load_low), 0, 1)
    F = F                                    when |T - F| < deadband
      = F + clamp(T - F, ±max_change)        otherwise
  Below load_low a server keeps max_w (its configured weight by default), at
  load_high and above it gets min_w, linear in between. T never increases
  with S and F moves towards T without passing it: under a constant load F
  is monotone and settles within the deadband of f(L).

agent answers (source "agent", either mode) bypass f: "75%" is the target
  0.75, bounded, reached by at most max_change per update; "drain", "down",
  "maint", "stopped" and "fail" give factor 0 until "up" or "ready"
  (HAProxy's agent-check words).

piranha (nanny's load_monitor rule, for operators migrating from Piranha)
    w = configured weight, W = last weight (starts at w), L = 1-minute load average
    L < 1: W' = min(⌊W + (w/2)·(1 - L)^(1/3)⌋, scale·w)
    L > 1: W' = max(⌊W - (w/2)·(L - 1)^(1/3)⌋, w)
    W ← W' when |W' - W| ≥ w/4, else W stays;   factor = W / w
  From piranha's nanny.c, adjustWeight() (Wensong Zhang's weighting patch,
  piranha 0.7.x, 2001): the load came from `rup`/`ruptime`/`uptime` on the
  real server, the setpoint is a load average of 1.0 (use `capacity` to make
  it per CPU), weights only rise above the configured weight (up to
  --scale, default 10, here max_weight) and fall back to it, never below.
  No smoothing. Nanny's doubling ramp after a server comes back is slow
  start's job here (lvsmon.weights.effective).

fail-static (every mode)
  A sample older than stale_after counts as missing. While samples are
  missing the factor is held; once expire_after has passed since the last
  fresh one, the factor returns to 1.0 (the configured weight) and the
  smoothed load is forgotten. A source outage alone therefore never takes a
  server out of rotation, and never leaves it off its configured weight.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Protocol, TypeVar

from lvsmon.model.adaptive import OFF, ON, PIRANHA, PROPORTIONAL, Params

K = TypeVar("K")


@dataclass(frozen=True, slots=True)
class Sample:
    at: float  # when it was measured, on the controller's clock
    load: float | None = None  # normalised load
    weight: float | None = None  # agent: fraction of the configured weight
    command: str = ""  # agent: one of OFF or ON, "" = none


@dataclass(frozen=True, slots=True)
class ServerState:
    configured: int = 1  # the configured weight (piranha's integer arithmetic)
    factor: float = 1.0  # the law's output, before an agent's "drain"
    smoothed: float | None = None  # S; None before the first sample and after expiry
    weight: int = 0  # piranha: last weight W
    fresh_at: float | None = None  # when the last fresh sample was measured
    load: float | None = None  # the last fresh normalised load (for the metric)
    off: bool = False  # an agent said drain/down

    @property
    def output(self) -> float:
        return 0.0 if self.off else self.factor

    def freshness(self, now: float, params: Params) -> str:
        """fresh, holding (fail-static) or expired (back to the configured weight)."""
        if self.fresh_at is None or now - self.fresh_at >= params.expire_after:
            return "expired"
        return "fresh" if now - self.fresh_at <= params.stale_after else "holding"


class Law(Protocol):
    params: Params

    def initial(self, configured: int) -> ServerState: ...

    def step_group(
        self, states: Mapping[K, ServerState], samples: Mapping[K, Sample | None], now: float
    ) -> dict[K, tuple[ServerState, float]]: ...


def law_for(params: Params) -> Law:
    if params.mode == PIRANHA:
        return Piranha(params)
    return Proportional(params) if params.mode == PROPORTIONAL else Balance(params)


def current(state: ServerState, now: float, params: Params) -> float:
    """The factor in force at `now` between steps (expiry applies without a poll)."""
    if state.fresh_at is None or now - state.fresh_at >= params.expire_after:
        return 1.0
    return state.output


def _fail_static(state: ServerState, now: float, params: Params) -> ServerState:
    if state.fresh_at is not None and now - state.fresh_at < params.expire_after:
        return state  # hold
    return replace(
        state,
        factor=1.0,
        smoothed=None,
        weight=state.configured,
        off=False,
        fresh_at=None,
        load=None,
    )


def _usable(sample: Sample | None, now: float, params: Params) -> bool:
    return sample is not None and now - sample.at <= params.stale_after


def _smooth(state: ServerState, sample: Sample, params: Params) -> ServerState:
    """EWMA of the load; also takes an agent's command and marks the sample fresh."""
    off = state.off
    if sample.command in OFF:
        off = True
    elif sample.command in ON:
        off = False
    smoothed, load = state.smoothed, state.load
    if sample.load is not None:
        load = max(0.0, sample.load)
        a = params.smoothing
        if params.half_life > 0 and state.fresh_at is not None:
            a = 1.0 - math.pow(2.0, -max(0.0, sample.at - state.fresh_at) / params.half_life)
        smoothed = load if smoothed is None else smoothed + a * (load - smoothed)
    return replace(state, smoothed=smoothed, load=load, off=off, fresh_at=sample.at)


def _towards(factor: float, goal: float | None, params: Params) -> float:
    """One rate-limited move towards `goal`, none inside the deadband."""
    if goal is None or abs(goal - factor) < params.deadband:
        return factor
    step = goal - factor
    if abs(step) <= params.max_change:
        return goal
    return factor + math.copysign(params.max_change, step)


def _agent_goal(params: Params, sample: Sample) -> float | None:
    if sample.weight is None:
        return None
    return min(params.max_weight, max(params.min_weight, sample.weight))


def target(params: Params, smoothed: float) -> float:
    """f(S): the proportional law's target factor for a smoothed load."""
    span = params.load_high - params.load_low
    over = (smoothed - params.load_low) / span if span > 0 else float(smoothed > params.load_low)
    over = min(1.0, max(0.0, over))
    return params.min_weight * over + params.max_weight * (1.0 - over)  # exact at both ends


class _PerServer:
    """A law whose real servers do not depend on each other."""

    params: Params

    def initial(self, configured: int) -> ServerState:
        return ServerState(configured=configured, weight=configured)

    def step(
        self, state: ServerState, sample: Sample | None, now: float
    ) -> tuple[ServerState, float]:
        raise NotImplementedError

    def step_group(
        self, states: Mapping[K, ServerState], samples: Mapping[K, Sample | None], now: float
    ) -> dict[K, tuple[ServerState, float]]:
        return {key: self.step(state, samples.get(key), now) for key, state in states.items()}


class Proportional(_PerServer):
    def __init__(self, params: Params):
        self.params = params

    def step(
        self, state: ServerState, sample: Sample | None, now: float
    ) -> tuple[ServerState, float]:
        p = self.params
        if sample is None or not _usable(sample, now, p):
            state = _fail_static(state, now, p)
            return state, state.output
        state = _smooth(state, sample, p)
        if sample.load is not None:
            assert state.smoothed is not None
            goal: float | None = target(p, state.smoothed)
        else:
            goal = _agent_goal(p, sample)
        state = replace(state, factor=_towards(state.factor, goal, p))
        return state, state.output


class Balance:
    def __init__(self, params: Params):
        self.params = params

    def initial(self, configured: int) -> ServerState:
        return ServerState(configured=configured, weight=configured)

    def step_group(
        self, states: Mapping[K, ServerState], samples: Mapping[K, Sample | None], now: float
    ) -> dict[K, tuple[ServerState, float]]:
        p = self.params
        out: dict[K, ServerState] = {}
        loaded: dict[K, ServerState] = {}  # fresh load samples this round
        for key, state in states.items():
            sample = samples.get(key)
            if sample is None or not _usable(sample, now, p):
                out[key] = _fail_static(state, now, p)
            elif sample.load is not None:
                loaded[key] = _smooth(state, sample, p)
            else:  # an agent's answer: a target, as in proportional mode
                state = _smooth(state, sample, p)
                out[key] = replace(state, factor=_towards(state.factor, _agent_goal(p, sample), p))
        out.update(self._rebalance(loaded))
        return {key: (state, state.output) for key, state in out.items()}

    def _rebalance(self, loaded: dict[K, ServerState]) -> dict[K, ServerState]:
        p = self.params
        if len(loaded) < 2:
            return loaded
        mean = sum(s.smoothed or 0.0 for s in loaded.values()) / len(loaded)
        if mean <= p.load_low:
            return loaded
        low, high = 1 / (1 + p.max_change), 1 + p.max_change
        moved = {}
        for key, s in loaded.items():
            r = max(s.smoothed or 0.0, 1e-9) / mean
            change = min(high, max(low, r**-p.gain)) if abs(r - 1) >= p.deadband else 1.0
            moved[key] = s.factor * change
        top = max(moved.values())
        scale = min(high, max(low, p.max_weight / top)) if top > 0 else 1.0
        return {
            key: replace(s, factor=min(p.max_weight, max(p.min_weight, moved[key] * scale)))
            for key, s in loaded.items()
        }


class Piranha(_PerServer):
    """nanny.c adjustWeight(), in integer weights as nanny computed them."""

    def __init__(self, params: Params):
        self.params = params

    def step(
        self, state: ServerState, sample: Sample | None, now: float
    ) -> tuple[ServerState, float]:
        p = self.params
        if sample is None or sample.load is None or not _usable(sample, now, p):
            state = _fail_static(state, now, p)
            return state, state.output
        w, last, load = state.configured, state.weight, max(0.0, sample.load)
        new = last
        if load < 1.0:  # nanny: (int) (lastWeight + scaleFactor * pow(1 - load, 1/3))
            new = min(int(last + w / 2 * math.pow(1.0 - load, 1 / 3)), int(p.max_weight * w))
        elif load > 1.0:
            new = max(int(last - w / 2 * math.pow(load - 1.0, 1 / 3)), w)
        if abs(new - last) < w / 4:  # nanny's diffThresh: small changes are not applied
            new = last
        factor = new / w if w else 1.0
        state = replace(
            state, weight=new, factor=factor, load=load, smoothed=load, fresh_at=sample.at
        )
        return state, state.output
