"""lblc and lblcr (lvsmon/schedulers/locality.py) against ip_vs_lblc.c / ip_vs_lblcr.c.

Times are seconds; the garbage-collection timer's first tick is 60 s after the
first decision, then every 60 s; every 30th tick is a full expiry pass."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address

from hypothesis import given, settings
from hypothesis import strategies as st

from lvsmon.model import IPAddress
from lvsmon.schedulers import Dest, Flow, Scheduler
from lvsmon.schedulers.locality import (
    MAX_SIZE,
    LocalityBasedLeastConnection,
    LocalityBasedLeastConnectionReplicated,
)

X = IPv4Address("198.51.100.1")
Y = IPv4Address("198.51.100.2")


def server(n: int, weight: int = 1) -> Dest:
    return Dest(IPv4Address(f"10.0.0.{n}"), 80, weight)


def to(dst: IPAddress, src: str = "192.0.2.1") -> Flow:
    return Flow(IPv4Address(src), 1000, dst, 80)


def setup(sched: Scheduler, *servers: Dest) -> list[Dest]:
    dests: list[Dest] = []
    for dest in servers:
        dests.insert(0, dest)
        sched.update(dests)
    return dests


# -- lblc ------------------------------------------------------------------------------


def test_lblc_remembers_the_server_per_destination_address() -> None:
    sched = LocalityBasedLeastConnection()
    a, b = server(1), server(2)
    dests = setup(sched, a, b)  # [b, a]
    assert sched.schedule(dests, to(X), 0.0) is b  # wlc tie: the newest
    b.active = 1  # wlc would now pick a, but X stays on b
    assert sched.schedule(dests, to(X, "192.0.2.99"), 1.0) is b
    assert sched.schedule(dests, to(Y), 2.0) is a
    assert len(sched) == 2


def test_lblc_leaves_a_server_only_when_it_is_overloaded_in_its_own_sense() -> None:
    sched = LocalityBasedLeastConnection()
    a, b = server(1, 2), server(2, 1)
    dests = setup(sched, a, b)
    assert sched.schedule(dests, to(X), 0.0) is b
    b.active, a.active = 2, 1  # b above its weight, but nobody under half theirs
    assert sched.schedule(dests, to(X), 1.0) is b
    a.active = 0  # a is under half its weight: X moves to a (wlc) and stays there
    assert sched.schedule(dests, to(X), 2.0) is a
    b.active = 0
    assert sched.schedule(dests, to(X), 3.0) is a


def test_lblc_remembered_server_ignores_the_overload_flag() -> None:
    sched = LocalityBasedLeastConnection()
    a, b = server(1), server(2)
    dests = setup(sched, a, b)
    assert sched.schedule(dests, to(X), 0.0) is b
    b.overloaded = True  # the kernel's cached path does not test it
    assert sched.schedule(dests, to(X), 1.0) is b
    assert sched.schedule(dests, to(Y), 1.0) is a  # wlc does


def test_lblc_weight_zero_or_deleted_server_is_replaced() -> None:
    sched = LocalityBasedLeastConnection()
    a, b, c = server(1), server(2), server(3)
    dests = setup(sched, a, b, c)
    assert sched.schedule(dests, to(X), 0.0) is c
    c.set_weight(0)
    sched.update(dests)
    assert sched.schedule(dests, to(X), 1.0) is b
    dests.remove(b)
    sched.update(dests)
    assert sched.schedule(dests, to(X), 2.0) is a
    assert len(sched) == 1


def test_lblc_memory_survives_delete_and_readd_of_the_same_server() -> None:
    # The kernel revives the same ip_vs_dest from its trash on re-add.
    sched = LocalityBasedLeastConnection()
    a, b = server(1), server(2)
    dests = setup(sched, a, b)
    assert sched.schedule(dests, to(X), 0.0) is b
    dests.remove(b)
    sched.update(dests)
    b2 = server(2, 10)
    b2.active = 5  # wlc would choose a (0/1 < 1280/10)
    dests.insert(0, b2)
    sched.update(dests)
    assert sched.schedule(dests, to(X), 1.0) is b2


def test_lblc_entries_expire_after_a_day_at_a_full_check() -> None:
    sched = LocalityBasedLeastConnection()
    dests = setup(sched, server(1))
    sched.schedule(dests, to(X), 0.0)  # first decision: the timer starts
    sched.schedule(dests, to(Y), 86399.0)
    assert len(sched) == 2  # last full check at 84600: X is 84600 s old
    sched.schedule(dests, to(Y), 86400.0)  # the tick at 86400 is a full check
    assert len(sched) == 1


def test_lblc_long_idle_periods_replay_the_timer() -> None:
    sched = LocalityBasedLeastConnection()
    dests = setup(sched, server(1))
    sched.schedule(dests, to(X), 0.0)
    sched.schedule(dests, to(Y), 50000.0)
    z = IPv4Address("198.51.100.3")
    sched.schedule(dests, to(z), 50000.0 + 86400 + 1800)  # a full check since Y expired
    assert len(sched) == 1  # only z
    sched.schedule(dests, to(z), 7 * 86400.0)
    assert len(sched) == 1


def test_lblc_expiration_is_settable_like_the_sysctl() -> None:
    sched = LocalityBasedLeastConnection()
    sched.expiration = 1000.0
    dests = setup(sched, server(1))
    sched.schedule(dests, to(X), 0.0)
    sched.schedule(dests, to(Y), 1799.0)
    assert len(sched) == 2
    sched.schedule(dests, to(Y), 1800.0)  # first full check, 30th tick
    assert len(sched) == 1


def test_lblc_partial_collection_when_the_table_is_over_16384() -> None:
    sched = LocalityBasedLeastConnection()
    dests = setup(sched, server(1), server(2))
    extra = 100
    for i in range(MAX_SIZE + extra):
        sched.schedule(dests, to(IPv4Address(0x0A800000 + i)), 0.0)
    keep = IPv4Address(0x0A800000)
    sched.schedule(dests, to(keep), 300.0)  # ticks 60..300: nothing is 6 min old
    assert len(sched) == MAX_SIZE + extra
    sched.schedule(dests, to(keep), 360.0)  # bucket by bucket until 133 are gone
    goal = extra * 4 // 3
    assert MAX_SIZE + extra - goal - 64 <= len(sched) <= MAX_SIZE + extra - goal
    sched.schedule(dests, to(keep), 361.0)
    assert sched.schedule(dests, to(keep), 362.0) is not None


def test_lblc_ipv6_destinations() -> None:
    sched = LocalityBasedLeastConnection()
    a = Dest(IPv6Address("2001:db8::a"), 80, 1)
    b = Dest(IPv6Address("2001:db8::b"), 80, 1)
    dests = setup(sched, a, b)
    flow = Flow(IPv6Address("2001:db8:1::1"), 1000, IPv6Address("2001:db8:2::1"), 80)
    assert sched.schedule(dests, flow, 0.0) is b
    b.active = 1
    assert sched.schedule(dests, flow, 1.0) is b


# -- lblcr -----------------------------------------------------------------------------


def test_lblcr_set_grows_when_its_least_loaded_member_is_overloaded() -> None:
    sched = LocalityBasedLeastConnectionReplicated()
    a, b = server(1), server(2)
    dests = setup(sched, a, b)
    assert sched.schedule(dests, to(X), 0.0) is b
    assert sched.members(X) == [b]
    b.active = 2  # > weight 1, and a is idle: wlc picks a, added at the set head
    assert sched.schedule(dests, to(X), 1.0) is a
    assert sched.members(X) == [a, b]
    a.active = 1  # the set's least loaded (per weight) member serves X
    assert sched.schedule(dests, to(X), 2.0) is a
    b.active = 0
    assert sched.schedule(dests, to(X), 3.0) is b
    assert sched.members(X) == [a, b]


def test_lblcr_set_shrinks_once_unchanged_for_the_expiration() -> None:
    sched = LocalityBasedLeastConnectionReplicated()
    sched.expiration = 100.0
    a, b = server(1), server(2)
    dests = setup(sched, a, b)
    sched.schedule(dests, to(X), 0.0)
    b.active = 2
    sched.schedule(dests, to(X), 1.0)  # set [a, b], last modified at 1
    assert sched.schedule(dests, to(X), 101.0) is a  # not strictly after 1 + 100
    assert sched.members(X) == [a, b]
    assert sched.schedule(dests, to(X), 101.5) is a  # the most loaded, b, leaves
    assert sched.members(X) == [a]
    assert sched.schedule(dests, to(X), 500.0) is a  # a set of one is kept
    assert sched.members(X) == [a]


def test_lblcr_shrink_may_drop_the_member_it_just_picked() -> None:
    # ip_vs_dest_set_max() also sees overload-flagged members; the picked server
    # is still used for this connection even if it is the one erased.
    sched = LocalityBasedLeastConnectionReplicated()
    sched.expiration = 10.0
    a, b = server(1, 4), server(2)
    dests = setup(sched, a, b)
    sched.schedule(dests, to(X), 0.0)  # b
    b.active = 2
    sched.schedule(dests, to(X), 1.0)  # + a
    b.active, b.overloaded, a.active = 0, True, 3
    assert sched.schedule(dests, to(X), 20.0) is a
    assert sched.members(X) == [b]


def test_lblcr_skips_deleted_members_and_revives_them_on_readd() -> None:
    sched = LocalityBasedLeastConnectionReplicated()
    a, b = server(1), server(2)
    dests = setup(sched, a, b)
    assert sched.schedule(dests, to(X), 0.0) is b
    dests.remove(b)
    sched.update(dests)
    assert sched.schedule(dests, to(X), 1.0) is a
    assert [d.key for d in sched.members(X)] == [a.key, b.key]
    b2 = server(2)
    dests.insert(0, b2)
    sched.update(dests)
    a.active = 1
    assert sched.schedule(dests, to(X), 2.0) is b2
    assert sched.members(X) == [a, b2]


def test_lblcr_weight_zero_member_is_not_used() -> None:
    sched = LocalityBasedLeastConnectionReplicated()
    a, b = server(1), server(2)
    dests = setup(sched, a, b)
    assert sched.schedule(dests, to(X), 0.0) is b
    b.set_weight(0)
    sched.update(dests)
    assert sched.schedule(dests, to(X), 1.0) is a
    assert sched.members(X) == [a, b]


@settings(max_examples=40, deadline=None)
@given(
    steps=st.lists(
        st.tuples(
            st.integers(0, 4),  # which server to load
            st.integers(0, 6),  # its active connections
            st.integers(0, 2),  # destination address
            st.integers(0, 300),  # seconds since the previous decision
        ),
        max_size=60,
    )
)
def test_lblcr_sets_are_bounded_by_the_servers(steps: list[tuple[int, int, int, int]]) -> None:
    sched = LocalityBasedLeastConnectionReplicated()
    sched.expiration = 400.0
    servers = [server(i + 1, w) for i, w in enumerate((1, 2, 3, 1, 2))]
    dests = setup(sched, *servers)
    now = 0.0
    for which, active, dst, wait in steps:
        servers[which].active = active
        now += wait
        chosen = sched.schedule(dests, to(IPv4Address(0xC6336401 + dst)), now)
        assert chosen is not None and chosen.weight > 0
        members = sched.members(IPv4Address(0xC6336401 + dst))
        assert chosen in members or len(members) >= 1
        assert len({d.key for d in members}) == len(members) <= len(servers)
