"""The kernel's hash helpers, bit-exact, for the hashing schedulers.

- `hash_32()`: include/linux/hash.h (multiplicative hash, top `bits` bits).
- `addr_fold()`: the `addr_fold` idiom of ip_vs_{sh,dh,mh,lblc,lblcr}.c, already
  through ntohl(): an IPv4 address as a host integer; for IPv6 the XOR of its
  four 32-bit words (XOR commutes with the byte swap, so folding the
  big-endian words gives ntohl(ip6[0]^ip6[1]^ip6[2]^ip6[3])).
- `hsiphash_u32()`: hsiphash() of a 4-byte value as lib/siphash.c computes it
  on 64-bit kernels, where HalfSipHash-1-3 is really SipHash-1-3 with a
  128-bit key, truncated to u32.
"""

from __future__ import annotations

from lvsmon.model import IPAddress

GOLDEN_RATIO_32 = 0x61C88647
_M32 = 0xFFFFFFFF
_M64 = 0xFFFFFFFFFFFFFFFF

# Transport protocols whose first 4 payload bytes are source/destination ports
# (ip_vs_sh_get_port / ip_vs_mh_get_port); others hash with port 0.
PORT_PROTOCOLS = frozenset({"tcp", "udp", "sctp"})


def hash_32(val: int, bits: int) -> int:
    return ((val * GOLDEN_RATIO_32) & _M32) >> (32 - bits)


def addr_fold(addr: IPAddress) -> int:
    value = int(addr)
    if addr.version == 4:
        return value
    return (value ^ (value >> 32) ^ (value >> 64) ^ (value >> 96)) & _M32


def siphash(data: bytes, k0: int, k1: int, c_rounds: int = 2, d_rounds: int = 4) -> int:
    """SipHash-c-d, 64-bit result, as lib/siphash.c lays it out (keys are u64 words)."""
    v0 = 0x736F6D6570736575 ^ k0
    v1 = 0x646F72616E646F6D ^ k1
    v2 = 0x6C7967656E657261 ^ k0
    v3 = 0x7465646279746573 ^ k1

    def rounds(n: int) -> None:
        nonlocal v0, v1, v2, v3
        for _ in range(n):
            v0 = (v0 + v1) & _M64
            v1 = ((v1 << 13) | (v1 >> 51)) & _M64
            v1 ^= v0
            v0 = ((v0 << 32) | (v0 >> 32)) & _M64
            v2 = (v2 + v3) & _M64
            v3 = ((v3 << 16) | (v3 >> 48)) & _M64
            v3 ^= v2
            v0 = (v0 + v3) & _M64
            v3 = ((v3 << 21) | (v3 >> 43)) & _M64
            v3 ^= v0
            v2 = (v2 + v1) & _M64
            v1 = ((v1 << 17) | (v1 >> 47)) & _M64
            v1 ^= v2
            v2 = ((v2 << 32) | (v2 >> 32)) & _M64

    full = len(data) - len(data) % 8
    for i in range(0, full, 8):
        m = int.from_bytes(data[i : i + 8], "little")
        v3 ^= m
        rounds(c_rounds)
        v0 ^= m
    b = ((len(data) & 0xFF) << 56) | int.from_bytes(data[full:], "little")
    v3 ^= b
    rounds(c_rounds)
    v0 ^= b
    v2 ^= 0xFF
    rounds(d_rounds)
    return v0 ^ v1 ^ v2 ^ v3


def hsiphash_u32(value: int, k0: int, k1: int) -> int:
    """hsiphash(&v, sizeof(u32), key), i.e. hsiphash_1u32(v): `siphash()` of the 4
    little-endian bytes with 1-3 rounds, truncated; unrolled for the mh hot path."""
    b = (4 << 56) | (value & _M32)
    v0 = 0x736F6D6570736575 ^ k0
    v1 = 0x646F72616E646F6D ^ k1
    v2 = 0x6C7967656E657261 ^ k0
    v3 = 0x7465646279746573 ^ k1 ^ b
    for i in range(4):  # 1 compression round, then 3 finalization rounds
        if i == 1:
            v0 ^= b
            v2 ^= 0xFF
        v0 = (v0 + v1) & _M64
        v1 = ((v1 << 13) | (v1 >> 51)) & _M64
        v1 ^= v0
        v0 = ((v0 << 32) | (v0 >> 32)) & _M64
        v2 = (v2 + v3) & _M64
        v3 = ((v3 << 16) | (v3 >> 48)) & _M64
        v3 ^= v2
        v0 = (v0 + v3) & _M64
        v3 = ((v3 << 21) | (v3 >> 43)) & _M64
        v3 ^= v0
        v2 = (v2 + v1) & _M64
        v1 = ((v1 << 17) | (v1 >> 47)) & _M64
        v1 ^= v2
        v2 = ((v2 << 32) | (v2 >> 32)) & _M64
    return (v0 ^ v1 ^ v2 ^ v3) & _M32
