"""lc, wlc, sed, nq (lc.py), fo, ovf (failover.py) and twos (twos.py) against
ip_vs_{lc,wlc,sed,nq,fo,ovf,twos}.c. Lists are newest first, as in IPVS."""

from __future__ import annotations

import heapq
import random
from collections import Counter
from collections.abc import Sequence
from ipaddress import IPv4Address

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lvsmon.schedulers import Dest, Flow, Scheduler, create

FLOW = Flow(IPv4Address("192.0.2.9"), 1000, IPv4Address("198.51.100.7"), 80)


def server(n: int, weight: int = 1, active: int = 0, inactive: int = 0) -> Dest:
    dest = Dest(IPv4Address(f"10.0.0.{n}"), 80, weight)
    dest.active, dest.inactive = active, inactive
    return dest


def pick(sched: Scheduler, dests: Sequence[Dest]) -> Dest | None:
    return sched.schedule(dests, FLOW, 0.0)


def simulate(sched: Scheduler, dests: Sequence[Dest], arrivals: int, seed: int = 7) -> Counter[int]:
    """New connections at a steady rate, each ESTABLISHED for a random time, then
    closed by the client and counted inactive for a while (IPVS TCP states)."""
    rng = random.Random(seed)
    events: list[tuple[float, int, int]] = []  # (time, seq, dest index); seq: FIFO ties
    counts: Counter[int] = Counter()
    for t in range(arrivals):
        while events and events[0][0] <= t:
            when, seq, i = heapq.heappop(events)
            if seq >= 0:  # close: active -> inactive (FIN_WAIT/TIME_WAIT)
                dests[i].active -= 1
                dests[i].inactive += 1
                heapq.heappush(events, (when + 20, -1, i))
            else:
                dests[i].inactive -= 1
        dest = pick(sched, dests)
        assert dest is not None
        i = next(k for k, d in enumerate(dests) if d is dest)
        counts[i] += 1
        dest.active += 1
        heapq.heappush(events, (t + rng.expovariate(1 / 60), t, i))
    return counts


# -- lc --------------------------------------------------------------------------------


def test_lc_inactive_connection_weighs_1_256th_of_an_active_one() -> None:
    sched = create("lc")
    b, a = server(2, inactive=255), server(1, active=1)
    assert pick(sched, [b, a]) is b  # 255 < 256
    b.inactive = 256  # tie: the first in list order (the newest)
    assert pick(sched, [b, a]) is b
    b.inactive = 257
    assert pick(sched, [b, a]) is a


def test_lc_ignores_weight_except_zero() -> None:
    sched = create("lc")
    heavy, light = server(2, weight=100, active=1), server(1, weight=1)
    assert pick(sched, [heavy, light]) is light
    light.weight = 0
    assert pick(sched, [heavy, light]) is heavy
    heavy.overloaded = True
    assert pick(sched, [heavy, light]) is None


def test_lc_spreads_connections_evenly_whatever_the_weights() -> None:
    dests = [server(3, 3), server(2, 2), server(1, 1)]
    counts = simulate(create("lc"), dests, 20000)
    for i in range(3):
        assert counts[i] / 20000 == pytest.approx(1 / 3, abs=0.02)


# -- wlc -------------------------------------------------------------------------------


def test_wlc_minimises_overhead_per_weight() -> None:
    sched = create("wlc")
    c, b, a = server(3, 3, active=2), server(2, 2, active=1), server(1, 1, active=1)
    # 512/3 vs 256/2 vs 256/1: b
    assert pick(sched, [c, b, a]) is b
    b.active = 2  # 512/3 < 512/2: c
    assert pick(sched, [c, b, a]) is c
    a.inactive, a.active = 10, 0  # 10/1
    assert pick(sched, [c, b, a]) is a


def test_wlc_ties_go_to_the_newest_and_weight_zero_never_wins() -> None:
    sched = create("wlc")
    b, a = server(2, 2), server(1, 2)
    assert pick(sched, [b, a]) is b
    zero = server(3, 0)
    assert pick(sched, [zero, b, a]) is b
    b.overloaded = True
    assert pick(sched, [zero, b, a]) is a


