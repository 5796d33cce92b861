"""sh, dh and mh (lvsmon/schedulers/hashing.py) against ip_vs_{sh,dh,mh}.c.

The GOLDEN decisions were computed by the kernel's own functions (hash_32,
hsiphash, ip_vs_*_reassign / ip_vs_mh_populate, the fallback loops) compiled
in a userspace C transcription, for servers 10.0.0.1 (weight 1), .2 (2) and .3
(3) added in that order.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from ipaddress import IPv4Address, IPv6Address, ip_address

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lvsmon.schedulers import Dest, Flow, Scheduler, create
from lvsmon.schedulers.hashing import DestinationHashing, MaglevHashing, SourceHashing
from lvsmon.schedulers.khash import addr_fold, hash_32

CLIENTS = [
    ("192.168.1.1", 40000),
    ("192.168.1.2", 40001),
    ("203.0.113.77", 5555),
    ("8.8.8.8", 53),
    ("10.1.2.3", 1234),
    ("172.16.0.9", 65535),
]
# scheduler, flags, B's weight (0: set to 0 after the adds) -> last octet or None
GOLDEN = [
    ("sh", (), 2, [2, 3, 2, 3, 3, 2]),
    ("sh", ("sh-port",), 2, [3, 3, 1, 1, 3, 2]),
    ("sh", (), 0, [3, 1, 3, None, 3, 3]),
    ("sh", ("sh-fallback",), 0, [3, 1, 3, 3, 3, 3]),
    ("dh", (), 2, [2, 3, 3, 1, 1, 2]),
    ("mh", (), 2, [3, 3, 2, 2, 1, 3]),
    ("mh", ("mh-port",), 2, [2, 2, 2, 3, 1, 3]),
    ("mh", (), 0, [3, 3, None, None, 1, 3]),
    ("mh", ("mh-fallback",), 0, [3, 3, 1, 3, 1, 3]),
    ("mh", ("mh-port", "mh-fallback"), 0, [3, 3, 3, 3, 1, 3]),
]


def server(n: int, weight: int = 1, port: int = 80) -> Dest:
    return Dest(IPv4Address(f"10.0.0.{n}"), port, weight)


def fresh(name: str, flags: frozenset[str] = frozenset()) -> tuple[Scheduler, list[Dest]]:
    return create(name, flags), []


def no_dests() -> list[Dest]:
    return []


def add(sched: Scheduler, dests: list[Dest], *new: Dest) -> None:
    for dest in new:
        dests.insert(0, dest)
        sched.update(dests)


def client_flow(src: str, sport: int, proto: str = "tcp") -> Flow:
    # dst = src too, so that dh (which hashes the destination) varies with it
    return Flow(ip_address(src), sport, ip_address(src), 80, proto)


def octet(dest: Dest | None) -> int | None:
    return None if dest is None else int(str(dest.address).rsplit(".", 1)[1])


def three(name: str, flags: Sequence[str] = ()) -> tuple[Scheduler, list[Dest]]:
    sched, dests = fresh(name, frozenset(flags))
    add(sched, dests, server(1, 1), server(2, 2), server(3, 3))
    return sched, dests


@pytest.mark.parametrize(("name", "flags", "b_weight", "expected"), GOLDEN)
def test_decisions_match_the_kernel(
    name: str, flags: tuple[str, ...], b_weight: int, expected: list[int | None]
) -> None:
    sched, dests = three(name, flags)
    if b_weight != 2:
        dests[1].set_weight(b_weight)
        sched.update(dests)
    got = [octet(sched.schedule(dests, client_flow(*c), 0.0)) for c in CLIENTS]
    assert got == expected


# -- sh --------------------------------------------------------------------------------


def test_sh_hands_out_weight_consecutive_buckets_in_list_order() -> None:
    sched, _ = three("sh")
    assert isinstance(sched, SourceHashing)
    table = [octet(d) for d in sched.table]
    assert table[:12] == [3, 3, 3, 2, 2, 1, 3, 3, 3, 2, 2, 1]
    assert Counter(table) == {3: 42 * 3 + 3, 2: 42 * 2 + 1, 1: 42}  # 256 = 42 * 6 + 4


def test_sh_weight_zero_keeps_one_bucket_and_its_clients_are_refused() -> None:
    sched, dests = fresh("sh")
    add(sched, dests, server(1, 1), server(2, 0), server(3, 3))
    assert isinstance(sched, SourceHashing)
    table = [octet(d) for d in sched.table]
    assert table[:10] == [3, 3, 3, 2, 1, 3, 3, 3, 2, 1]
    for src in range(256):
        f = client_flow(f"192.0.2.{src}", 1000)
        chosen = sched.schedule(dests, f, 0.0)
        assert (chosen is None) == (table[sched.bucket(f)] == 2)


def test_sh_bucket_is_hash_32_of_port_plus_address() -> None:
    plain = SourceHashing()
    ported = SourceHashing(frozenset({"sh-port"}))
    f = client_flow("192.168.1.1", 40000)
    assert plain.bucket(f) == hash_32(0xC0A80101, 8) == 136
    assert ported.bucket(f) == hash_32(0xC0A80101 + 40000, 8)
    # the port is only read for TCP, UDP and SCTP
    assert ported.bucket(client_flow("192.168.1.1", 40000, "udp")) == ported.bucket(f)
    assert ported.bucket(client_flow("192.168.1.1", 40000, "icmp")) == plain.bucket(f)
    # IPv6: the XOR of the four words
    f6 = client_flow("2001:db8::1", 40000)
    assert plain.bucket(f6) == hash_32(0x20010DB8 ^ 1, 8)


def test_sh_fallback_probes_on_and_refuses_when_all_are_unavailable() -> None:
    sched, dests = three("sh", ("sh-fallback",))
    for dest in dests[:2]:
        dest.overloaded = True
    for src, port in CLIENTS:
        assert octet(sched.schedule(dests, client_flow(src, port), 0.0)) == 1
    dests[2].set_weight(0)
    sched.update(dests)
    assert all(sched.schedule(dests, client_flow(*c), 0.0) is None for c in CLIENTS)


def test_sh_table_is_rebuilt_on_every_change() -> None:
    sched, dests = three("sh")
    assert isinstance(sched, SourceHashing)
    dests[0].set_weight(1)  # 3 now takes one bucket per round
    sched.update(dests)
    assert [octet(d) for d in sched.table[:8]] == [3, 2, 2, 1, 3, 2, 2, 1]
    dests.pop(1)  # remove 2: relaid from scratch, most clients remapped
    sched.update(dests)
    assert [octet(d) for d in sched.table[:4]] == [3, 1, 3, 1]


@settings(max_examples=40, deadline=None)
@given(
    clients=st.lists(st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 65535)), max_size=20),
    port_flag=st.booleans(),
)
def test_sh_same_client_same_server(clients: list[tuple[int, int]], port_flag: bool) -> None:
    sched, dests = three("sh", ("sh-port",) if port_flag else ())
    for addr, port in clients:
        f = Flow(IPv4Address(addr), port, IPv4Address("198.51.100.1"), 80)
        first = sched.schedule(dests, f, 0.0)
        assert first is not None
        assert sched.schedule(dests, f, 1.0) is first
        other_port = f._replace(src_port=(port + 1) % 65536)
        if not port_flag:
            assert sched.schedule(dests, other_port, 2.0) is first


# -- dh --------------------------------------------------------------------------------


def test_dh_one_bucket_per_server_per_round_weights_ignored() -> None:
    sched, dests = three("dh")
    assert isinstance(sched, DestinationHashing)
    table = [octet(d) for d in sched.table]
    assert table[:6] == [3, 2, 1, 3, 2, 1]
    assert Counter(table) == {3: 86, 2: 85, 1: 85}
    dests[0].set_weight(100)
    sched.update(dests)
    assert [octet(d) for d in sched.table] == table


def test_dh_hashes_the_destination_only_and_has_no_fallback() -> None:
    sched, dests = three("dh")
    assert isinstance(sched, DestinationHashing)
    vip = IPv4Address("198.51.100.20")
    flows = [Flow(IPv4Address(f"192.0.2.{i}"), 1000 + i, vip, 80) for i in range(50)]
    chosen = {id(sched.schedule(dests, f, 0.0)) for f in flows}
    assert len(chosen) == 1
    assert sched.bucket(flows[0]) == hash_32(addr_fold(vip), 8)
    target = sched.table[sched.bucket(flows[0])]
    assert target is not None
    target.overloaded = True
    assert sched.schedule(dests, flows[0], 0.0) is None
    target.overloaded = False
    target.set_weight(0)
    assert sched.schedule(dests, flows[0], 0.0) is None


# -- mh --------------------------------------------------------------------------------


def mh_with(weights: Sequence[int], port: int = 80) -> tuple[MaglevHashing, list[Dest]]:
    sched, dests = MaglevHashing(), no_dests()
    add(sched, dests, *(server(i + 1, w, port) for i, w in enumerate(weights)))
    return sched, dests


def test_mh_table_is_4093_slots_shared_by_weight() -> None:
    sched, _ = mh_with([1, 2, 3])
    table = sched.table
    assert len(table) == 4093
    # rounds of 3, 2, 1 slots in list order; 4093 = 682 * 6 + 1
    assert Counter(octet(d) for d in table) == {3: 2047, 2: 1364, 1: 682}
    # weights only count up to their gcd
    assert [octet(d) for d in mh_with([2, 4, 6])[0].table] == [octet(d) for d in table]


def test_mh_large_weight_ratios_are_shifted_but_every_server_keeps_slots() -> None:
    sched, _ = mh_with([1, 1000])
    counts = Counter(octet(d) for d in sched.table)
    # rounds of (1000 >> 4) = 62 turns for 2, then (1 >> 4 or 1) = 1 for 1;
    # 4093 = 64 * 63 + 61, the last 61 slots all to 2
    assert counts[1] == 64
    assert counts[2] == 4093 - counts[1]


def test_mh_weight_zero_keeps_the_slots_and_refuses_their_clients() -> None:
    sched, dests = mh_with([1, 2, 3])
    before = sched.table
    flows = [client_flow(f"192.0.2.{i}", 1000 + i) for i in range(200)]
    chosen_before = [sched.schedule(dests, f, 0.0) for f in flows]
    quiesced = dests[0]
    quiesced.set_weight(0)
    sched.update(dests)
    assert sched.table == before
    for f, was in zip(flows, chosen_before, strict=True):
        now = sched.schedule(dests, f, 0.0)
        assert now is (None if was is quiesced else was)


def test_mh_fallback_only_moves_the_unavailable_servers_clients() -> None:
    sched, dests = mh_with([1, 2, 3])
    fb = MaglevHashing(frozenset({"mh-fallback"}))
    fb.update(dests)
    flows = [client_flow(f"192.0.2.{i}", 1000 + i) for i in range(200)]
    before = [sched.schedule(dests, f, 0.0) for f in flows]
    dests[1].overloaded = True
    for f, was in zip(flows, before, strict=True):
        now = fb.schedule(dests, f, 0.0)
        assert now is not None and now is not dests[1]
        if was is not dests[1]:
            assert now is was


def test_mh_removing_a_server_moves_its_keys_and_few_others() -> None:
    # Maglev is near-minimal, not minimal: the table is repopulated, and a few
    # slots of the remaining servers change hands too (well under 3% here).
    sched, dests = mh_with([1, 2, 1, 3, 2, 1, 1, 2, 3, 1])
    before = sched.table
    victim = dests[4]
    dests.remove(victim)
    sched.update(dests)
    after = sched.table
    assert victim not in after
    assert sum(1 for d in after if d is not None) == 4093
    moved = sum(1 for b, a in zip(before, after, strict=True) if b is not victim and a is not b)
    assert moved < 0.03 * 4093


@settings(max_examples=15, deadline=None)
@given(weights=st.lists(st.integers(1, 5), min_size=2, max_size=8), data=st.data())
def test_mh_removal_disruption_is_small(weights: list[int], data: st.DataObject) -> None:
    sched, dests = mh_with(weights)
    before = sched.table
    victim = dests[data.draw(st.integers(0, len(dests) - 1))]
    dests.remove(victim)
    sched.update(dests)
    moved = sum(
        1 for b, a in zip(before, sched.table, strict=True) if b is not victim and a is not b
    )
    assert moved < 0.05 * 4093


def test_mh_slot_uses_hsiphash_of_port_plus_address() -> None:
    sched, _ = mh_with([1])
    ported = MaglevHashing(frozenset({"mh-port"}))
    f = client_flow("192.168.1.1", 40000)
    assert sched.slot(f) == 3555833043 % 4093  # hsiphash(0xc0a80101), C transcription
    assert ported.slot(f) != sched.slot(f)
    assert ported.slot(client_flow("192.168.1.1", 40000, "icmp")) == sched.slot(f)


def test_mh_ipv6_clients_and_servers() -> None:
    sched, dests = MaglevHashing(), no_dests()
    add(sched, dests, *(Dest(IPv6Address(f"2001:db8::{i}"), 443, 1) for i in range(1, 4)))
    assert Counter(id(d) for d in sched.table).most_common()[-1][1] >= 1364
    flows = [
        Flow(IPv6Address(f"2001:db8:ffff::{i:x}"), 5000, IPv6Address("2001:db8::80"), 443)
        for i in range(100)
    ]
    first = [sched.schedule(dests, f, 0.0) for f in flows]
    assert all(d is not None for d in first)
    assert [sched.schedule(dests, f, 1.0) for f in flows] == first
    assert len({id(d) for d in first}) == 3


def test_mh_all_servers_added_with_weight_zero_means_empty_table() -> None:
    sched, dests = mh_with([0, 0])
    assert set(sched.table) == {None}
    assert sched.schedule(dests, client_flow("192.0.2.1", 1), 0.0) is None


@pytest.mark.parametrize("name", ["sh", "mh"])
def test_hash_schedulers_build_their_table_on_first_use(name: str) -> None:
    dests = [server(3, 3), server(2, 2), server(1, 1)]
    lazy = create(name)
    eager, _ = three(name)
    for c in CLIENTS:
        f = client_flow(*c)
        assert lazy.schedule(dests, f, 0.0) is not None
        assert octet(lazy.schedule(dests, f, 0.0)) == octet(eager.schedule(dests, f, 0.0))
