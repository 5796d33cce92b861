"""VRRPv3 advert codec: byte-exact against scapy's independent VRRPv3 layer, strict on input."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lvsmon.ha import codec
from lvsmon.ha.codec import Advert, Rejected

V4 = ipaddress.IPv4Address
V6 = ipaddress.IPv6Address
SRC, DST = V4("192.0.2.2"), codec.GROUP_V4
SRC6, DST6 = V6("fe80::1"), codec.GROUP_V6
ADDRS = (V4("192.0.2.100"), V4("198.51.100.1"))
KEY = b"k" * 32


def scapy_payload(src: str, dst: str, **fields: Any) -> bytes:  # scapy: Packet(**fields: Any)
    from scapy.layers.inet import IP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.vrrp import VRRPv3

    if ":" in src:
        return bytes(IPv6(src=src, dst=dst) / VRRPv3(**fields))[40:]
    return bytes(IP(src=src, dst=dst) / VRRPv3(**fields))[20:]


def test_ipv4_encoding_matches_scapy_byte_for_byte() -> None:
    ours = codec.encode(Advert(51, 150, 10, ADDRS), SRC, DST)
    theirs = scapy_payload(
        "192.0.2.2", "224.0.0.18", vrid=51, priority=150, adv=10, addrlist=[str(a) for a in ADDRS]
    )
    assert ours == theirs == bytes.fromhex("31339602000aa990c0000264c6336401")


def test_ipv6_encoding_matches_scapy_byte_for_byte() -> None:
    addrs = (V6("fd00:1::100"),)
    ours = codec.encode(Advert(51, 150, 10, addrs), SRC6, DST6)
    theirs = scapy_payload(
        "fe80::1", "ff02::12", vrid=51, priority=150, adv=10, addrlist=["fd00:1::100"]
    )
    assert ours == theirs


def test_decodes_what_scapy_builds() -> None:
    data = scapy_payload(
        "192.0.2.3", "224.0.0.18", vrid=7, priority=0, adv=100, addrlist=["192.0.2.100"]
    )
    adv = codec.decode(data, V4("192.0.2.3"), DST)
    assert adv == Advert(7, 0, 100, (V4("192.0.2.100"),))
    assert adv.interval == 1.0


def test_checksum_covers_the_pseudo_header() -> None:
    data = codec.encode(Advert(51, 150, 10, ADDRS), SRC, DST)
    with pytest.raises(Rejected) as info:
        codec.decode(data, V4("192.0.2.99"), DST)  # same bytes, other source
    assert info.value.reason == "checksum"


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda b: b[:7], "truncated"),
        (lambda b: b[:-1], "truncated"),  # count says 2 addresses, 1.75 present
        (lambda b: bytes([0x21]) + b[1:], "version"),
        (lambda b: bytes([0x32]) + b[1:], "type"),
        (lambda b: b[:8] + bytes([b[8] ^ 1]) + b[9:], "checksum"),
        (lambda b: b + b"\0\0\0\0", "checksum"),
    ],
    ids=["short-header", "short-addresses", "v2", "type-2", "flipped-bit", "trailing"],
)
def test_malformed_adverts_are_rejected_with_a_reason(mutate, reason) -> None:  # type: ignore[no-untyped-def]
    data = mutate(codec.encode(Advert(51, 150, 10, ADDRS), SRC, DST))
    with pytest.raises(Rejected) as info:
        codec.decode(data, SRC, DST)
    assert info.value.reason == reason


def _refix(data: bytes, src: ipaddress.IPv4Address = SRC) -> bytes:
    """Recompute the checksum, to reach the checks behind it."""
    zeroed = data[:6] + b"\0\0" + data[8:]
    total = codec.checksum(codec.pseudo_header(src, DST, len(zeroed)) + zeroed)
    return zeroed[:6] + total.to_bytes(2, "big") + zeroed[8:]


def test_extra_bytes_with_a_valid_checksum_are_a_length_error() -> None:
    data = _refix(codec.encode(Advert(51, 150, 10, ADDRS), SRC, DST) + b"\0\0\0\0")
    with pytest.raises(Rejected) as info:
        codec.decode(data, SRC, DST)
    assert info.value.reason == "length"


def test_zero_interval_is_rejected() -> None:
    data = bytearray(codec.encode(Advert(51, 150, 10, ADDRS), SRC, DST))
    data[4:6] = b"\0\0"
    with pytest.raises(Rejected) as info:
        codec.decode(_refix(bytes(data)), SRC, DST)
    assert info.value.reason == "interval"


def test_reserved_bits_are_ignored_on_receipt() -> None:
    data = bytearray(codec.encode(Advert(51, 150, 10, ADDRS), SRC, DST))
    data[4] |= 0xF0
    assert codec.decode(_refix(bytes(data)), SRC, DST).interval_cs == 10


def test_authenticated_round_trip_and_rejections() -> None:
    adv = Advert(51, 150, 10, ADDRS, counter=1234)
    data = codec.encode(adv, SRC, DST, KEY)
    assert len(data) == 8 + 8 + codec.TRAILER_SIZE
    assert codec.decode(data, SRC, DST, KEY) == adv
    plain = codec.encode(Advert(51, 150, 10, ADDRS), SRC, DST)
    for payload, key, reason in [
        (plain, KEY, "auth_missing"),  # a plain VRRPv3 advert when auth is on
        (data, b"x" * 32, "auth_bad"),  # wrong key
        (data, b"", "length"),  # auth off: the trailer is unexpected
    ]:
        with pytest.raises(Rejected) as info:
            codec.decode(payload, SRC, DST, key)
        assert info.value.reason == reason
    tampered = bytearray(data)
    tampered[2] = 3  # priority 150 -> 3, checksum fixed up: only the HMAC notices
    with pytest.raises(Rejected) as info:
        codec.decode(_refix(bytes(tampered)), SRC, DST, KEY)
    assert info.value.reason == "auth_bad"


def test_encode_refuses_what_cannot_go_on_the_wire() -> None:
    for adv in [
        Advert(0, 100, 10, ADDRS),
        Advert(1, 256, 10, ADDRS),
        Advert(1, 100, 0, ADDRS),
        Advert(1, 100, 4096, ADDRS),
        Advert(1, 100, 10, (V6("fd00::1"),)),
    ]:
        with pytest.raises(ValueError):
            codec.encode(adv, SRC, DST)
    with pytest.raises(ValueError):
        codec.encode(Advert(1, 100, 10, ADDRS), SRC, DST, KEY)  # auth without a counter


v4s = st.builds(V4, st.integers(0, 2**32 - 1))
v6s = st.builds(V6, st.integers(0, 2**128 - 1))


@settings(deadline=None)
@given(
    vrid=st.integers(1, 255),
    priority=st.integers(0, 255),
    interval=st.integers(1, 4095),
    family=st.sampled_from([4, 6]),
    data=st.data(),
    key=st.sampled_from([b"", KEY]),
)
def test_round_trip(
    vrid: int, priority: int, interval: int, family: int, data: st.DataObject, key: bytes
) -> None:
    addresses: st.SearchStrategy[V4 | V6] = v4s if family == 4 else v6s
    addrs = tuple(data.draw(st.lists(addresses, max_size=8)))
    src, dst = (SRC, DST) if family == 4 else (SRC6, DST6)
    counter = data.draw(st.integers(0, 2**64 - 1)) if key else None
    adv = Advert(vrid, priority, interval, addrs, counter)
    assert codec.decode(codec.encode(adv, src, dst, key), src, dst, key) == adv


@settings(deadline=None)
@given(st.binary(max_size=64))
def test_arbitrary_bytes_never_crash_the_decoder(data: bytes) -> None:
    try:
        codec.decode(data, SRC, DST)
    except Rejected as exc:
        assert exc.reason in codec.REASONS
