"""The VRRPv3 state machine on a test clock: RFC 5798 timings, preemption, handover,
tracking, plus property tests (single-node invariants, and a simulated LAN of
directors that must always settle on exactly one master without flapping)."""

from __future__ import annotations

import dataclasses
import heapq
import ipaddress
from typing import TypedDict, Unpack

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lvsmon.ha import machine as m
from lvsmon.ha.machine import Role
from lvsmon.model import IPAddress

A = ipaddress.IPv4Address("192.0.2.2")
B = ipaddress.IPv4Address("192.0.2.3")
T = 1.0  # advert interval


class ParamsKw(TypedDict, total=False):
    """m.Params' fields, as keyword arguments overriding the tests' defaults."""

    advert_interval: float
    primary: IPAddress
    preempt: bool
    preempt_delay: float
    garp_refresh: float
    handover_timeout: float


def params(**kw: Unpack[ParamsKw]) -> m.Params:
    base: ParamsKw = {
        "advert_interval": T,
        "primary": A,
        "garp_refresh": 0.0,
        "handover_timeout": 4.0,
    }
    base.update(kw)
    return m.Params(**base)


def started(priority: int = 100, now: float = 0.0, **kw: Unpack[ParamsKw]) -> m.State:
    state, _ = m.step(m.initial(params(**kw), priority), m.Startup(), now)
    return state


def master(priority: int = 100, **kw: Unpack[ParamsKw]) -> m.State:
    s = started(priority, **kw)
    s, _ = m.step(s, m.Timer(), s.down_at or 0)
    assert s.role is Role.MASTER
    return s


def kinds(actions: tuple[m.Action, ...]) -> list[str]:
    return [type(a).__name__ for a in actions]


def test_master_down_interval_and_skew_are_the_rfc_formulas() -> None:
    assert m.skew_time(100, 1.0) == pytest.approx(156 / 256)
    assert m.master_down_interval(100, 1.0) == pytest.approx(3 + 156 / 256)
    assert m.master_down_interval(254, 0.1) == pytest.approx(0.3 + 0.2 / 256)


def test_startup_enters_backup_and_clears_stale_addresses() -> None:
    s, actions = m.step(m.initial(params(), 100), m.Startup(), 10.0)
    assert s.role is Role.BACKUP
    assert s.down_at == pytest.approx(10 + m.master_down_interval(100, T))
    assert kinds(actions) == ["RemoveAddresses", "RunHook"]


def test_backup_becomes_master_when_the_down_timer_expires() -> None:
    s = started()
    assert s.down_at is not None
    same, actions = m.step(s, m.Timer(), s.down_at - 0.001)
    assert same.role is Role.BACKUP and actions == ()
    s, actions = m.step(s, m.Timer(), s.down_at)
    assert s.role is Role.MASTER
    assert kinds(actions) == ["SendAdvert", "AddAddresses", "Announce", "RunHook"]
    assert actions[0] == m.SendAdvert(100)


def test_address_owner_is_master_at_once() -> None:
    s, actions = m.step(m.initial(params(), 255), m.Startup(), 0.0)
    assert s.role is Role.MASTER and m.SendAdvert(255) in actions


def test_master_advertises_every_interval_without_drift() -> None:
    s = master()
    start = s.adver_at
    assert start is not None
    sent = []
    for i in range(5):
        late = start + i * T + 0.004  # every wake-up 4 ms late
        s, actions = m.step(s, m.Timer(), late)
        sent.append(actions)
        assert s.adver_at == pytest.approx(start + (i + 1) * T)
    assert all(a == (m.SendAdvert(100),) for a in sent)


def test_master_that_missed_a_whole_interval_resets_its_cadence() -> None:
    s = master()
    assert s.adver_at is not None
    s, _ = m.step(s, m.Timer(), s.adver_at + 2.5 * T)
    assert s.adver_at is not None and s.adver_at > s.adver_at - T


def test_backup_resets_its_down_timer_on_each_advert_and_learns_the_interval() -> None:
    s = started(100)
    s, actions = m.step(s, m.Received(150, 0.5, B), 2.0)
    assert actions == () and s.role is Role.BACKUP
    assert s.master_adver_interval == 0.5
    assert s.down_at == pytest.approx(2.0 + m.master_down_interval(100, 0.5))


