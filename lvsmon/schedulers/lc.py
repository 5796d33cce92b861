"""Least-connection family: lc (ip_vs_lc.c), wlc (ip_vs_wlc.c), sed (ip_vs_sed.c)
and nq (ip_vs_nq.c).

lc and wlc rank destinations by ip_vs_dest_conn_overhead() = (active << 8) +
inactive; sed and nq by active + 1 alone (inactive connections ignored).
Weighted comparisons are cross-multiplied (h1*w2 > h2*w1, no division) and
strict, so ties go to the first in list order (the newest). All skip
overloaded destinations; a weight-0 one can never win a weighted comparison.
Per decision O(n), as in the kernel.
"""

from __future__ import annotations

from collections.abc import Sequence

from lvsmon.schedulers.base import Dest, Flow, Scheduler, conn_overhead, usable


def weighted_least_connection(dests: Sequence[Dest]) -> Dest | None:
    """ip_vs_wlc_schedule(), also __ip_vs_lblc_schedule() / __ip_vs_lblcr_schedule().

    The first usable destination seeds the search; after it only the overload
    flag is checked, since weight 0 loses every `loh * w > doh * w_least` test.
    """
    least: Dest | None = None
    loh = 0
    for dest in dests:
        if least is None:
            if usable(dest):
                least, loh = dest, conn_overhead(dest)
            continue
        if dest.overloaded:
            continue
        doh = conn_overhead(dest)
        if loh * dest.weight > doh * least.weight:
            least, loh = dest, doh
    return least


class LeastConnection(Scheduler):
    """lc: the least (active << 8) + inactive among usable servers; weights only gate."""

    name = "lc"

    def schedule(self, dests: Sequence[Dest], flow: Flow, now: float) -> Dest | None:
        least: Dest | None = None
        loh = 0
        for dest in dests:
            if not usable(dest):
                continue
            doh = conn_overhead(dest)
            if least is None or doh < loh:
                least, loh = dest, doh
        return least


class WeightedLeastConnection(Scheduler):
    """wlc: the least ((active << 8) + inactive) / weight."""

    name = "wlc"

    def schedule(self, dests: Sequence[Dest], flow: Flow, now: float) -> Dest | None:
        return weighted_least_connection(dests)


class ShortestExpectedDelay(Scheduler):
    """sed: the least (active + 1) / weight; inactive connections do not count."""

    name = "sed"

    def schedule(self, dests: Sequence[Dest], flow: Flow, now: float) -> Dest | None:
        least: Dest | None = None
        loh = 0
        for dest in dests:
            if least is None:
                if usable(dest):
                    least, loh = dest, dest.active + 1
                continue
            if dest.overloaded:
                continue
            doh = dest.active + 1
            if loh * dest.weight > doh * least.weight:
                least, loh = dest, doh
        return least


class NeverQueue(Scheduler):
    """nq: the first usable server in list order with no active connection,
    whatever its weight; otherwise as sed, the least (active + 1) / weight."""

    name = "nq"

    def schedule(self, dests: Sequence[Dest], flow: Flow, now: float) -> Dest | None:
        least: Dest | None = None
        loh = 0
        for dest in dests:
            if not usable(dest):
                continue
            if dest.active == 0:
                return dest
            doh = dest.active + 1
            if least is None or loh * dest.weight > doh * least.weight:
                least, loh = dest, doh
        return least
