"""Weight-ordered failover: fo (ip_vs_fo.c) and ovf (ip_vs_ovf.c). Per decision O(n)."""

from __future__ import annotations

from collections.abc import Sequence

from lvsmon.schedulers.base import Dest, Flow, Scheduler


class WeightedFailover(Scheduler):
    """fo: every new connection to the non-overloaded server with the highest
    weight (> 0); ties go to the first in list order (strict `>`)."""

    name = "fo"

    def schedule(self, dests: Sequence[Dest], flow: Flow, now: float) -> Dest | None:
        best: Dest | None = None
        hw = 0
        for dest in dests:
            if not dest.overloaded and dest.weight > hw:
                best, hw = dest, dest.weight
        return best


class Overflow(Scheduler):
    """ovf: the highest-weight server (first in list order on ties) among those not
    overloaded, of weight > 0 and with active <= weight; so each takes weight + 1
    active connections before traffic overflows to the next, then none is left."""

    name = "ovf"

    def schedule(self, dests: Sequence[Dest], flow: Flow, now: float) -> Dest | None:
        best: Dest | None = None
        hw = 0
        for dest in dests:
            w = dest.weight
            if dest.overloaded or dest.active > w or w == 0:
                continue
            if best is None or w > hw:
                best, hw = dest, w
        return best