def test_priority_zero_makes_the_backup_take_over_after_skew_time() -> None:
    s = started(100)
    s, _ = m.step(s, m.Received(150, T, B), 1.0)
    s, _ = m.step(s, m.Received(0, T, B), 2.0)
    assert s.down_at == pytest.approx(2.0 + m.skew_time(100, T))
    assert s.down_at is not None
    s, actions = m.step(s, m.Timer(), s.down_at)
    assert s.role is Role.MASTER and m.AddAddresses() in actions


def test_preempt_ignores_a_lower_priority_master_and_takes_over() -> None:
    s = started(200)
    down = s.down_at
    s, _ = m.step(s, m.Received(100, T, B), 1.0)
    assert s.down_at == down  # not reset: the lower master is ignored
    s, _ = m.step(s, m.Timer(), down or 0)
    assert s.role is Role.MASTER


def test_nopreempt_accepts_a_lower_priority_master() -> None:
    s = started(200, preempt=False)
    for t in range(1, 20):
        s, _ = m.step(s, m.Received(100, T, B), float(t))
        s, _ = m.step(s, m.Timer(), float(t) + 0.5)
        assert s.role is Role.BACKUP


def test_preempt_delay_defers_preemption() -> None:
    s = started(200, preempt_delay=10.0)
    for t in range(1, 10):  # within the delay: the lower master is accepted
        s, _ = m.step(s, m.Received(100, T, B), float(t))
        s, _ = m.step(s, m.Timer(), float(t) + 0.5)
        assert s.role is Role.BACKUP
    s, _ = m.step(s, m.Received(100, T, B), 10.5)  # after it: ignored
    assert s.down_at == pytest.approx(9 + m.master_down_interval(200, T))
    s, _ = m.step(s, m.Timer(), s.down_at or 0)
    assert s.role is Role.MASTER


def test_master_yields_to_a_higher_priority() -> None:
    s = master(100)
    s, actions = m.step(s, m.Received(150, T, B), 10.0)
    assert s.role is Role.BACKUP
    assert kinds(actions) == ["RemoveAddresses", "RunHook"]
    assert s.down_at == pytest.approx(10 + m.master_down_interval(100, T))


def test_equal_priority_tie_breaks_on_the_higher_primary_address() -> None:
    low = master(100, primary=A)
    s, _ = m.step(low, m.Received(100, T, B), 10.0)
    assert s.role is Role.BACKUP  # B > A
    high = master(100, primary=B)
    s, actions = m.step(high, m.Received(100, T, A), 10.0)
    assert s.role is Role.MASTER and actions == (m.SendAdvert(100),)


def test_master_answers_a_lower_priority_master_at_once() -> None:
    s = master(150)
    s, actions = m.step(s, m.Received(100, T, B), 10.0)
    assert s.role is Role.MASTER and actions == (m.SendAdvert(150),)
    assert s.adver_at == pytest.approx(10 + T)


def test_graceful_handover_keeps_the_addresses_until_the_backup_is_master() -> None:
    s = master(150)
    s, actions = m.step(s, m.Shutdown(), 10.0)
    assert actions == (m.SendAdvert(0),) and s.role is Role.MASTER and s.holds_addresses
    s, actions = m.step(s, m.Timer(), 11.0)
    assert actions == (m.SendAdvert(0),)  # repeated: a lost priority-0 advert is not fatal
    s, actions = m.step(s, m.Received(0, T, B), 11.1)  # another director leaving too
    assert actions == () and s.holds_addresses
    s, actions = m.step(s, m.Received(100, T, B), 11.5)
    assert actions == () and s.holds_addresses  # one more interval for packets in flight
    assert s.release_by == pytest.approx(12.5)
    s, actions = m.step(s, m.Timer(), 12.5)
    assert kinds(actions) == ["RemoveAddresses", "RunHook", "Stopped"]
    assert s.stopped and s.role is Role.INITIALIZE
    assert m.step(s, m.Startup(), 13.0) == (s, ())


def test_graceful_handover_gives_up_after_the_timeout() -> None:
    s = master(150, handover_timeout=3.0)
    s, _ = m.step(s, m.Shutdown(), 10.0)
    for t in (11.0, 12.0):
        s, actions = m.step(s, m.Timer(), t)
        assert actions == (m.SendAdvert(0),)
    s, actions = m.step(s, m.Timer(), 13.0)
    assert m.RemoveAddresses() in actions and m.Stopped() in actions


