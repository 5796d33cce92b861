"""rr and wrr (lvsmon/schedulers/rr.py) against ip_vs_rr.c / ip_vs_wrr.c.

Servers are added one at a time with `update()` after each, as IPVS calls its
add_dest hook, so the list is newest first. Expected sequences were derived
from the kernel source and confirmed on a C transcription of it.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from ipaddress import IPv4Address

from hypothesis import given, settings
from hypothesis import strategies as st

from lvsmon.schedulers import Dest, Flow, Scheduler, create

FLOW = Flow(IPv4Address("192.0.2.9"), 1000, IPv4Address("198.51.100.7"), 80)


def server(n: int, weight: int = 1) -> Dest:
    return Dest(IPv4Address(f"10.0.0.{n}"), 80, weight)


def fresh(name: str, flags: frozenset[str] = frozenset()) -> tuple[Scheduler, list[Dest]]:
    return create(name, flags), []


def add(sched: Scheduler, dests: list[Dest], *new: Dest) -> None:
    for dest in new:
        dests.insert(0, dest)  # IPVS list_add(): at the head
        sched.update(dests)


def delete(sched: Scheduler, dests: list[Dest], dest: Dest) -> None:
    dests.remove(dest)
    sched.update(dests)


def picks(sched: Scheduler, dests: Sequence[Dest], n: int) -> list[int | None]:
    """The last octet of each chosen server, None for a refusal."""
    out: list[int | None] = []
    for _ in range(n):
        dest = sched.schedule(dests, FLOW, 0.0)
        out.append(None if dest is None else int(str(dest.address).rsplit(".", 1)[1]))
    return out


# -- rr --------------------------------------------------------------------------------


def test_rr_walks_newest_first() -> None:
    sched, dests = fresh("rr")
    add(sched, dests, server(1), server(2), server(3))
    assert picks(sched, dests, 7) == [3, 2, 1, 3, 2, 1, 3]


def test_rr_skips_weight_zero_and_overloaded() -> None:
    sched, dests = fresh("rr")
    a, b, c, d = server(1), server(2, weight=0), server(3), server(4)
    add(sched, dests, a, b, c, d)
    c.overloaded = True
    assert picks(sched, dests, 4) == [4, 1, 4, 1]
    a.weight = 0  # quiesced (rr has no upd_dest hook: no update needed)
    assert picks(sched, dests, 2) == [4, 4]
    d.overloaded = True
    assert picks(sched, dests, 2) == [None, None]
    c.overloaded = False
    assert picks(sched, dests, 2) == [3, 3]


def test_rr_position_is_a_server_not_an_index() -> None:
    sched, dests = fresh("rr")
    add(sched, dests, server(1), server(2), server(3))
    assert picks(sched, dests, 2) == [3, 2]
    add(sched, dests, server(4))  # at the head: the walk goes on after 2
    assert picks(sched, dests, 3) == [1, 4, 3]
    delete(sched, dests, dests[2])  # server 2, not the current one
    assert picks(sched, dests, 3) == [1, 4, 3]
    delete(sched, dests, dests[0])  # server 4
    assert picks(sched, dests, 3) == [1, 3, 1]


def test_rr_deleting_the_current_server_steps_back_to_its_predecessor() -> None:
    sched, dests = fresh("rr")
    a, b, c = server(1), server(2), server(3)
    add(sched, dests, a, b, c)
    assert picks(sched, dests, 2) == [3, 2]
    delete(sched, dests, b)  # ip_vs_rr_del_dest: position -> 3, so 1 is next
    assert picks(sched, dests, 3) == [1, 3, 1]

    sched, dests = fresh("rr")
    add(sched, dests, a, b, c)
    assert picks(sched, dests, 1) == [3]
    delete(sched, dests, c)  # the first one: back to the list head
    assert picks(sched, dests, 3) == [2, 1, 2]


@settings(max_examples=50, deadline=None)
@given(
    usable=st.lists(st.booleans(), min_size=1, max_size=8).filter(any),
    rounds=st.integers(1, 4),
    warmup=st.integers(0, 7),
)
def test_rr_exact_share_over_whole_cycles(usable: list[bool], rounds: int, warmup: int) -> None:
    sched, dests = fresh("rr")
    add(sched, dests, *(server(i + 1, weight=int(u)) for i, u in enumerate(usable)))
    picks(sched, dests, warmup)
    n = sum(usable)
    counts = Counter(picks(sched, dests, rounds * n))
    assert counts == {i + 1: rounds for i, u in enumerate(usable) if u}


# -- wrr -------------------------------------------------------------------------------


def test_wrr_4_3_2_added_in_order() -> None:
    # After A(4), B(3), C(2) are added one by one, cw is 1 (ip_vs_wrr_dest_changed
    # keeps it): one pass at weight >= 1, then the steady cycle A B A C B A C B A.
    sched, dests = fresh("wrr")
    add(sched, dests, server(1, 4), server(2, 3), server(3, 2))
    assert picks(sched, dests, 12) == [3, 2, 1, 1, 2, 1, 3, 2, 1, 3, 2, 1]


def test_wrr_sequence_depends_on_the_order_servers_were_added() -> None:
    sched, dests = fresh("wrr")
    add(sched, dests, server(3, 2), server(2, 3), server(1, 4))  # list 1, 2, 3
    assert picks(sched, dests, 12) == [1, 2, 3, 1, 1, 2, 1, 2, 3, 1, 2, 3]


def test_wrr_bound_to_a_populated_service_starts_at_max_weight() -> None:
    # ip_vs_wrr_init_svc (e.g. ipvsadm -E switching to wrr): cw = mw
    dests = [server(3, 2), server(2, 3), server(1, 4)]
    sched = create("wrr")
    sched.update(dests)
    assert picks(sched, dests, 9) == [1, 2, 1, 3, 2, 1, 3, 2, 1]


def test_wrr_gcd_steps() -> None:
    sched, dests = fresh("wrr")
    add(sched, dests, server(1, 4), server(2, 2))
    assert picks(sched, dests, 9) == [2, 1, 1, 2, 1, 1, 2, 1, 1]
    sched, dests = fresh("wrr")
    add(sched, dests, server(1, 6), server(2, 4), server(3, 2))
    assert picks(sched, dests, 12) == [3, 2, 1, 1, 2, 1, 3, 2, 1, 1, 2, 1]


def test_wrr_weight_change_restarts_at_the_head_keeping_cw() -> None:
    sched, dests = fresh("wrr")
    a, b, c = server(1, 4), server(2, 3), server(3, 2)
    add(sched, dests, a, b, c)
    assert picks(sched, dests, 5) == [3, 2, 1, 1, 2]  # now cw 3, at server 2
    b.set_weight(1)
    sched.update(dests)
    assert picks(sched, dests, 10) == [1, 3, 1, 3, 2, 1, 1, 1, 3, 1]


def test_wrr_skips_overloaded() -> None:
    sched, dests = fresh("wrr")
    add(sched, dests, server(1, 4), server(2, 3), server(3, 2))
    dests[1].overloaded = True
    assert picks(sched, dests, 12) == [3, 1, 1, 1, 3, 1, 3, 1, 1, 1, 3, 1]
    for dest in dests:
        dest.overloaded = True
    assert picks(sched, dests, 3) == [None, None, None]
    dests[0].overloaded = False
    assert picks(sched, dests, 2) == [3, 3]


def test_wrr_all_weight_zero_refuses() -> None:
    sched, dests = fresh("wrr")
    add(sched, dests, server(1, 0), server(2, 0))
    assert picks(sched, dests, 2) == [None, None]
    dests[0].set_weight(2)
    sched.update(dests)
    assert picks(sched, dests, 2) == [2, 2]


@settings(max_examples=60, deadline=None)
@given(
    weights=st.lists(st.integers(1, 8), min_size=1, max_size=6),
    offset=st.integers(0, 40),
)
def test_wrr_every_cycle_window_is_exactly_proportional(weights: list[int], offset: int) -> None:
    # Whatever the add order (and so the starting cw), the sequence is periodic
    # from the first decision: any window of one cycle holds weight/gcd of each.
    sched, dests = fresh("wrr")
    add(sched, dests, *(server(i + 1, w) for i, w in enumerate(weights)))
    g = math.gcd(*weights)
    cycle = sum(weights) // g
    picks(sched, dests, offset)
    counts = Counter(picks(sched, dests, cycle))
    assert counts == {i + 1: w // g for i, w in enumerate(weights)}


@settings(max_examples=60, deadline=None)
@given(
    states=st.lists(st.tuples(st.integers(0, 5), st.booleans()), min_size=1, max_size=6),
    n=st.integers(1, 30),
)
def test_wrr_never_weight_zero_or_overloaded_and_refuses_only_when_none_usable(
    states: list[tuple[int, bool]], n: int
) -> None:
    sched, dests = fresh("wrr")
    add(sched, dests, *(server(i + 1, w) for i, (w, _) in enumerate(states)))
    for dest, (_, overloaded) in zip(reversed(dests), states, strict=True):
        dest.overloaded = overloaded
    usable = {i + 1 for i, (w, o) in enumerate(states) if w > 0 and not o}
    for pick in picks(sched, dests, n):
        assert (pick is None) == (not usable)
        assert pick is None or pick in usable
