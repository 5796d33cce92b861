"""VRRP version 3 advertisements (RFC 5798 section 5), bytes in and out. No I/O.

     0                   1                   2                   3
    |Version| Type  | Virtual Rtr ID|   Priority    |Count IPvX Addr|
    |(rsvd) |     Max Adver Int     |          Checksum             |
    |                     IPvX Address(es) ...                      |

The checksum covers the message and the IPv4/IPv6 pseudo-header, as keepalived
computes it for `vrrp_version 3`. `decode` is strict and raises `Rejected`
with one of `REASONS` (the `reason` label of lvsmon_ha_adverts_rejected_total).

Optional lvsmon-only authentication appends a trailer after the addresses: an
8-byte replay counter and an HMAC-SHA256 (32 bytes) over the pseudo-header's
addresses, the message (checksum zeroed) and the counter. Standard decoders
see trailing bytes; keepalived peers reject them, hence off by default.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import struct
from dataclasses import dataclass

from lvsmon.model import IPAddress

PROTO = 112
VERSION = 3
TYPE_ADVERT = 1
TTL = 255
GROUP_V4 = ipaddress.IPv4Address("224.0.0.18")
GROUP_V6 = ipaddress.IPv6Address("ff02::12")
HEADER = struct.Struct("!BBBBHH")
COUNTER = struct.Struct("!Q")
MAC_SIZE = 32
TRAILER_SIZE = COUNTER.size + MAC_SIZE

# Every reason an advert can be rejected for, in the order they are checked.
REASONS = (
    "truncated",  # shorter than its header or its address count says
    "ttl",  # TTL / hop limit != 255: not from this link (checked by the receiver)
    "own_address",  # claims our own source address: spoofed, or an address clash (receiver)
    "version",  # not VRRP version 3
    "type",  # not an ADVERTISEMENT
    "checksum",  # bad checksum over the pseudo-header and the message
    "length",  # longer than the address count says, oversized, or an unexpected trailer
    "interval",  # Max Adver Int of zero
    "vrid",  # no group of this VRID on the receiving interface (checked by the receiver)
    "source",  # unicast mode: the sender is not a configured peer (receiver)
    "addresses",  # the address list differs from the group's (receiver)
    "auth_missing",  # auth on, but the advert carries no authentication trailer
    "auth_bad",  # the HMAC does not verify: wrong key or altered in flight
    "replay",  # the auth counter did not increase (receiver)
    "overflow",  # dropped by the kernel, unread, on a full receive queue (a flood)
)


class Rejected(Exception):
    def __init__(self, reason: str, detail: str = ""):
        assert reason in REASONS, reason
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Advert:
    vrid: int
    priority: int
    interval_cs: int  # Max Adver Int, centiseconds
    addresses: tuple[IPAddress, ...]
    counter: int | None = None  # the auth trailer's replay counter, when authenticated

    @property
    def interval(self) -> float:
        return self.interval_cs / 100


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071): ones' complement of the ones' complement sum."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return int(~total & 0xFFFF)


def pseudo_header(src: IPAddress, dst: IPAddress, length: int) -> bytes:
    if src.version == 4:
        return src.packed + dst.packed + struct.pack("!BBH", 0, PROTO, length)
    return src.packed + dst.packed + struct.pack("!I3xB", length, PROTO)


def encode(advert: Advert, src: IPAddress, dst: IPAddress, key: bytes = b"") -> bytes:
    """The advert as sent from `src` to `dst` (the checksum depends on both)."""
    if not 0 <= advert.priority <= 255 or not 1 <= advert.vrid <= 255:
        raise ValueError(advert)
    if not 0 < advert.interval_cs < 4096 or len(advert.addresses) > 255:
        raise ValueError(advert)
    if any(a.version != src.version for a in advert.addresses):
        raise ValueError(advert)
    body = HEADER.pack(
        VERSION << 4 | TYPE_ADVERT,
        advert.vrid,
        advert.priority,
        len(advert.addresses),
        advert.interval_cs,
        0,
    ) + b"".join(a.packed for a in advert.addresses)
    if key:
        if advert.counter is None:
            raise ValueError("an authenticated advert needs a counter")
        counter = COUNTER.pack(advert.counter)
        body += counter + _mac(key, src, dst, body, counter)
    total = checksum(pseudo_header(src, dst, len(body)) + body)
    return body[:6] + struct.pack("!H", total) + body[8:]


def decode(data: bytes, src: IPAddress, dst: IPAddress, key: bytes = b"") -> Advert:
    """Parse and verify one advert received from `src` on `dst`. Raises Rejected."""
    if len(data) < HEADER.size:
        raise Rejected("truncated", f"{len(data)} bytes")
    vt, vrid, priority, count, interval, _ = HEADER.unpack_from(data)
    if vt >> 4 != VERSION:
        raise Rejected("version", str(vt >> 4))
    if vt & 0xF != TYPE_ADVERT:
        raise Rejected("type", str(vt & 0xF))
    size = 4 if src.version == 4 else 16
    base = HEADER.size + count * size
    if len(data) < base:
        raise Rejected("truncated", f"{len(data)} bytes for {count} addresses")
    if checksum(pseudo_header(src, dst, len(data)) + data):
        raise Rejected("checksum")
    if interval & 0xF000:
        interval &= 0x0FFF  # the 4 reserved bits: "MUST be ignored on receipt"
    counter = None
    if key:
        if len(data) == base:
            raise Rejected("auth_missing")
        if len(data) != base + TRAILER_SIZE:
            raise Rejected("length", f"{len(data)} bytes for {count} addresses")
        body, trailer = data[:base], data[base:]
        body = body[:6] + b"\0\0" + body[8:]
        counter_bytes, mac = trailer[: COUNTER.size], trailer[COUNTER.size :]
        if not hmac.compare_digest(mac, _mac(key, src, dst, body, counter_bytes)):
            raise Rejected("auth_bad")
        (counter,) = COUNTER.unpack(counter_bytes)
    elif len(data) != base:
        raise Rejected("length", f"{len(data)} bytes for {count} addresses")
    if interval == 0:
        raise Rejected("interval", "0")
    addresses = tuple(
        ipaddress.ip_address(data[i : i + size]) for i in range(HEADER.size, base, size)
    )
    return Advert(vrid, priority, interval, addresses, counter)


def _mac(key: bytes, src: IPAddress, dst: IPAddress, body: bytes, counter: bytes) -> bytes:
    return hmac.new(key, src.packed + dst.packed + body + counter, hashlib.sha256).digest()