def test_shutdown_of_a_backup_is_immediate() -> None:
    s, actions = m.step(started(), m.Shutdown(), 1.0)
    assert s.stopped and kinds(actions) == ["RunHook", "Stopped"]
    s, actions = m.step(m.initial(params(), 100), m.Shutdown(), 1.0)
    assert s.stopped and actions == (m.Stopped(),)


def test_tracking_priority_drop_is_advertised_at_once() -> None:
    s = master(150)
    s, actions = m.step(s, m.Track(90), 5.0)
    assert actions == (m.SendAdvert(90),) and s.priority == 90


def test_fault_releases_at_once_and_recovery_restarts_in_backup() -> None:
    s = master(150, preempt_delay=5.0)
    s, actions = m.step(s, m.Track(150, fault=True), 5.0)
    assert s.role is Role.FAULT
    assert kinds(actions) == ["SendAdvert", "RemoveAddresses", "RunHook"]
    assert actions[0] == m.SendAdvert(0) and m.next_deadline(s) is None
    s, actions = m.step(s, m.Received(200, T, B), 6.0)
    assert s.role is Role.FAULT and actions == ()
    s, actions = m.step(s, m.Track(150), 7.0)
    assert s.role is Role.BACKUP and s.preempt_after == 12.0


def test_fault_before_startup_starts_in_fault() -> None:
    s, _ = m.step(m.initial(params(), 100), m.Track(100, fault=True), 0.0)
    s, actions = m.step(s, m.Startup(), 0.0)
    assert s.role is Role.FAULT and actions[0] == m.RemoveAddresses()


def test_fault_during_handover_finishes_the_stop() -> None:
    s = master(150)
    s, _ = m.step(s, m.Shutdown(), 1.0)
    s, actions = m.step(s, m.Track(150, fault=True), 1.5)
    assert s.stopped and m.RemoveAddresses() in actions


def test_garp_refresh_while_master() -> None:
    s = master(150, garp_refresh=10.0)
    assert s.refresh_at is not None
    refresh = s.refresh_at
    s, actions = m.step(s, m.Timer(), refresh)
    assert m.Announce() in actions and s.refresh_at == refresh + 10.0


def test_reconfigure_applies_new_settings() -> None:
    s = master(150)
    s, actions = m.step(s, m.Reconfigure(params(advert_interval=0.1, garp_refresh=5.0), 120), 3.0)
    assert s.params.advert_interval == 0.1 and s.priority == 120
    assert s.refresh_at == 8.0
    assert m.SendAdvert(120) in actions and s.adver_at == pytest.approx(3.1)


# --- properties ---

events = st.one_of(
    st.just(m.Startup()),
    st.just(m.Shutdown()),
    st.just(m.Timer()),
    st.builds(m.Received, st.integers(0, 255), st.sampled_from([0.1, 1.0]), st.sampled_from([B])),
    st.builds(m.Track, st.integers(1, 254), st.booleans()),
)


@settings(max_examples=400, deadline=None)
@given(
    priority=st.integers(1, 255),
    preempt=st.booleans(),
    steps=st.lists(st.tuples(events, st.floats(0, 3)), max_size=40),
)
def test_invariants_hold_for_any_event_sequence(
    priority: int, preempt: bool, steps: list[tuple[m.Event, float]]
) -> None:
    s = m.initial(params(preempt=preempt, garp_refresh=2.0), priority)
    now, held = 0.0, False
    for event, dt in steps:
        now += dt
        if isinstance(event, m.Timer):  # timers fire at their deadline, as the runner does
            now = max(now, m.next_deadline(s) or now)
        s, actions = m.step(s, event, now)
        for action in actions:
            if isinstance(action, m.AddAddresses):
                held = True
            elif isinstance(action, m.RemoveAddresses):
                held = False
            elif isinstance(action, m.SendAdvert) and action.priority == 0:
                assert s.releasing or s.role is Role.FAULT or s.stopped
        assert held == s.holds_addresses or (s.role is Role.INITIALIZE and not held)
        deadline = m.next_deadline(s)
        assert deadline is None or deadline > now or not isinstance(event, m.Timer)
        if s.role is Role.BACKUP:
            assert s.down_at is not None and s.adver_at is None and not held
        if s.role in (Role.INITIALIZE, Role.FAULT):
            assert deadline is None and not held
        if s.role is Role.MASTER and not s.releasing:
            assert s.adver_at is not None and s.adver_at <= now + s.params.advert_interval
        if s.stopped:
            assert s.role is Role.INITIALIZE and not held


