"""Round robin (net/netfilter/ipvs/ip_vs_rr.c) and weighted round robin (ip_vs_wrr.c)."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

from lvsmon.model import IPAddress
from lvsmon.schedulers.base import Dest, Flow, Scheduler, usable

_Key = tuple[IPAddress, int]


class RoundRobin(Scheduler):
    """rr: walk the list on from the destination chosen last, skipping weight-0 and
    overloaded ones; the one chosen last is tried last.

    The position is a destination, not an index (svc->sched_data is a list
    node), so adding a server at the list head does not move it; deleting the
    remembered server moves it to its predecessor, as ip_vs_rr_del_dest() does.
    Per decision O(1) plus the unusable servers skipped.
    """

    name = "rr"

    def __init__(self, flags: frozenset[str] = frozenset(), rng: random.Random | None = None):
        super().__init__(flags, rng)
        self._last: _Key | None = None  # None = the list head
        self._order: list[_Key] = []
        self._index: dict[_Key, int] = {}

    def update(self, dests: Sequence[Dest]) -> None:
        index = {d.key: i for i, d in enumerate(dests)}
        if self._last is not None and self._last not in index:
            # ip_vs_rr_del_dest: p->next->prev of the unlinked entry = its predecessor
            # (the nearest one still present, if several went at once)
            pos = self._index.get(self._last, 0)
            self._last = next((k for k in reversed(self._order[:pos]) if k in index), None)
        self._order = [d.key for d in dests]
        self._index = index

    def schedule(self, dests: Sequence[Dest], flow: Flow, now: float) -> Dest | None:
        n = len(dests)
        start = 0
        if self._last is not None:
            pos = self._index.get(self._last, -1)
            if not 0 <= pos < n or dests[pos].key != self._last:
                # update() was not called after a change: find it the slow way
                pos = next((i for i, d in enumerate(dests) if d.key == self._last), -1)
            start = pos + 1
        for step in range(n):
            dest = dests[(start + step) % n]
            if usable(dest):
                self._last = dest.key
                return dest
        return None


class WeightedRoundRobin(Scheduler):
    """wrr: passes over the list with a falling current weight `cw`; a pass picks, in
    list order from the current position, servers whose weight is >= cw.

    cw starts at mw = max weight - (gcd - 1) and falls by the gcd of the
    weights each time the walk wraps, back to mw below 1, so that over
    mw/gcd passes each server is picked weight/gcd times. Overloaded servers
    are skipped. Every add, delete or weight change (ip_vs_wrr_dest_changed)
    puts the position back at the list head and keeps cw (clamped to the new
    mw, or rounded to a multiple of gcd plus 1), so the sequence depends on
    the order of configuration changes: call `update()` after each one.
    Per decision O(n * mw / gcd) worst case, like the kernel.
    """

    name = "wrr"

    def __init__(self, flags: frozenset[str] = frozenset(), rng: random.Random | None = None):
        super().__init__(flags, rng)
        # ip_vs_wrr_init_svc on an empty service: head, di 1, mw 0, cw 0
        self._cl = -1  # index of the current dest; -1 = the list head
        self._cw = 0
        self._mw = 0
        self._di = 1
        self._updated = False

    def update(self, dests: Sequence[Dest]) -> None:
        weights = [d.weight for d in dests if d.weight > 0]
        self._updated = True
        self._cl = -1
        self._di = math.gcd(*weights) if weights else 1
        self._mw = max(weights, default=0) - (self._di - 1)
        if self._cw > self._mw or not self._cw:
            self._cw = self._mw
        elif self._di > 1:
            self._cw = (self._cw // self._di) * self._di + 1

    def schedule(self, dests: Sequence[Dest], flow: Flow, now: float) -> Dest | None:
        if not self._updated:  # as ip_vs_wrr_init_svc on a populated service
            self.update(dests)
        n = len(dests)
        if self._mw == 0:
            return None
        last = self._cl if self._cl < n else -1
        stop = -2  # none yet
        last_pass = restarted = False
        i = last
        while True:
            for j in range(i + 1, n):
                dest = dests[j]
                if not dest.overloaded and dest.weight >= self._cw:
                    self._cl = j
                    return dest
                if j == stop:
                    self._cl = j
                    return None
            i = -1  # wrapped to the head
            self._cw -= self._di
            if self._cw <= 0:
                self._cw = self._mw
                # all were tried for weight >= 1 already (or the walk began at the head)
                if last_pass or last == -1:
                    self._cl = -1
                    return None
                restarted = True
            last_pass = self._cw <= self._di
            if last_pass and restarted:
                # the first weight >= 1 pass only covered the servers after `last`
                stop = last
