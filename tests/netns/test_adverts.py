"""Malformed and spoofed adverts from a rogue host on the directors' LAN.

The client namespace plays the rogue: it sends priority-254 adverts for the
directors' VRID with one defect each. A valid one would make the master
yield at once (the control case proves it), so "the master did not move and
the reject counter for that reason rose" shows each check works on the wire.
One pair of directors per module; each case is its own test.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from lvsmon.ha import codec
from tests.netns.conftest import _missing
from tests.netns.test_failover import pair
from tests.netns.topology import NAT_GW, VIP, LvsmonDirector, Topology, lvsmon_config, wait_for

ROGUE = ipaddress.IPv4Address("192.0.2.10")
GROUP = codec.GROUP_V4
ADDRS = tuple(sorted(ipaddress.IPv4Address(a) for a in (VIP, NAT_GW)))
KEY = b"0123456789abcdef0123"
Pair = tuple[Topology, LvsmonDirector, LvsmonDirector]


def _pair(extra: list[str]) -> Iterator[Pair]:
    reason = _missing()
    if reason:
        pytest.fail(f"netns tier {reason}")
    with Topology() as topo:
        d1, d2 = pair(
            topo,
            first=lvsmon_config(priority=150, group_extra=extra),
            second=lvsmon_config(priority=100, group_extra=extra),
        )
        yield topo, d1, d2


@pytest.fixture(scope="module")
def plain() -> Iterator[Pair]:
    yield from _pair([])


@pytest.fixture(scope="module")
def authed() -> Iterator[Pair]:
    yield from _pair([f'auth = "hmac-sha256"\nauth_key = "{KEY.decode()}"'])


def advert(
    vrid: int = 51,
    priority: int = 254,
    src: ipaddress.IPv4Address = ROGUE,
    key: bytes = b"",
    counter: int | None = None,
) -> bytes:
    return codec.encode(codec.Advert(vrid, priority, 10, ADDRS, counter), src, GROUP, key)


def packet(payload: bytes, ttl: int = 255, src: ipaddress.IPv4Address = ROGUE) -> dict[str, Any]:
    return {"src": str(src), "dst": str(GROUP), "ttl": ttl, "payload": payload.hex()}


def flip_checksum(data: bytes) -> bytes:
    return data[:6] + bytes([data[6] ^ 0xFF]) + data[7:]


def fix_checksum(data: bytes, src: ipaddress.IPv4Address = ROGUE) -> bytes:
    zeroed = data[:6] + b"\0\0" + data[8:]
    total = codec.checksum(codec.pseudo_header(src, GROUP, len(zeroed)) + zeroed)
    return data[:6] + total.to_bytes(2, "big") + data[8:]


CASES: dict[str, Callable[[], dict[str, Any]]] = {
    "checksum": lambda: packet(flip_checksum(advert())),
    "ttl": lambda: packet(advert(), ttl=254),
    "vrid": lambda: packet(advert(vrid=52)),
    "truncated": lambda: packet(advert()[:10]),
    "version": lambda: packet(fix_checksum(b"\x21" + advert()[1:])),
    "type": lambda: packet(fix_checksum(b"\x33" + advert()[1:])),
    "length": lambda: packet(fix_checksum(advert() + b"\0" * 8)),
    "interval": lambda: packet(fix_checksum(advert()[:4] + b"\0\0" + advert()[6:])),
}
# more ways to earn the same reason: (reason, packet)
ALSO: dict[str, tuple[str, Callable[[], dict[str, Any]]]] = {
    "zero-length": ("truncated", lambda: packet(b"")),
    # 3,000 bytes in two IP fragments: reassembled, larger than any advert can be
    "oversized": ("length", lambda: packet(fix_checksum(advert() + b"\0" * 3000))),
}


def check_rejected(
    topo: Topology,
    d1: LvsmonDirector,
    reason: str,
    make: Callable[[], dict[str, Any]],
    count: int = 5,
) -> None:
    before = d1.group()["rejected"].get(reason, 0)
    transitions = d1.group()["transitions"]
    topo.inject([make() for _ in range(count)], gap=0.02)
    wait_for(
        f"{count} '{reason}' rejects",
        lambda: d1.group()["rejected"].get(reason, 0) >= before + count,
        2,
    )
    assert d1.state() == "master" and d1.group()["transitions"] == transitions
    assert d1.holds_vip()


@pytest.mark.parametrize("reason", list(CASES))
def test_defective_adverts_are_rejected_and_counted(plain: Pair, reason: str) -> None:
    topo, d1, _ = plain
    check_rejected(topo, d1, reason, CASES[reason])


@pytest.mark.parametrize("case", list(ALSO))
def test_zero_length_and_oversized_adverts_are_rejected(plain: Pair, case: str) -> None:
    topo, d1, _ = plain
    reason, make = ALSO[case]
    check_rejected(topo, d1, reason, make)


def test_wrong_address_list_is_rejected(plain: Pair) -> None:
    topo, d1, _ = plain
    only_vip = codec.encode(codec.Advert(51, 254, 10, ADDRS[:1]), ROGUE, GROUP)
    check_rejected(topo, d1, "addresses", lambda: packet(only_vip))


def test_control_a_valid_spoofed_advert_does_move_the_master(plain: Pair) -> None:
    """Proves the rogue's packets reach the directors: without a defect, they win."""
    topo, d1, _ = plain
    topo.inject([packet(advert())])
    d1.wait_state("backup", 2)
    d1.wait_state("master", 3)  # the rogue went quiet: dir1 takes over again


def test_unauthenticated_advert_is_rejected_when_auth_is_on(authed: Pair) -> None:
    topo, d1, d2 = authed
    assert d2.group()["rejected"] == {} and d2.group()["adverts_received"] > 0
    check_rejected(topo, d1, "auth_missing", lambda: packet(advert()))


def test_wrong_key_is_rejected(authed: Pair) -> None:
    topo, d1, _ = authed
    check_rejected(
        topo, d1, "auth_bad", lambda: packet(advert(key=b"not-the-right-key!!", counter=2**62))
    )


def test_replayed_advert_is_rejected(authed: Pair) -> None:
    """An old advert of dir1 (right key, stale counter) replayed to dir2."""
    topo, _, d2 = authed
    dir1 = ipaddress.IPv4Address("192.0.2.2")
    old = advert(priority=150, src=dir1, key=KEY, counter=1)
    before = d2.group()["rejected"].get("replay", 0)
    topo.inject([packet(old, src=dir1) for _ in range(3)], gap=0.02)
    wait_for("replay rejects", lambda: d2.group()["rejected"].get("replay", 0) >= before + 3, 2)
    assert d2.state() == "backup"