# A LAN of directors: adverts delivered after `latency` to every other node
# that is not partitioned from the sender; time jumps from event to event.

LATENCY = 0.001


@dataclasses.dataclass
class Node:
    state: m.State
    transitions: list[tuple[float, Role]] = dataclasses.field(default_factory=list)


def simulate(
    nodes: list[Node],
    until: float,
    starts: list[float],
    cut: tuple[float, float] = (0.0, 0.0),
) -> None:
    queue: list[tuple[float, int, int, m.Event]] = []
    seq = 0

    def push(t: float, i: int, e: m.Event) -> None:
        nonlocal seq
        seq += 1
        heapq.heappush(queue, (t, seq, i, e))

    for i, t in enumerate(starts):
        push(t, i, m.Startup())
    timers: dict[int, float] = {}
    while queue:
        t, _, i, event = heapq.heappop(queue)
        if t > until:
            break
        node = nodes[i]
        if isinstance(event, m.Timer) and timers.get(i) != t:
            continue  # superseded
        before = node.state.role
        node.state, actions = m.step(node.state, event, t)
        if node.state.role is not before:
            node.transitions.append((t, node.state.role))
        for a in actions:
            if isinstance(a, m.SendAdvert):
                for j in range(len(nodes)):
                    if j != i and not cut[0] <= t < cut[1]:
                        push(
                            t + LATENCY,
                            j,
                            m.Received(
                                a.priority,
                                node.state.params.advert_interval,
                                node.state.params.primary,
                            ),
                        )
        deadline = m.next_deadline(node.state)
        if deadline is not None:
            timers[i] = deadline
            push(deadline, i, m.Timer())


node_specs = st.lists(
    st.tuples(st.integers(1, 254), st.booleans(), st.floats(0, 5), st.sampled_from([0.0, 2.0])),
    min_size=2,
    max_size=4,
)


@settings(max_examples=150, deadline=None)
@given(specs=node_specs, partition=st.booleans())
def test_a_lan_settles_on_exactly_one_master_without_flapping(
    specs: list[tuple[int, bool, float, float]], partition: bool
) -> None:
    nodes = [
        Node(
            m.initial(
                params(
                    primary=ipaddress.IPv4Address(f"192.0.2.{10 + i}"),
                    preempt=pre,
                    preempt_delay=delay if pre else 0.0,
                ),
                prio,
            )
        )
        for i, (prio, pre, _, delay) in enumerate(specs)
    ]
    cut = (10.0, 20.0) if partition else (0.0, 0.0)
    settle = 20.0 + 2 * m.master_down_interval(1, T) + 2.0
    end = settle + 20.0
    simulate(nodes, end, [start for _, _, start, _ in specs], cut)
    masters = [n for n in nodes if n.state.role is Role.MASTER]
    assert len(masters) == 1
    for n in nodes:  # stable: nobody changed state during the last 20 s
        assert all(t < settle for t, _ in n.transitions), n.transitions
    if all(pre for _, pre, _, _ in specs):
        # With preemption the highest priority wins; between equals, whoever got there
        # first (a backup never preempts an equal; the address only breaks master ties).
        assert masters[0].state.priority == max(n.state.priority for n in nodes)


def test_partition_gives_two_masters_and_healing_one() -> None:
    nodes = [Node(m.initial(params(primary=A), 150)), Node(m.initial(params(primary=B), 100))]
    simulate(nodes, 30.0, [0.0, 0.5], cut=(10.0, 20.0))
    assert [n.state.role for n in nodes] == [Role.MASTER, Role.BACKUP]
    roles_during = [[r for t, r in n.transitions if 10 <= t < 20] for n in nodes]
    assert roles_during == [[], [Role.MASTER]]  # the backup took over during the cut
    after = [[r for t, r in n.transitions if t >= 20] for n in nodes]
    assert after == [[], [Role.BACKUP]]  # and yielded once, at the first advert after healing
