"""Per-decision cost of every scheduler, and how it grows with the number of real servers.

For each scheduler: microseconds per decision with 8 and with 512 real servers
(weights 1..4, a few connections each, flows from varied client addresses), and
`growth=` = cost(512) / cost(8). The anchor is the same scheduler with the
small table in the same run: O(1) schedulers stay near 1; the kernel's O(n)
walks (lc, wlc, sed, nq, fo, ovf, and the list-order ones) grow with n, as in
ip_vs_*.c. The last line is the worst growth among the hashing schedulers
(sh, dh, mh), which must be O(1): `ratio_hash_growth=`.
"""

from __future__ import annotations

import ipaddress
import random
import time

from lvsmon.schedulers import IPVS_SCHEDULERS, Dest, Flow, create

DECISIONS = 20_000


def dests(n: int) -> list[Dest]:
    out: list[Dest] = []
    for i in range(n):
        d = Dest(ipaddress.IPv4Address(0x0A000000 + i + 1), 80, weight=1 + i % 4)
        d.active, d.inactive = i % 5, i % 7
        out.insert(0, d)  # IPVS lists the newest first
    return out


def per_decision(name: str, n: int) -> float:
    table = dests(n)
    sched = create(name, rng=random.Random(1))
    sched.update(table)
    rnd = random.Random(2)
    flows = [
        Flow(
            ipaddress.IPv4Address(rnd.getrandbits(32)),
            rnd.randrange(1024, 65535),
            ipaddress.IPv4Address("192.0.2.1"),
            80,
        )
        for _ in range(1024)
    ]
    start = time.perf_counter()
    for i in range(DECISIONS):
        sched.schedule(table, flows[i & 1023], i * 0.001)
    return (time.perf_counter() - start) / DECISIONS * 1e6


def main() -> None:
    worst_hash = 0.0
    print(f"{'scheduler':<8} {'us@8':>8} {'us@512':>8} {'growth':>8}")
    for name in IPVS_SCHEDULERS:
        small, large = per_decision(name, 8), per_decision(name, 512)
        growth = large / small
        if name in ("sh", "dh", "mh"):
            worst_hash = max(worst_hash, growth)
        print(f"{name:<8} {small:>8.2f} {large:>8.2f} {growth:>8.2f}", flush=True)
    print(f"ratio_hash_growth={worst_hash:.2f}")


if __name__ == "__main__":
    main()
