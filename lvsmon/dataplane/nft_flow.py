"""Which table entry the kernel's nftables picks for a flow: `jhash ... mod N seed S`.

The nft data plane installs lvsmon's own sh/dh/mh tables (the IPVS-exact
schedulers' buckets and Maglev slots) as maps keyed by a kernel hash of the
flow. nftables has no IPVS hash, so the key is nft_hash's Jenkins hash:
`reciprocal_scale(jhash(registers, len, seed), N)`. This module computes it
bit for bit, so tests (and operators) can predict the real server of any flow:

- `jhash()`: include/linux/jhash.h, reading 32-bit words in the CPU's byte order
  (little-endian on the machines lvsmon runs on);
- the hashed bytes are the registers nft loads: the address in network order,
  then (with sh-port/mh-port) the 16-bit source port in network order padded
  to a 32-bit register with zeros.
"""

from __future__ import annotations

from dataclasses import dataclass

from lvsmon.model import IPAddress

_M32 = 0xFFFFFFFF
JHASH_INITVAL = 0xDEADBEEF
SH_BUCKETS = 256  # IP_VS_SH_TAB_SIZE
DH_BUCKETS = 256  # IP_VS_DH_TAB_SIZE
MH_SLOTS = 4093  # ip_vs_mh's default table size


def _rol(x: int, k: int) -> int:
    return ((x << k) | (x >> (32 - k))) & _M32


def _mix(a: int, b: int, c: int) -> tuple[int, int, int]:
    a = (a - c) & _M32
    a ^= _rol(c, 4)
    c = (c + b) & _M32
    b = (b - a) & _M32
    b ^= _rol(a, 6)
    a = (a + c) & _M32
    c = (c - b) & _M32
    c ^= _rol(b, 8)
    b = (b + a) & _M32
    a = (a - c) & _M32
    a ^= _rol(c, 16)
    c = (c + b) & _M32
    b = (b - a) & _M32
    b ^= _rol(a, 19)
    a = (a + c) & _M32
    c = (c - b) & _M32
    c ^= _rol(b, 4)
    b = (b + a) & _M32
    return a, b, c


def _final(a: int, b: int, c: int) -> int:
    c ^= b
    c = (c - _rol(b, 14)) & _M32
    a ^= c
    a = (a - _rol(c, 11)) & _M32
    b ^= a
    b = (b - _rol(a, 25)) & _M32
    c ^= b
    c = (c - _rol(b, 16)) & _M32
    a ^= c
    a = (a - _rol(c, 4)) & _M32
    b ^= a
    b = (b - _rol(a, 14)) & _M32
    c ^= b
    c = (c - _rol(b, 24)) & _M32
    return c


def _word(data: bytes, at: int) -> int:
    return int.from_bytes(data[at : at + 4], "little")


def jhash(data: bytes, seed: int) -> int:
    """The kernel's jhash(key, length, initval)."""
    n = len(data)
    a = b = c = (JHASH_INITVAL + n + seed) & _M32
    at = 0
    while n > 12:
        a = (a + _word(data, at)) & _M32
        b = (b + _word(data, at + 4)) & _M32
        c = (c + _word(data, at + 8)) & _M32
        a, b, c = _mix(a, b, c)
        n -= 12
        at += 12
    if n == 0:
        return c
    tail = data[at:] + bytes(12 - n)  # the switch's fall-through adds exactly these bytes
    a = (a + _word(tail, 0)) & _M32
    b = (b + _word(tail, 4)) & _M32
    c = (c + _word(tail, 8)) & _M32
    return _final(a, b, c)


def scale(value: int, modulus: int) -> int:
    """reciprocal_scale(): the kernel's `hash mod N` without a division."""
    return (value * modulus) >> 32


@dataclass(frozen=True, slots=True)
class FlowHash:
    """What a virtual server's table is keyed by: the hashed address (source for sh
    and mh, destination for dh), the source port too (sh-port, mh-port), over
    `modulus` entries with `seed` (daemon.nft.hash_seed, the same on every director)."""

    field: str  # "saddr" or "daddr"
    port: bool
    modulus: int
    seed: int

    def key(self, address: IPAddress, sport: int = 0) -> bytes:
        data = address.packed
        if self.port:
            data += sport.to_bytes(2, "big") + b"\0\0"
        return data

    def index(self, src: IPAddress, dst: IPAddress, sport: int = 0) -> int:
        """The table entry a flow from src:sport to dst takes."""
        address = src if self.field == "saddr" else dst
        return scale(jhash(self.key(address, sport), self.seed), self.modulus)
