"""Locality-based least connection: lblc (ip_vs_lblc.c) and lblcr, with replication
(ip_vs_lblcr.c).

Both remember, per destination address (the VIP, or the original destination
for fwmark/cache services), which server(s) took it, in a 1024-bucket table
(hash_32 of the address) that the kernel garbage-collects from a 60 s timer:
every 30th tick (when no partial pass ran in between) a full pass drops
entries unused for `expiration` (sysctl lblc[r]_expiration, 24 h); any other
tick with more than 16384 entries drops entries unused for 6 min, bucket by
bucket from a rover, until (entries - 16384) * 4/3 (at most 8192) are gone.
Here the ticks are replayed from the `now` of each decision, the first one
60 s after the first decision (the kernel arms it at service creation), with
runs of idle ticks skipped arithmetically.

A remembered server that was deleted counts as unavailable (the kernel's
IP_VS_DEST_F_AVAILABLE) until a server with the same address and port is
added again: the kernel revives the same ip_vs_dest from its trash, so the
memory holds again. Lookups are O(1); a reschedule is O(n) (wlc over all).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Generic, TypeVar

from lvsmon.model import IPAddress
from lvsmon.schedulers.base import Dest, Flow, Scheduler, conn_overhead
from lvsmon.schedulers.khash import addr_fold, hash_32
from lvsmon.schedulers.lc import weighted_least_connection

CHECK_EXPIRE_INTERVAL = 60.0
ENTRY_TIMEOUT = 6 * 60.0
DEFAULT_EXPIRATION = 24 * 60 * 60.0
COUNT_FOR_FULL_EXPIRATION = 30
TAB_BITS = 10
TAB_SIZE = 1 << TAB_BITS
TAB_MASK = TAB_SIZE - 1
MAX_SIZE = TAB_SIZE * 16

_Key = tuple[IPAddress, int]


def is_overloaded(dest: Dest, dests: Sequence[Dest]) -> bool:
    """The lblc/lblcr notion: more active connections than its weight while some
    server has fewer than half its weight. (The overload flag is not looked at.)"""
    if dest.active > dest.weight:
        return any(d.active * 2 < d.weight for d in dests)
    return False


class _Entry:
    __slots__ = ("addr", "lastuse")

    def __init__(self, addr: IPAddress, lastuse: float) -> None:
        self.addr = addr
        self.lastuse = lastuse


_E = TypeVar("_E", bound=_Entry)


class _LocalityScheduler(Scheduler, Generic[_E]):
    """The per-address table, its garbage collection and the live-server map."""

    def __init__(self, flags: frozenset[str] = frozenset(), rng: random.Random | None = None):
        super().__init__(flags, rng)
        self.expiration = DEFAULT_EXPIRATION
        self._buckets: list[dict[IPAddress, _E]] = [{} for _ in range(TAB_SIZE)]
        self._entries = 0
        self._rover = 0
        self._counter = 1
        self._next_tick: float | None = None
        self._live: dict[_Key, Dest] = {}
        # The latest Dest object seen per key: what a remembered, since deleted
        # server looks like (its ip_vs_dest lingers in the kernel's trash).
        self._seen: dict[_Key, Dest] = {}
        self._updated = False

    def __len__(self) -> int:
        """Entries in the table."""
        return self._entries

    def update(self, dests: Sequence[Dest]) -> None:
        self._updated = True
        self._live = {d.key: d for d in dests}
        self._seen.update(self._live)

    def _prepare(self, dests: Sequence[Dest], now: float) -> None:
        if not self._updated:
            self.update(dests)
        self._run_timer(now)

    def _get(self, addr: IPAddress) -> _E | None:
        return self._buckets[hash_32(addr_fold(addr), TAB_BITS)].get(addr)

    def _add(self, entry: _E) -> None:
        self._buckets[hash_32(addr_fold(entry.addr), TAB_BITS)][entry.addr] = entry
        self._entries += 1

    def _delete(self, entry: _E) -> None:
        del self._buckets[hash_32(addr_fold(entry.addr), TAB_BITS)][entry.addr]
        self._entries -= 1

    def _run_timer(self, now: float) -> None:
        """Replay the periodic timer (ip_vs_lblc[r]_check_expire) up to `now`."""
        if self._next_tick is None:
            self._next_tick = now + CHECK_EXPIRE_INTERVAL
            return
        while self._next_tick <= now:
            tick = self._next_tick
            if self._counter % COUNT_FOR_FULL_EXPIRATION == 0:
                if self._entries <= MAX_SIZE:
                    # Only counting ticks until the next full pass, and full passes
                    # delete growing sets: the last one due stands for them all.
                    period = COUNT_FOR_FULL_EXPIRATION * CHECK_EXPIRE_INTERVAL
                    tick += ((now - tick) // period) * period
                self._expire(tick, self.expiration, None)
                self._counter = 1
            elif self._entries <= MAX_SIZE:
                ticks = int((now - tick) // CHECK_EXPIRE_INTERVAL) + 1
                skip = min(ticks, COUNT_FOR_FULL_EXPIRATION - self._counter)
                self._counter += skip
                self._next_tick = tick + skip * CHECK_EXPIRE_INTERVAL
                continue
            else:
                goal = min((self._entries - MAX_SIZE) * 4 // 3, MAX_SIZE // 2)
                self._expire(tick, ENTRY_TIMEOUT, goal)
            self._next_tick = tick + CHECK_EXPIRE_INTERVAL

    def _expire(self, now: float, timeout: float, goal: int | None) -> None:
        """Walk the buckets from the rover, dropping entries unused for `timeout`;
        a partial pass (`goal`) stops after the bucket where the goal is met."""
        j = self._rover
        for _ in range(TAB_SIZE):
            j = (j + 1) & TAB_MASK
            bucket = self._buckets[j]
            if bucket:
                for entry in [e for e in bucket.values() if now >= e.lastuse + timeout]:
                    self._delete(entry)
                    if goal is not None:
                        goal -= 1
            if goal is not None and goal <= 0:
                break
        self._rover = j


class _LblcEntry(_Entry):
    __slots__ = ("dest",)

    def __init__(self, addr: IPAddress, lastuse: float, dest: _Key) -> None:
        super().__init__(addr, lastuse)
        self.dest = dest


class LocalityBasedLeastConnection(_LocalityScheduler[_LblcEntry]):
    """lblc: a destination address sticks to the server that took it, unless that
    server is gone, has weight 0, or has more active connections than its
    weight while another has under half its weight (then, and for a new
    address, the wlc choice over all servers is taken and remembered)."""

    name = "lblc"

    def schedule(self, dests: Sequence[Dest], flow: Flow, now: float) -> Dest | None:
        self._prepare(dests, now)
        en = self._get(flow.dst_addr)
        if en is not None:
            en.lastuse = now
            dest = self._live.get(en.dest)
            if dest is not None and dest.weight > 0 and not is_overloaded(dest, dests):
                return dest
        dest = weighted_least_connection(dests)
        if dest is None:
            return None
        # ip_vs_lblc_new(): keep the entry if it already names this server
        if en is None or en.dest != dest.key:
            if en is not None:
                self._delete(en)
            self._add(_LblcEntry(flow.dst_addr, now, dest.key))
        return dest


class _LblcrEntry(_Entry):
    __slots__ = ("lastmod", "members")

    def __init__(self, addr: IPAddress, lastuse: float, dest: _Key) -> None:
        super().__init__(addr, lastuse)
        self.members: list[_Key] = [dest]  # newest first (list_add_rcu)
        self.lastmod = lastuse


class LocalityBasedLeastConnectionReplicated(_LocalityScheduler[_LblcrEntry]):
    """lblcr: a destination address maps to a set of servers; the least loaded
    (wlc) available member is used. If there is none, or it is overloaded in
    the lblc sense, the wlc choice over all servers is used and added to the
    set. A set of more than one that has not changed for `expiration` loses
    its most loaded member (at most one per decision)."""

    name = "lblcr"

    def _resolve(self, member: _Key) -> tuple[Dest, bool]:
        """A set member as it is now, and whether it is still in the service."""
        live = self._live.get(member)
        return (self._seen[member], False) if live is None else (live, True)

    def _set_min(self, en: _LblcrEntry) -> Dest | None:
        """ip_vs_dest_set_min(): wlc among available, non-overloaded members."""
        least: Dest | None = None
        loh = 0
        for member in en.members:
            dest, available = self._resolve(member)
            if dest.overloaded:
                continue
            if least is None:
                if dest.weight > 0 and available:
                    least, loh = dest, conn_overhead(dest)
                continue
            doh = conn_overhead(dest)
            if loh * dest.weight > doh * least.weight and available:
                least, loh = dest, doh
        return least

    def _set_max(self, en: _LblcrEntry) -> Dest | None:
        """ip_vs_dest_set_max(): the most loaded member of weight > 0 (deleted and
        overloaded ones included)."""
        most: Dest | None = None
        moh = 0
        for member in en.members:
            dest, _ = self._resolve(member)
            if most is None:
                if dest.weight > 0:
                    most, moh = dest, conn_overhead(dest)
                continue
            doh = conn_overhead(dest)
            if moh * dest.weight < doh * most.weight and dest.weight > 0:
                most, moh = dest, doh
        return most

    def schedule(self, dests: Sequence[Dest], flow: Flow, now: float) -> Dest | None:
        self._prepare(dests, now)
        en = self._get(flow.dst_addr)
        if en is None:
            dest = weighted_least_connection(dests)
            if dest is not None:
                self._seen.setdefault(dest.key, dest)
                self._add(_LblcrEntry(flow.dst_addr, now, dest.key))
            return dest

        en.lastuse = now
        picked = self._set_min(en)
        if len(en.members) > 1 and now > en.lastmod + self.expiration:
            most = self._set_max(en)
            if most is not None:  # ip_vs_dest_set_erase(); may drop `picked`, still used
                en.members.remove(most.key)
                en.lastmod = now
        if picked is not None and not is_overloaded(picked, dests):
            return picked

        dest = weighted_least_connection(dests)
        if dest is None:
            return None
        if dest.key not in en.members:  # ip_vs_dest_set_insert(check)
            self._seen.setdefault(dest.key, dest)
            en.members.insert(0, dest.key)
            en.lastmod = now
        return dest

    def members(self, addr: IPAddress) -> list[Dest]:
        """The server set remembered for a destination address (newest first)."""
        en = self._get(addr)
        return [] if en is None else [self._resolve(m)[0] for m in en.members]
