"""The seed's scenario: a wlc server that fails and returns empty is flooded.

Servers A and B (weight 1) and C (weight 2) share a steady load under wlc:
10 new connections a second, each open for an exponentially distributed
time (mean 60 s), then inactive for IPVS's 2 min TIME_WAIT before its entry
goes. The decisions are lvsmon's own wlc (lvsmon.schedulers), fed the
active/inactive counts IPVS keeps. At t = 600 s C fails and is removed; A and
B absorb its share. At t = 720 s C returns at weight 2 with no connections.

wlc ranks by ((active << 8) + inactive) / weight, so the returning C, with
nothing, beats A and B, each holding about 300 connections, on every new
connection until C holds about twice what each of them holds. A and B only
drain, 300 e^(-t/60s) each, while C fills, 600 (1 - e^(-t/60s)): they meet
at t = 60 s x ln 2, so C takes every new connection for about 42 s (some
400 in a row), twice its fair rate. This is the flood the LVS documents warn
about. The tests below pin it down: C's share before the failure and long
after its return is its weight's 50 %; in the first 20 s back it is 100 %;
the run of consecutive connections to C lasts 42 s +- 25 %; it ends when C
has caught up (about half of all active connections, as its weight says).

Prevention: `slow_start = "120s"` on the virtual server. The last tests run
the same scenario with the weights lvsmon programs while C ramps back,
computed by lvsmon.weights.effective.weight_parts (as the daemon's sync
does, once a second): during the ramp every weight is scaled x100 so C
starts at 1/200 of its weight instead of at half of it, and C's share grows
with its ramp instead of jumping to 100 %. The window must be long next to
the connections' lifetime (here twice the mean): C's share of new
connections is what it takes to follow its ramp while A and B drain, so a
window as short as the lifetime still sends C ~80 % for the first 40 s.
"""

from __future__ import annotations

import heapq
import math
import random
from collections import Counter
from dataclasses import dataclass, field
from ipaddress import IPv4Address

import pytest

from lvsmon.health.slowstart import slow_start_fraction
from lvsmon.model import RealServer, VirtualServer
from lvsmon.schedulers import Dest, Flow, Scheduler, create
from lvsmon.weights.effective import weight_parts

RATE = 10.0  # new connections per second
MEAN_LIFETIME = 60.0  # seconds a connection stays open (exponential)
TIME_WAIT = 120.0  # seconds a closed connection's entry stays, inactive
FAIL_AT = 600.0
RETURN_AT = 720.0
END_AT = 1200.0
#: How long the flood lasts: until C's share of the active connections, filling as
#: 1 - e^(-t/lifetime), meets A's and B's, draining as e^(-t/lifetime).
FLOOD_SECONDS = MEAN_LIFETIME * math.log(2)
FLOW = Flow(IPv4Address("192.0.2.1"), 40000, IPv4Address("198.51.100.1"), 80)


def server(name: str, weight: int) -> Dest:
    dest = Dest(IPv4Address({"A": "10.0.0.1", "B": "10.0.0.2", "C": "10.0.0.3"}[name]), 80, weight)
    dest.label = name
    return dest


@dataclass
class Trace:
    """Every decision (time, server label) and the active counts at chosen moments."""

    decisions: list[tuple[float, str]] = field(default_factory=list)
    #: (active A, active B, active C) right before the first decision not to C after
    #: C's return
    at_catch_up: tuple[int, int, int] | None = None

    def shares(self, start: float, end: float) -> dict[str, float]:
        picks = Counter(label for t, label in self.decisions if start <= t < end)
        total = sum(picks.values())
        return {label: picks[label] / total for label in "ABC"}

    def run_after(self, start: float) -> tuple[int, float]:
        """Consecutive decisions to C from `start`, and how long that run lasted."""
        after = [(t, label) for t, label in self.decisions if t >= start]
        n = next(i for i, (_, label) in enumerate(after) if label != "C")
        return n, after[n][0] - start


SLOW_START = 120.0  # at least twice the connections' lifetime: see the module docstring
ADDRESSES = {"A": "10.0.0.1", "B": "10.0.0.2", "C": "10.0.0.3"}
SERVICE = VirtualServer(
    "web",
    IPv4Address("198.51.100.1"),
    80,
    scheduler="wlc",
    real_servers=tuple(
        RealServer(IPv4Address(ADDRESSES[n]), 80, w) for n, w in (("A", 1), ("B", 1), ("C", 2))
    ),
)


def programmed(now: float, slow_start: float) -> dict[str, int]:
    """The weights lvsmon programs at `now` when C came back at RETURN_AT."""
    key_c = (SERVICE.key, SERVICE.real_servers[2].key)
    ramps = {}
    if slow_start and now >= RETURN_AT:
        fraction = slow_start_fraction(RETURN_AT, now, slow_start)
        if fraction < 1.0:
            ramps[key_c] = fraction
    parts = weight_parts([SERVICE], slow_start=ramps)
    reals = zip("ABC", SERVICE.real_servers, strict=True)
    return {n: parts[(SERVICE.key, rs.key)].effective for n, rs in reals}


