"""A virtual server's scheduler as a lookup table nftables can hold. Pure.

The decision per new connection is one map lookup in the kernel; the tables
come from lvsmon's IPVS-exact schedulers (lvsmon.schedulers), not from a second
implementation:

- rr: `numgen inc mod n` over the servers in service;
- wrr: `numgen inc mod P` over one period of IPVS's interleaved sequence, made by
  running lvsmon's WeightedRoundRobin for P = sum(weights) / gcd picks (capped at
  WRR_SLOTS: larger weights are scaled down first, see docs/nft.md);
- sh, dh: the 256 buckets of SourceHashing / DestinationHashing;
- mh: the 4093 slots of MaglevHashing (built from each server's last non-zero
  weight, as ip_vs_mh does);
- fo: the one server WeightedFailover picks (a constant).

The hashing tables are keyed by `jhash` of the flow (nft_flow), not by IPVS's own
hash: the buckets are IPVS's, the flow-to-bucket function is nftables'. Entries
whose server may not take new connections (weight 0) are left out of the map: the
lookup fails and the packet is refused, as IPVS refuses it. sh-fallback is kept
exact: its probe sequence depends only on the bucket, so each refused bucket
holds its fallback's server instead.

Real servers enter the schedulers in a canonical order (address, then port),
not in the order they were added, so every director with the same config
builds the same tables whatever its history (IPVS uses its list order).
"""

from __future__ import annotations

import functools
import ipaddress
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from lvsmon.dataplane.nft_flow import DH_BUCKETS, MH_SLOTS, SH_BUCKETS, FlowHash
from lvsmon.model import DestKey, RealServer
from lvsmon.schedulers import Dest, Flow
from lvsmon.schedulers.failover import WeightedFailover
from lvsmon.schedulers.hashing import DestinationHashing, MaglevHashing, SourceHashing
from lvsmon.schedulers.rr import WeightedRoundRobin

# What the nft plane can express exactly (everything else is rejected by `lvsmon check`).
SCHEDULERS = frozenset({"rr", "wrr", "sh", "dh", "mh", "fo"})
FLAGS = frozenset({"sh-port", "sh-fallback", "mh-port"})
WRR_SLOTS = 4096  # longest wrr period installed; beyond it weights are scaled down
_FLOW = Flow(ipaddress.IPv4Address(0), 0, ipaddress.IPv4Address(0), 0)


class Member(NamedTuple):
    """A real server as the table sees it: its conntrack mark and weights. A named
    tuple: a full program makes 50,000, at half a frozen dataclass's cost."""

    mark: int
    server: RealServer
    last_weight: int  # the last non-zero weight (mh keeps slots for weight 0)
    key: DestKey  # server.key, computed once (str() of an address is slow at 50,000)


@dataclass(frozen=True, slots=True)
class Decision:
    """`ct mark set <key> map {index: mark}`; key None: a constant (`fixed`), or no
    server at all when `entries` is empty."""

    key: str  # "numgen", "jhash" or "fixed"
    modulus: int
    entries: tuple[tuple[int, int], ...]  # (index, mark); "fixed": ((0, mark),)
    flow: FlowHash | None = None


def canonical(members: Sequence[Member]) -> list[Member]:
    return sorted(
        members,
        key=lambda m: (m.server.address.version, int(m.server.address), m.server.port),
    )


def _dests(members: Sequence[Member]) -> list[Dest]:
    out = []
    for m in members:
        d = Dest(m.server.address, m.server.port, m.server.weight)
        d.last_weight = m.last_weight
        out.append(d)
    return out


def decide(scheduler: str, flags: frozenset[str], members: Sequence[Member], seed: int) -> Decision:
    """The table for one virtual server. ValueError for a scheduler nft cannot express."""
    ordered = canonical(members)
    if scheduler == "rr":
        live = [m.mark for m in ordered if m.server.weight > 0]
        return Decision("numgen", len(live), tuple(enumerate(live)))
    if scheduler == "wrr":
        marks = [m.mark for m in ordered]
        seq = wrr_indices(tuple(m.server.weight for m in ordered))
        return Decision("numgen", len(seq), tuple((i, marks[j]) for i, j in enumerate(seq)))
    dests = _dests(ordered)
    mark_of = {id(d): m.mark for d, m in zip(dests, ordered, strict=True)}
    if scheduler == "fo":
        pick = WeightedFailover().schedule(dests, _FLOW, 0.0)
        return Decision("fixed", 1, ((0, mark_of[id(pick)]),) if pick else ())
    if scheduler == "sh":
        sh = SourceHashing(flags)
        sh.update(dests)
        flow = FlowHash("saddr", "sh-port" in flags, SH_BUCKETS, seed)
        table = [sh.pick(b) for b in range(SH_BUCKETS)]
        return Decision("jhash", SH_BUCKETS, _entries(table, mark_of), flow)
    if scheduler == "dh":
        dh = DestinationHashing(flags)
        dh.update(dests)
        flow = FlowHash("daddr", False, DH_BUCKETS, seed)
        return Decision("jhash", DH_BUCKETS, _entries(_usable(dh.table), mark_of), flow)
    if scheduler == "mh":
        if flags - {"mh-port"}:
            raise ValueError("mh-fallback probes per flow, which a table cannot hold")
        mh = MaglevHashing(flags)
        mh.update(dests)
        flow = FlowHash("saddr", "mh-port" in flags, MH_SLOTS, seed)
        return Decision("jhash", MH_SLOTS, _entries(_usable(mh.table), mark_of), flow)
    raise ValueError(f"scheduler {scheduler!r} cannot be decided per packet in nftables")


def _usable(table: Sequence[Dest | None]) -> list[Dest | None]:
    return [d if d is not None and d.weight > 0 else None for d in table]


def _entries(table: Sequence[Dest | None], mark_of: dict[int, int]) -> tuple[tuple[int, int], ...]:
    return tuple((i, mark_of[id(d)]) for i, d in enumerate(table) if d is not None)


@functools.lru_cache(maxsize=1024)
def wrr_indices(weights: tuple[int, ...], slots: int = WRR_SLOTS) -> tuple[int, ...]:
    """One period of IPVS's wrr sequence over servers of these weights (as indexes),
    sum(weights) / gcd picks long, from lvsmon's WeightedRoundRobin. A period longer
    than `slots` is computed from weights scaled down to fit (each in-service server
    keeps at least one pick). Cached: virtual servers often share weight patterns."""
    live = [w for w in weights if w > 0]
    if not live:
        return ()
    total = sum(live)
    if total // math.gcd(*live) > slots:
        weights = tuple(max(1, w * slots // total) if w else 0 for w in weights)
    dests = [Dest(_FLOW.src_addr, i, w) for i, w in enumerate(weights)]
    wrr = WeightedRoundRobin()
    wrr.update(dests)
    period = sum(weights) // math.gcd(*(w for w in weights if w > 0))
    seq = []
    for _ in range(period):
        pick = wrr.schedule(dests, _FLOW, 0.0)
        if pick is None:  # cannot happen with a weight > 0; keeps the loop finite
            break
        seq.append(pick.port)
    return tuple(seq)
