"""The scheduler registry, the kernel hash helpers, and properties every IPVS
scheduler shares (lvsmon.schedulers).

Per-scheduler behaviour is in test_schedulers_{rr,lc,hash,locality}.py. Exact
expected values there come from reading the kernel sources and, where marked
"C transcription", from the kernel functions compiled in a userspace harness.
"""

from __future__ import annotations

import inspect
import random
from ipaddress import IPv4Address, IPv6Address

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lvsmon.schedulers as schedulers
from lvsmon.schedulers import (
    IPVS_SCHEDULERS,
    SCHEDULER_FLAGS,
    SCHEDULERS,
    Dest,
    Flow,
    available,
    create,
)
from lvsmon.schedulers.khash import addr_fold, hash_32, hsiphash_u32, siphash

ALL_FLAGS = {"sh-port", "sh-fallback", "mh-port", "mh-fallback"}


def flow(src: str = "192.0.2.1", sport: int = 40000, dst: str = "198.51.100.1") -> Flow:
    return Flow(IPv4Address(src), sport, IPv4Address(dst), 80)


# -- registry --------------------------------------------------------------------------


def test_all_fourteen_kernel_schedulers_are_available() -> None:
    assert len(IPVS_SCHEDULERS) == 14
    assert available() == frozenset(IPVS_SCHEDULERS) == frozenset(SCHEDULERS)
    for name in IPVS_SCHEDULERS:
        sched = create(name)
        assert sched.name == name
        assert type(sched) is SCHEDULERS[name]


@pytest.mark.parametrize("name", IPVS_SCHEDULERS)
def test_docstring_names_the_kernel_source(name: str) -> None:
    cls = SCHEDULERS[name]
    assert cls.__doc__
    module = inspect.getmodule(cls)
    assert module is not None and module.__doc__
    assert f"ip_vs_{name}.c" in module.__doc__


def test_unknown_scheduler_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown scheduler"):
        create("wrrr")


def test_flags_table() -> None:
    expected = {"sh": {"sh-port", "sh-fallback"}, "mh": {"mh-port", "mh-fallback"}}
    assert expected == SCHEDULER_FLAGS
    assert create("sh", frozenset({"sh-port", "sh-fallback"})).flags == {"sh-port", "sh-fallback"}
    assert create("mh", frozenset({"mh-fallback"})).flags == {"mh-fallback"}


@pytest.mark.parametrize("name", IPVS_SCHEDULERS)
@pytest.mark.parametrize("flag", sorted(ALL_FLAGS))
def test_flags_rejected_where_the_scheduler_has_none(name: str, flag: str) -> None:
    if flag in SCHEDULER_FLAGS.get(name, set()):
        create(name, frozenset({flag}))
    else:
        with pytest.raises(ValueError, match="has no flag"):
            create(name, frozenset({flag}))


def test_public_names() -> None:
    for name in ("create", "available", "IPVS_SCHEDULERS", "SCHEDULER_FLAGS", "Dest", "Flow"):
        assert name in schedulers.__all__


def test_dest_key_is_address_and_port() -> None:
    assert Dest(IPv4Address("10.0.0.1"), 8080, 3).key == (IPv4Address("10.0.0.1"), 8080)


# -- kernel hash helpers ---------------------------------------------------------------


def test_hash_32_matches_include_linux_hash_h() -> None:
    # C transcription: (val * GOLDEN_RATIO_32) >> (32 - bits), u32
    for val, h8, h10 in [
        (0, 0, 0),
        (1, 97, 391),
        (0x0A000001, 39, 159),
        (0xC0A80101, 136, 547),
        (0xFFFFFFFF, 158, 632),
        (0x20010DB8, 221, 884),
    ]:
        assert hash_32(val, 8) == h8
        assert hash_32(val, 10) == h10