def simulate(seed: int = 1, slow_start: float = 0.0) -> Trace:
    rng = random.Random(seed)
    sched: Scheduler = create("wlc")
    a, b, c = server("A", 1), server("B", 1), server("C", 2)
    dests: list[Dest] = []
    for dest in (a, b, c):  # IPVS lists the newest first
        dests.insert(0, dest)
        sched.update(dests)
    # (time, seq, event, dest): "close" turns active into inactive, "expire" drops it
    events: list[tuple[float, int, str, Dest]] = []
    seq = 0
    trace = Trace()
    step = 1.0 / RATE
    now = 0.0
    while now < END_AT:
        while events and events[0][0] <= now:
            _, _, kind, dest = heapq.heappop(events)
            if kind == "close":
                dest.active -= 1
                dest.inactive += 1
                heapq.heappush(events, (_ + TIME_WAIT, seq, "expire", dest))
                seq += 1
            else:
                dest.inactive -= 1
        if c in dests and FAIL_AT <= now < RETURN_AT:
            dests.remove(c)  # C fails; its connections die with it
            sched.update(dests)
        if c not in dests and now >= RETURN_AT:
            c = server("C", 2)  # back, with no connections at all
            dests.insert(0, c)
            sched.update(dests)
        if slow_start and now >= RETURN_AT and abs(now - round(now)) < step / 2:
            weights = programmed(now, slow_start)  # the daemon syncs once a second
            if [d.weight for d in (a, b, c)] != [weights[n] for n in "ABC"]:
                for dest in (a, b, c):
                    dest.set_weight(weights[dest.label])
                sched.update(dests)
        picked = sched.schedule(dests, FLOW, now)
        assert picked is not None
        if now >= RETURN_AT and picked is not c and trace.at_catch_up is None:
            trace.at_catch_up = (a.active, b.active, c.active)
        picked.active += 1
        heapq.heappush(events, (now + rng.expovariate(1 / MEAN_LIFETIME), seq, "close", picked))
        seq += 1
        trace.decisions.append((now, picked.label))
        now += step
    return trace


@pytest.fixture(scope="module")
def trace() -> Trace:
    return simulate()


def test_steady_state_follows_the_weights(trace: Trace) -> None:
    shares = trace.shares(300.0, FAIL_AT)
    assert shares["C"] == pytest.approx(0.5, abs=0.05)
    assert shares["A"] == pytest.approx(0.25, abs=0.05)
    assert shares["B"] == pytest.approx(0.25, abs=0.05)


def test_a_and_b_take_everything_while_c_is_down(trace: Trace) -> None:
    shares = trace.shares(FAIL_AT, RETURN_AT)
    assert shares["C"] == 0
    assert shares["A"] == pytest.approx(0.5, abs=0.05)


def test_returning_c_is_flooded(trace: Trace) -> None:
    # fair share 50 %: in its first 20 s back C gets every new connection
    assert trace.shares(RETURN_AT, RETURN_AT + 20)["C"] == 1.0
    run, seconds = trace.run_after(RETURN_AT)
    # about 42 s of all the traffic (some 400 connections) before A or B get one again:
    # twice C's fair rate (50 % of RATE) all along
    assert seconds == pytest.approx(FLOOD_SECONDS, rel=0.25)
    assert run == pytest.approx(seconds * RATE, abs=1)
    assert run >= 300


def test_the_flood_ends_when_c_has_caught_up(trace: Trace) -> None:
    assert trace.at_catch_up is not None
    a, b, c = trace.at_catch_up
    # wlc stops preferring C once C's connections per weight reach A's or B's
    assert c / 2 >= min(a, b) - 2
    assert c / (a + b + c) == pytest.approx(0.5, abs=0.05)


def test_afterwards_shares_follow_the_weights_again(trace: Trace) -> None:
    shares = trace.shares(RETURN_AT + 120, END_AT)
    assert shares["C"] == pytest.approx(0.5, abs=0.05)
    assert shares["A"] == pytest.approx(0.25, abs=0.05)


@pytest.mark.parametrize("seed", [2, 3, 4])
def test_the_flood_does_not_depend_on_the_random_lifetimes(seed: int) -> None:
    run, seconds = simulate(seed).run_after(RETURN_AT)
    assert seconds == pytest.approx(FLOOD_SECONDS, rel=0.25)
    assert run >= 300


@pytest.fixture(scope="module")
def slow_trace() -> Trace:
    return simulate(slow_start=SLOW_START)


def test_slow_start_programs_a_scaled_ramp() -> None:
    assert programmed(RETURN_AT - 1, SLOW_START) == {"A": 1, "B": 1, "C": 2}
    assert programmed(RETURN_AT + 12, SLOW_START) == {"A": 100, "B": 100, "C": 20}
    assert programmed(RETURN_AT + 60, SLOW_START) == {"A": 100, "B": 100, "C": 100}
    assert programmed(RETURN_AT + SLOW_START, SLOW_START) == {"A": 1, "B": 1, "C": 2}


def test_slow_start_prevents_the_flood(trace: Trace, slow_trace: Trace) -> None:
    flood_run, _ = trace.run_after(RETURN_AT)
    run, _ = slow_trace.run_after(RETURN_AT)
    assert flood_run > 300 and run < 20  # no long run of consecutive connections to C
    flood = trace.shares(RETURN_AT, RETURN_AT + 20)["C"]
    peak = max(
        slow_trace.shares(RETURN_AT + t, RETURN_AT + t + 20)["C"]
        for t in range(0, int(SLOW_START), 10)
    )
    assert flood == 1.0 and peak < 0.7  # about its fair 50 % all through the ramp
    # and C still gets its due: its share grows through the ramp to its weight's 50 %
    late = slow_trace.shares(RETURN_AT + 2 * SLOW_START, END_AT)
    assert late["C"] == pytest.approx(0.5, abs=0.08)
