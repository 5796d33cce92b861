"""Hostile VRRP input against the real codec, receive checks and state machine.

Hypothesis drives random bytes, mutations of valid adverts (bit flips, cuts,
trailing junk; with the checksum repaired, as an attacker would) and
well-formed adverts from sources that have no right to speak. The bars (issue
14): nothing but `Rejected` ever comes out of the checks, every refusal carries
a reason that the metrics know, and no illegitimate packet changes the role;
the control cases prove a legitimate peer still wins.
"""

from __future__ import annotations

import ipaddress
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lvsmon.ha import codec, machine, receive
from lvsmon.ha.codec import Advert, Rejected
from lvsmon.model import IPAddress

V4 = ipaddress.IPv4Address
V6 = ipaddress.IPv6Address
OWN, PEER, ROGUE = V4("192.0.2.2"), V4("192.0.2.3"), V4("192.0.2.66")
OWN6, PEER6 = V6("fe80::2"), V6("fe80::3")
ADDRS = (V4("192.0.2.100"), V4("198.51.100.1"))
ADDRS6 = (V6("fd00:1::100"),)
KEY = b"0123456789abcdef0123"
INTERVAL_CS = 10

v4 = st.builds(V4, st.integers(0, 2**32 - 1))
v6 = st.builds(V6, st.integers(0, 2**128 - 1))


def expect(**kw: object) -> receive.Expect:
    base: dict[str, object] = {"own": OWN, "advertised": ADDRS}
    base.update(kw)
    return receive.Expect(**base)  # type: ignore[arg-type]


def gram(payload: bytes, src: IPAddress = PEER, ttl: int = 255) -> receive.Datagram:
    dst = codec.GROUP_V4 if src.version == 4 else codec.GROUP_V6
    return receive.Datagram(payload, src, dst, ttl, 0.0)


def valid(
    priority: int = 200,
    src: IPAddress = PEER,
    key: bytes = b"",
    counter: int | None = None,
    addrs: tuple[IPAddress, ...] = ADDRS,
) -> bytes:
    dst = codec.GROUP_V4 if src.version == 4 else codec.GROUP_V6
    return codec.encode(Advert(51, priority, INTERVAL_CS, addrs, counter), src, dst, key)


def fix_checksum(data: bytes, src: IPAddress) -> bytes:
    """What an attacker does after tampering: make the checksum right again."""
    dst = codec.GROUP_V4 if src.version == 4 else codec.GROUP_V6
    if len(data) < 8:
        return data
    zeroed = data[:6] + b"\0\0" + data[8:]
    total = codec.checksum(codec.pseudo_header(src, dst, len(zeroed)) + zeroed)
    return data[:6] + struct.pack("!H", total) + data[8:]


def outcome(g: receive.Datagram, exp: receive.Expect) -> Advert | str:
    """The accepted advert, or the reason; anything else raised fails the test."""
    try:
        return receive.accept(g, exp, {})
    except Rejected as exc:
        assert exc.reason in codec.REASONS
        return exc.reason


mutation = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 2000), st.integers(0, 7)),
    st.tuples(st.just("cut"), st.integers(0, 2000), st.just(0)),
    st.tuples(st.just("append"), st.integers(1, 1500), st.integers(0, 255)),
)


def mutate(data: bytes, how: tuple[str, int, int]) -> bytes:
    kind, at, arg = how
    if kind == "flip":
        i = at % len(data)
        return data[:i] + bytes([data[i] ^ (1 << arg)]) + data[i + 1 :]
    if kind == "cut":
        return data[: at % len(data)]
    return data + bytes([arg]) * at


# --- the codec and the checks never crash ---


@settings(max_examples=400)
@given(st.binary(max_size=1200), v4, v4, st.sampled_from([b"", KEY]))
def test_random_bytes_decode_or_are_rejected_with_a_known_reason(
    data: bytes, src: V4, dst: V4, key: bytes
) -> None:
    try:
        adv = codec.decode(data, src, dst, key)
    except Rejected as exc:
        assert exc.reason in codec.REASONS
    else:  # only a correct checksum gets here: it must re-encode to the same advert
        again = codec.decode(codec.encode(adv, src, dst, key), src, dst, key)
        assert again == adv


@settings(max_examples=200)
@given(st.binary(max_size=1200), v6, st.integers(0, 255), st.booleans())
def test_random_ipv6_datagrams_never_escape_the_checks(
    data: bytes, src: V6, ttl: int, clipped: bool
) -> None:
    g = receive.Datagram(data, src, codec.GROUP_V6, ttl, 0.0, clipped)
    outcome(g, expect(own=OWN6, advertised=ADDRS6))


@settings(max_examples=400)
@given(st.lists(mutation, min_size=1, max_size=4), st.booleans(), st.booleans())
def test_mutated_adverts_never_escape_the_checks(
    hows: list[tuple[str, int, int]], authed: bool, repair: bool
) -> None:
    key = KEY if authed else b""
    data = valid(key=key, counter=7 if authed else None)
    for how in hows:
        data = mutate(data, how) or b"\0"
    if repair:
        data = fix_checksum(data, PEER)
    result = outcome(gram(data), expect(auth_key=key))
    if authed and isinstance(result, Advert):
        # HMAC: only a change the MAC does not cover may pass (the checksum itself)
        assert fix_checksum(data, PEER) == valid(key=key, counter=7)