def test_siphash_reference_vectors() -> None:
    # SipHash-2-4 paper test vectors: key 00..0f, messages 00..(n-1)
    key = bytes(range(16))
    k0, k1 = int.from_bytes(key[:8], "little"), int.from_bytes(key[8:], "little")
    assert siphash(b"", k0, k1) == 0x726FDB47DD0E0E31
    assert siphash(bytes(range(15)), k0, k1) == 0xA129CA6149BE45E5


def test_hsiphash_matches_kernel_with_mh_keys() -> None:
    # C transcription of lib/siphash.c hsiphash_1u32 (64-bit), ip_vs_mh.c keys
    k1, k2 = 2654435761, 2654446892
    for val, s1, s2 in [
        (0, 492468162, 4169286463),
        (1, 384591538, 2182130385),
        (0x0A000001, 50859236, 1224331457),
        (0xC0A80101, 3555833043, 4187996631),
        (0xFFFFFFFF, 583391001, 4149874525),
    ]:
        assert hsiphash_u32(val, k1, k1) == s1
        assert hsiphash_u32(val, k2, k2) == s2


@given(st.integers(0, 2**32 - 1), st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1))
def test_unrolled_hsiphash_is_siphash_1_3(value: int, k0: int, k1: int) -> None:
    expected = siphash(value.to_bytes(4, "little"), k0, k1, 1, 3) & 0xFFFFFFFF
    assert hsiphash_u32(value, k0, k1) == expected


def test_addr_fold_is_ntohl_of_the_kernel_fold() -> None:
    assert addr_fold(IPv4Address("192.168.1.1")) == 0xC0A80101
    # ip6[0]^ip6[1]^ip6[2]^ip6[3] on big-endian words, then ntohl
    addr = IPv6Address("2001:db8:0:1::2:3")
    words = [int.from_bytes(addr.packed[i : i + 4], "big") for i in range(0, 16, 4)]
    assert addr_fold(addr) == words[0] ^ words[1] ^ words[2] ^ words[3]
    assert addr_fold(IPv6Address("::ffff:0:0")) == 0x0000FFFF


# -- properties shared by all schedulers -----------------------------------------------

# Schedulers that pick some usable destination whenever one exists.
WORK_CONSERVING = ("rr", "wrr", "lc", "wlc", "sed", "nq", "fo", "twos", "lblc", "lblcr")

dest_states = st.lists(
    st.tuples(
        st.integers(0, 5),  # weight
        st.booleans(),  # overloaded
        st.integers(0, 6),  # active
        st.integers(0, 6),  # inactive
    ),
    max_size=6,
)


def build(states: list[tuple[int, bool, int, int]]) -> list[Dest]:
    dests = []
    for i, (weight, overloaded, active, inactive) in enumerate(states):
        dest = Dest(IPv4Address(f"10.0.0.{i + 1}"), 80, weight)
        dest.overloaded, dest.active, dest.inactive = overloaded, active, inactive
        dests.append(dest)
    return dests


@pytest.mark.parametrize("name", IPVS_SCHEDULERS)
def test_no_destinations_means_no_choice(name: str) -> None:
    sched = create(name, rng=random.Random(1))
    sched.update([])
    assert sched.schedule([], flow(), 0.0) is None


@pytest.mark.parametrize("name", IPVS_SCHEDULERS)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(states=dest_states, clients=st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=5))
def test_never_weight_zero_nor_overloaded(
    name: str, states: list[tuple[int, bool, int, int]], clients: list[int]
) -> None:
    dests = build(states)
    sched = create(name, rng=random.Random(0))
    sched.update(dests)
    has_usable = any(d.weight > 0 and not d.overloaded for d in dests)
    for i, client in enumerate(clients):
        f = Flow(IPv4Address(client), 1000 + i, IPv4Address(client ^ 0x5A5A5A5A), 80)
        chosen = sched.schedule(dests, f, float(i))
        if chosen is None:
            assert name not in WORK_CONSERVING or not has_usable
            continue
        assert any(chosen is d for d in dests)
        assert chosen.weight > 0
        # (a fresh lblc has no remembered server, the only path that ignores the flag)
        assert not chosen.overloaded
