"""IPVS scheduling algorithms, pure and kernel-exact. `create()` is the factory."""

from __future__ import annotations

import random

from lvsmon.schedulers.base import Dest, Flow, Scheduler, conn_overhead, usable
from lvsmon.schedulers.failover import Overflow, WeightedFailover
from lvsmon.schedulers.hashing import DestinationHashing, MaglevHashing, SourceHashing
from lvsmon.schedulers.lc import (
    LeastConnection,
    NeverQueue,
    ShortestExpectedDelay,
    WeightedLeastConnection,
)
from lvsmon.schedulers.locality import (
    LocalityBasedLeastConnection,
    LocalityBasedLeastConnectionReplicated,
)
from lvsmon.schedulers.rr import RoundRobin, WeightedRoundRobin
from lvsmon.schedulers.twos import PowerOfTwoChoices

SCHEDULERS: dict[str, type[Scheduler]] = {
    cls.name: cls
    for cls in (
        RoundRobin,
        WeightedRoundRobin,
        LeastConnection,
        WeightedLeastConnection,
        LocalityBasedLeastConnection,
        LocalityBasedLeastConnectionReplicated,
        DestinationHashing,
        SourceHashing,
        ShortestExpectedDelay,
        NeverQueue,
        MaglevHashing,
        WeightedFailover,
        Overflow,
        PowerOfTwoChoices,
    )
}

# Every scheduler Linux IPVS has; the config accepts these names and the data
# plane decides which it can run (see `available()`).
IPVS_SCHEDULERS = (
    "rr",
    "wrr",
    "lc",
    "wlc",
    "lblc",
    "lblcr",
    "dh",
    "sh",
    "sed",
    "nq",
    "mh",
    "fo",
    "ovf",
    "twos",
)

# Per-service scheduler flags (ipvsadm -b), from the classes that accept them.
SCHEDULER_FLAGS: dict[str, set[str]] = {
    name: set(cls.flags_allowed) for name, cls in SCHEDULERS.items() if cls.flags_allowed
}


def available() -> frozenset[str]:
    """Scheduler names this package implements (what the proxy data plane can run)."""
    return frozenset(SCHEDULERS)


def create(
    name: str, flags: frozenset[str] = frozenset(), rng: random.Random | None = None
) -> Scheduler:
    """A fresh scheduler for one virtual server; ValueError for an unknown name or flag."""
    try:
        cls = SCHEDULERS[name]
    except KeyError:
        raise ValueError(f"unknown scheduler {name!r}") from None
    return cls(flags, rng)


__all__ = [
    "IPVS_SCHEDULERS",
    "SCHEDULERS",
    "SCHEDULER_FLAGS",
    "Dest",
    "Flow",
    "Scheduler",
    "available",
    "conn_overhead",
    "create",
    "usable",
]
