"""Hashing schedulers: sh (ip_vs_sh.c), dh (ip_vs_dh.c) and mh (ip_vs_mh.c).

Each keeps a lookup table rebuilt by `update()` (the kernel's add/del/upd_dest
hooks) and answers a decision with one hash and one table read, O(1); only
the -fallback flags probe further when the first pick is unavailable.
Bucket numbers match the kernel's (see khash.py for byte order).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

from lvsmon.schedulers.base import Dest, Flow, Scheduler, usable
from lvsmon.schedulers.khash import PORT_PROTOCOLS, addr_fold, hash_32, hsiphash_u32

_M32 = 0xFFFFFFFF


def _source_port(flow: Flow, enabled: bool) -> int:
    """ip_vs_{sh,mh}_get_port(): the source port for TCP/UDP/SCTP when the -port
    flag is set, else 0."""
    return flow.src_port if enabled and flow.protocol in PORT_PROTOCOLS else 0


class SourceHashing(Scheduler):
    """sh: a 256-bucket table filled in list order, `weight` consecutive buckets per
    server (at least one, so a weight-0 server keeps a bucket whose clients are
    refused), wrapping round the list until all buckets are taken.

    bucket = hash_32(ntohs(port) + ntohl(saddr_fold), 8), port = the client's
    source port with sh-port, else 0. The picked server is refused if its
    weight is 0 or it is overloaded; with sh-fallback the search goes on at
    (offset + bucket + hash) & 255 for offset 0..255 (the kernel adds the hash
    twice) and takes the first available one. The table is rebuilt on every
    change, so adding or removing a server remaps most clients.
    """

    name = "sh"
    flags_allowed = frozenset({"sh-port", "sh-fallback"})
    TAB_BITS = 8
    TAB_SIZE = 1 << TAB_BITS

    def __init__(self, flags: frozenset[str] = frozenset(), rng: random.Random | None = None):
        super().__init__(flags, rng)
        self._buckets: list[Dest | None] = [None] * self.TAB_SIZE
        self._updated = False
        self._port = "sh-port" in flags
        self._fallback = "sh-fallback" in flags

    def update(self, dests: Sequence[Dest]) -> None:
        """ip_vs_sh_reassign()."""
        self._updated = True
        buckets: list[Dest | None] = [None] * self.TAB_SIZE
        if dests:
            p = d_count = 0
            for i in range(self.TAB_SIZE):
                dest = dests[p]
                buckets[i] = dest
                d_count += 1
                if d_count >= dest.weight:
                    p = (p + 1) % len(dests)
                    d_count = 0
        self._buckets = buckets

    @property
    def table(self) -> tuple[Dest | None, ...]:
        """The 256 buckets, for inspection."""
        return tuple(self._buckets)

    def bucket(self, flow: Flow) -> int:
        """The table index a flow hashes to (ip_vs_sh_hashkey with offset 0)."""
        key = (_source_port(flow, self._port) + addr_fold(flow.src_addr)) & _M32
        return hash_32(key, self.TAB_BITS)

    def schedule(self, dests: Sequence[Dest], flow: Flow, now: float) -> Dest | None:
        if not self._updated:
            self.update(dests)
        return self.pick(self.bucket(flow))

    def pick(self, ihash: int) -> Dest | None:
        """The server a flow hashing to bucket `ihash` gets, fallback included: the
        probes depend on the bucket alone (the nft data plane installs this per bucket)."""
        dest = self._buckets[ihash]
        if dest is None:
            return None
        if usable(dest):
            return dest
        if not self._fallback:
            return None
        # ip_vs_sh_get_fallback: hashkey(offset=roffset) = (roffset + ihash) & mask
        for offset in range(self.TAB_SIZE):
            roffset = (offset + ihash) % self.TAB_SIZE
            probe = self._buckets[(roffset + ihash) & (self.TAB_SIZE - 1)]
            if probe is None:
                break
            if usable(probe):
                return probe
        return None


class DestinationHashing(Scheduler):
    """dh: a 256-bucket table filled round-robin in list order, one bucket per server
    per round (weights ignored); bucket = hash_32(ntohl(daddr_fold), 8). The
    picked server is refused if its weight is 0 or it is overloaded; there is
    no fallback. Only adding or removing servers rebuilds the table (the
    kernel has no upd_dest hook; a rebuild would be identical anyway).
    """

    name = "dh"
    TAB_BITS = 8
    TAB_SIZE = 1 << TAB_BITS

    def __init__(self, flags: frozenset[str] = frozenset(), rng: random.Random | None = None):
        super().__init__(flags, rng)
        self._buckets: list[Dest | None] = [None] * self.TAB_SIZE
        self._updated = False

    def update(self, dests: Sequence[Dest]) -> None:
        """ip_vs_dh_reassign()."""
        self._updated = True
        n = len(dests)
        self._buckets = [dests[i % n] if n else None for i in range(self.TAB_SIZE)]

    @property
    def table(self) -> tuple[Dest | None, ...]:
        """The 256 buckets, for inspection."""
        return tuple(self._buckets)

    def bucket(self, flow: Flow) -> int:
        """The table index a flow hashes to (ip_vs_dh_hashkey)."""
        return hash_32(addr_fold(flow.dst_addr), self.TAB_BITS)

    def schedule(self, dests: Sequence[Dest], flow: Flow, now: float) -> Dest | None:
        if not self._updated:
            self.update(dests)
        dest = self._buckets[self.bucket(flow)]
        return dest if dest is not None and usable(dest) else None


class MaglevHashing(Scheduler):
    """mh: Maglev consistent hashing over a 4093-entry (prime) lookup table.

    Each server gets a permutation of the table from two SipHash-1-3 hashes of
    its address and port (fixed keys, so tables are reproducible): offset
    (key 1) mod 4093 and skip (key 2) mod 4092 + 1. Servers claim their next
    free preferred slot in list order, `turns` slots per round, where turns
    = (last_weight / gcd) >> rshift (at least 1) and rshift keeps the largest
    under 64 (IP_VS_MH_TAB_BITS 6). last_weight is the last non-zero weight,
    so setting a server to weight 0 keeps its slots (its clients are refused,
    or fall back) while removing it lets only its slots be reclaimed.

    slot = hsiphash(offset + ntohs(port) + ntohl(saddr_fold)) mod 4093, port =
    the source port with mh-port. With mh-fallback an unavailable pick makes
    it retry with the hash offset by (ihash + i) for i = 0..4092.
    """

    name = "mh"
    flags_allowed = frozenset({"mh-port", "mh-fallback"})
    TAB_SIZE = 4093  # primes[CONFIG_IP_VS_MH_TAB_INDEX (12) - 8]
    TAB_BITS = 6  # CONFIG_IP_VS_MH_TAB_INDEX / 2
    KEY1 = (2654435761, 2654435761)  # generate_hash_secret()
    KEY2 = (2654446892, 2654446892)

    def __init__(self, flags: frozenset[str] = frozenset(), rng: random.Random | None = None):
        super().__init__(flags, rng)
        self._lookup: list[Dest | None] = [None] * self.TAB_SIZE
        self._updated = False
        self._port = "mh-port" in flags
        self._fallback = "mh-fallback" in flags

    @classmethod
    def _hashkey(cls, fold: int, port: int, key: tuple[int, int], offset: int = 0) -> int:
        return hsiphash_u32((offset + port + fold) & _M32, *key)

    def update(self, dests: Sequence[Dest]) -> None:
        """ip_vs_mh_dest_changed(): gcd/rshift, then permutate and populate."""
        self._updated = True
        size = self.TAB_SIZE
        weights = [d.last_weight for d in dests if d.last_weight > 0]
        if not weights:  # gcd < 1: ip_vs_mh_reset()
            self._lookup = [None] * size
            return
        g = math.gcd(*weights)
        rshift = max((max(weights) // g).bit_length() - self.TAB_BITS, 0)

        # ip_vs_mh_permutate(). The kernel hashes dest addresses in the service's
        # family; here each in its own (they only differ for mixed-family tunnels).
        perm: list[int] = []
        skip: list[int] = []
        turns: list[int] = []
        for dest in dests:
            fold = addr_fold(dest.address)
            offset = self._hashkey(fold, dest.port, self.KEY1) % size
            perm.append(offset)
            skip.append(self._hashkey(fold, dest.port, self.KEY2) % (size - 1) + 1)
            lw = dest.last_weight
            turns.append(((lw // g) >> rshift) or int(lw != 0))

        # ip_vs_mh_populate(): every slot is (re)assigned.
        lookup: list[Dest | None] = [None] * size
        taken = bytearray(size)
        n = dt_count = 0
        while True:
            p = 0
            while p < len(dests):
                if turns[p] < 1:  # added with weight 0: no slots
                    p += 1
                    continue
                c = perm[p]
                while taken[c]:
                    c += skip[p]
                    if c >= size:
                        c -= size
                perm[p] = c
                taken[c] = 1
                lookup[c] = dests[p]
                n += 1
                if n == size:
                    self._lookup = lookup
                    return
                dt_count += 1
                if dt_count >= turns[p]:
                    dt_count = 0
                    p += 1

    @property
    def table(self) -> tuple[Dest | None, ...]:
        """The 4093 lookup slots, for inspection."""
        return tuple(self._lookup)

    def slot(self, flow: Flow) -> int:
        """The lookup-table index a flow hashes to (offset 0)."""
        fold = addr_fold(flow.src_addr)
        return self._hashkey(fold, _source_port(flow, self._port), self.KEY1) % self.TAB_SIZE

    def schedule(self, dests: Sequence[Dest], flow: Flow, now: float) -> Dest | None:
        if not self._updated:
            self.update(dests)
        fold = addr_fold(flow.src_addr)
        port = _source_port(flow, self._port)
        ihash = self._hashkey(fold, port, self.KEY1) % self.TAB_SIZE
        dest = self._lookup[ihash]
        if dest is None:
            return None
        if usable(dest):
            return dest
        if not self._fallback:
            return None
        for offset in range(self.TAB_SIZE):
            roffset = (offset + ihash) % self.TAB_SIZE
            probe = self._lookup[self._hashkey(fold, port, self.KEY1, roffset) % self.TAB_SIZE]
            if probe is None:
                break
            if usable(probe):
                return probe
        return None