def test_wlc_persistent_connections_fill_in_weight_proportion() -> None:
    sched = create("wlc")
    dests = [server(3, 3), server(2, 2), server(1, 1)]
    order = []
    for _ in range(60):
        dest = pick(sched, dests)
        assert dest is not None
        dest.active += 1
        order.append(dest.weight)
    assert order[:6] == [3, 2, 1, 3, 2, 3]
    assert [d.active for d in dests] == [30, 20, 10]


def test_wlc_shares_follow_weights_with_connection_churn() -> None:
    dests = [server(3, 3), server(2, 2), server(1, 1)]
    counts = simulate(create("wlc"), dests, 20000)
    for i, weight in enumerate((3, 2, 1)):
        assert counts[i] / 20000 == pytest.approx(weight / 6, abs=0.02)


# -- sed / nq --------------------------------------------------------------------------


def test_sed_ignores_inactive_connections() -> None:
    b, a = server(2, inactive=1000), server(1)
    assert pick(create("sed"), [b, a]) is b  # (0 + 1) / 1 both: the first
    assert pick(create("lc"), [b, a]) is a


def test_sed_counts_the_incoming_connection() -> None:
    sched = create("sed")
    light, heavy = server(1, 1), server(2, 4, active=3)
    # (0+1)/1 = 1 vs (3+1)/4 = 1: tie, the first
    assert pick(sched, [light, heavy]) is light
    heavy.active = 2  # 3/4 < 1
    assert pick(sched, [light, heavy]) is heavy
    # both idle: sed still prefers the bigger weight, nq the first idle one
    heavy.active = 0
    assert pick(sched, [light, heavy]) is heavy
    assert pick(create("nq"), [light, heavy]) is light


def test_nq_first_idle_server_in_list_order_regardless_of_weight() -> None:
    sched = create("nq")
    a, b, c = server(1, 100, active=5), server(2, 1), server(3, 50)
    assert pick(sched, [a, b, c]) is b
    b.active = 1
    assert pick(sched, [a, b, c]) is c
    b.overloaded = True  # an overloaded idle server is not taken
    b.active = 0
    assert pick(sched, [a, b, c]) is c
    c.active = 1
    # none idle: sed rule, (1+1)/50 < (5+1)/100
    assert pick(sched, [a, b, c]) is c
    c.active = 4  # (5+1)/100 < (4+1)/50
    assert pick(sched, [a, b, c]) is a


@pytest.mark.parametrize("name", ["sed", "nq"])
def test_sed_nq_weight_zero_and_overloaded(name: str) -> None:
    sched = create(name)
    zero, over, ok = server(1, 0), server(2, 5), server(3, 1, active=9)
    over.overloaded = True
    assert pick(sched, [zero, over, ok]) is ok
    ok.weight = 0
    assert pick(sched, [zero, over, ok]) is None


# -- fo / ovf --------------------------------------------------------------------------


def test_fo_highest_weight_first_in_list_on_ties() -> None:
    sched = create("fo")
    a, b, c = server(1, 5), server(2, 9), server(3, 9)
    assert pick(sched, [a, b, c]) is b
    b.overloaded = True
    assert pick(sched, [a, b, c]) is c
    c.weight = 0
    assert pick(sched, [a, b, c]) is a
    a.weight = 0
    assert pick(sched, [a, b, c]) is None


def test_ovf_each_server_takes_weight_plus_one_then_overflows() -> None:
    sched = create("ovf")
    big, small = server(1, 3, inactive=100), server(2, 2)
    dests = [small, big]
    order = []
    for _ in range(8):
        dest = pick(sched, dests)
        order.append(None if dest is None else dest.weight)
        if dest is not None:
            dest.active += 1
    assert order == [3, 3, 3, 3, 2, 2, 2, None]


def test_ovf_ties_overload_and_weight_zero() -> None:
    sched = create("ovf")
    a, b, zero = server(1, 2), server(2, 2), server(3, 0)
    assert pick(sched, [zero, a, b]) is a
    a.overloaded = True
    assert pick(sched, [zero, a, b]) is b


# -- twos ------------------------------------------------------------------------------


