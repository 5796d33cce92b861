"""Power of two choices (net/netfilter/ipvs/ip_vs_twos.c, Linux 6.2+)."""

from __future__ import annotations

from collections.abc import Sequence

from lvsmon.schedulers.base import Dest, Flow, Scheduler, conn_overhead, usable


class PowerOfTwoChoices(Scheduler):
    """twos: draw two servers at random, each with probability proportional to its
    weight, and take the second only if its overhead/weight is strictly lower.

    As in the kernel, each draw is r = rand % (total + 1) walked down the usable
    servers in list order (r -= weight, pick at r <= 0), so the first server
    has one extra chance in total + 1. Overhead is ip_vs_dest_conn_overhead().
    Draws come from `self.rng` (the kernel uses get_random_u32()). O(n).
    """

    name = "twos"

    def schedule(self, dests: Sequence[Dest], flow: Flow, now: float) -> Dest | None:
        total = sum(d.weight for d in dests if usable(d))
        if not total:
            return None
        total += 1  # draws are inclusive of 0 and total
        r1 = self.rng.getrandbits(32) % total
        r2 = self.rng.getrandbits(32) % total
        choice1: Dest | None = None
        choice2: Dest | None = None
        for dest in dests:
            if not usable(dest):
                continue
            r1 -= dest.weight
            r2 -= dest.weight
            if r1 <= 0 and choice1 is None:
                choice1 = dest
            if r2 <= 0 and choice2 is None:
                choice2 = dest
            if choice1 is not None and choice2 is not None:
                break
        assert choice1 is not None and choice2 is not None  # r <= sum of weights
        lhs = _s32(choice2.weight * conn_overhead(choice1))
        rhs = _s32(choice1.weight * conn_overhead(choice2))
        return choice2 if lhs > rhs else choice1


def _s32(value: int) -> int:
    """The kernel multiplies these as C ints (no s64 cast, unlike wlc), which wraps
    once weight * ((active << 8) + inactive) passes 2**31; mirror that."""
    return ((value + 0x80000000) & 0xFFFFFFFF) - 0x80000000