# --- the reasons, one hand-built packet each ---

HOSTILE: dict[str, tuple[receive.Datagram, receive.Expect]] = {
    "truncated": (gram(valid()[:7]), expect()),
    "zero-length": (gram(b""), expect()),
    "ttl": (gram(valid(), ttl=64), expect()),
    "own_address": (gram(valid(src=OWN), src=OWN), expect()),
    "version": (gram(fix_checksum(b"\x21" + valid()[1:], PEER)), expect()),
    "type": (gram(fix_checksum(b"\x32" + valid()[1:], PEER)), expect()),
    "checksum": (gram(valid()[:6] + b"\0\0" + valid()[8:]), expect()),
    "length": (gram(fix_checksum(valid() + b"\0" * 4, PEER)), expect()),
    "oversized": (receive.Datagram(valid(), PEER, codec.GROUP_V4, 255, 0.0, True), expect()),
    "interval": (gram(fix_checksum(valid()[:4] + b"\0\0" + valid()[6:], PEER)), expect()),
    "source": (gram(valid(255, src=ROGUE), src=ROGUE), expect(unicast_peers=(PEER,))),
    "addresses": (gram(valid(addrs=ADDRS[:1])), expect()),
    "auth_missing": (gram(valid()), expect(auth_key=KEY)),
    "auth_bad": (gram(valid(key=b"x" * 20, counter=1)), expect(auth_key=KEY)),
}
WANT = {"zero-length": "truncated", "oversized": "length"}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_each_defect_is_rejected_for_its_own_reason(case: str) -> None:
    g, exp = HOSTILE[case]
    assert outcome(g, exp) == WANT.get(case, case)


def test_replayed_counter_is_rejected_and_a_fresh_one_accepted() -> None:
    replay: dict[IPAddress, int] = {}
    exp = expect(auth_key=KEY)
    receive.accept(gram(valid(key=KEY, counter=5)), exp, replay)
    with pytest.raises(Rejected) as exc:
        receive.accept(gram(valid(key=KEY, counter=5)), exp, replay)
    assert exc.value.reason == "replay"
    assert receive.accept(gram(valid(key=KEY, counter=6)), exp, replay).counter == 6


def test_every_reason_is_reachable() -> None:
    """A reason no check produces would be a dead series on the dashboards."""
    # vrid and overflow: the engine's (dispatch by VRID, the socket's drop count)
    seen = {WANT.get(c, c) for c in HOSTILE} | {"replay", "vrid", "overflow"}
    assert seen == set(codec.REASONS)


# --- no role change from illegitimate packets ---

PARAMS = machine.Params(advert_interval=0.1, primary=OWN)


def master() -> tuple[machine.State, float]:
    state, _ = machine.step(machine.initial(PARAMS, 150), machine.Startup(), 0.0)
    state, _ = machine.step(state, machine.Timer(), 1.0)
    assert state.role is machine.Role.MASTER
    return state, 1.0


hostile_advert = st.builds(
    lambda prio, src, key, counter: (valid(prio, src, key, counter if key else None), src),
    st.integers(0, 255),
    st.sampled_from([ROGUE, PEER]),
    st.sampled_from([b"", b"w" * 20]),
    st.integers(0, 2**64 - 1),
)


def deliver(
    state: machine.State, g: receive.Datagram, exp: receive.Expect, replay: dict[IPAddress, int]
) -> machine.State:
    """What GroupRuntime.on_datagram does: only an accepted advert reaches the machine."""
    try:
        adv = receive.accept(g, exp, replay)
    except Rejected:
        return state
    state, _ = machine.step(state, machine.Received(adv.priority, adv.interval, g.source), 0)
    return state


def run_master(packets: list[receive.Datagram], exp: receive.Expect) -> machine.State:
    state, now = master()
    replay: dict[IPAddress, int] = {}
    for g in packets:
        now += 0.03
        state, _ = machine.step(state, machine.Timer(), now)
        state = deliver(state, g, exp, replay)
    return state


@settings(max_examples=200)
@given(
    st.lists(
        st.one_of(
            hostile_advert,
            st.tuples(st.binary(max_size=64), st.sampled_from([ROGUE, PEER])),
        ),
        max_size=30,
    )
)
def test_a_master_with_auth_keeps_its_role_whatever_a_keyless_sender_sends(
    packets: list[tuple[bytes, V4]],
) -> None:
    grams = [gram(payload, src=src) for payload, src in packets]
    assert run_master(grams, expect(auth_key=KEY)).role is machine.Role.MASTER


@settings(max_examples=200)
@given(st.lists(st.tuples(st.integers(0, 255), v4.filter(lambda a: a != PEER)), max_size=30))
def test_a_unicast_master_keeps_its_role_against_foreign_priority_255(
    adverts: list[tuple[int, V4]],
) -> None:
    grams = [gram(valid(prio, src=src), src=src) for prio, src in adverts]
    assert run_master(grams, expect(unicast_peers=(PEER,))).role is machine.Role.MASTER


def test_control_the_legitimate_peer_with_a_higher_priority_wins() -> None:
    for exp, payload in (
        (expect(auth_key=KEY), valid(200, key=KEY, counter=1)),
        (expect(unicast_peers=(PEER,)), valid(255)),
    ):
        assert run_master([gram(payload)], exp).role is machine.Role.BACKUP