class Scripted(random.Random):
    """A Random whose getrandbits() replays given values."""

    def __init__(self, values: list[int]) -> None:
        super().__init__(0)
        self.values = list(values)

    def getrandbits(self, k: int) -> int:
        return self.values.pop(0)


def test_twos_draws_walk_the_list_with_inclusive_range() -> None:
    # total + 1 = 7 draws 0..6: the first server gets r in {0, 1}
    dests = [server(1, 1), server(2, 2), server(3, 3)]
    expected = {0: 1, 1: 1, 2: 2, 3: 2, 4: 3, 5: 3, 6: 3}
    for r, n in expected.items():
        sched = create("twos", rng=Scripted([r, r]))
        dest = pick(sched, dests)
        assert dest is dests[n - 1]
    sched = create("twos", rng=Scripted([7 + 4, 0]))  # taken modulo 7
    assert pick(sched, dests) is dests[2]


def test_twos_takes_the_second_only_if_strictly_less_loaded() -> None:
    dests = [server(1, 1, active=1), server(2, 2), server(3, 3, active=3)]
    # choice1 = 1 (256/1), choice2 = 3 (768/3): 3 * 256 > 1 * 768 is false
    assert pick(create("twos", rng=Scripted([0, 4])), dests) is dests[0]
    dests[2].active = 2  # 512/3 < 256
    assert pick(create("twos", rng=Scripted([0, 4])), dests) is dests[2]


def test_twos_skips_weight_zero_and_overloaded() -> None:
    dests = [server(1, 0), server(2, 2), server(3, 3)]
    dests[1].overloaded = True
    for r in range(4):  # total 3 + 1
        assert pick(create("twos", rng=Scripted([r, r])), dests) is dests[2]
    dests[2].weight = 0
    assert pick(create("twos", rng=Scripted([0, 0])), dests) is None


def test_twos_mirrors_the_kernels_int_products() -> None:
    # 1000 * (10000 << 8) overflows a C int and goes negative: the kernel then
    # keeps choice1 although choice2 is idle.
    busy, idle = server(1, 1, active=10000), server(2, 1000)
    assert pick(create("twos", rng=Scripted([0, 5])), [busy, idle]) is busy
    busy.active = 100  # no overflow: the idle one wins
    assert pick(create("twos", rng=Scripted([0, 5])), [busy, idle]) is idle


def test_twos_idle_distribution_follows_weights() -> None:
    sched = create("twos", rng=random.Random(42))
    dests = [server(1, 1), server(2, 2), server(3, 3)]
    counts = Counter(id(pick(sched, dests)) for _ in range(30000))
    # with no load the first draw stands: 2/7, 2/7, 3/7
    for dest, share in zip(dests, (2 / 7, 2 / 7, 3 / 7), strict=True):
        assert counts[id(dest)] / 30000 == pytest.approx(share, abs=0.012)


def test_twos_balances_load_by_weight_with_churn() -> None:
    dests = [server(1, 1), server(2, 2), server(3, 5)]
    counts = simulate(create("twos", rng=random.Random(3)), dests, 20000)
    for i, weight in enumerate((1, 2, 5)):
        assert counts[i] / 20000 == pytest.approx(weight / 8, abs=0.03)


# -- shared ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["lc", "wlc", "sed", "nq", "fo", "twos"])
@settings(max_examples=40, deadline=None)
@given(
    states=st.lists(
        st.tuples(st.integers(0, 4), st.booleans(), st.integers(0, 300), st.integers(0, 300)),
        min_size=1,
        max_size=6,
    )
)
def test_refuses_only_when_nothing_is_usable(
    name: str, states: list[tuple[int, bool, int, int]]
) -> None:
    dests = []
    for i, (weight, overloaded, active, inactive) in enumerate(states):
        dest = server(i + 1, weight, active, inactive)
        dest.overloaded = overloaded
        dests.append(dest)
    chosen = pick(create(name, rng=random.Random(0)), dests)
    usable = [d for d in dests if d.weight > 0 and not d.overloaded]
    assert (chosen is None) == (not usable)
    assert chosen is None or chosen in usable
