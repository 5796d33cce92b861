"""The scheduler seam, shaped like the kernel's (include/net/ip_vs.h).

A data plane keeps one `Dest` per real server of a virtual server, in the
kernel's list order (newest first: IPVS adds destinations at the list head),
and one `Scheduler` instance per virtual server. It calls `update()` after any
add, delete or weight change and `schedule()` for every new connection that is
not pinned by persistence. Schedulers are pure: no clock reads (`now` is
passed in), no I/O; randomised ones own a seedable `random.Random`.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import ClassVar, NamedTuple

from lvsmon.model import IPAddress, endpoint_label


class Flow(NamedTuple):
    """What a scheduler may look at of a new connection."""

    src_addr: IPAddress
    src_port: int
    dst_addr: IPAddress
    dst_port: int
    protocol: str = "tcp"


class Dest:
    """A real server as the scheduler sees it: weight, flags and connection counts.

    Mirrors struct ip_vs_dest. `active`/`inactive` follow IPVS accounting: a
    TCP connection is active while ESTABLISHED and inactive after a close was
    seen until it expires; UDP connections are always inactive.
    """

    __slots__ = (
        "active",
        "address",
        "inactive",
        "label",
        "last_weight",
        "lower_threshold",
        "overloaded",
        "persistent",
        "port",
        "upper_threshold",
        "weight",
    )

    def __init__(
        self,
        address: IPAddress,
        port: int,
        weight: int = 1,
        upper_threshold: int = 0,
        lower_threshold: int = 0,
    ) -> None:
        self.address = address
        self.port = port
        self.label = endpoint_label(address, port)
        self.weight = weight
        # mh builds its table from the last non-zero weight (ip_vs_mh.c)
        self.last_weight = weight
        self.upper_threshold = upper_threshold
        self.lower_threshold = lower_threshold
        self.active = 0
        self.inactive = 0
        self.persistent = 0
        self.overloaded = False

    def __repr__(self) -> str:
        return f"Dest({self.label} w={self.weight} a={self.active} i={self.inactive})"

    def set_weight(self, weight: int) -> None:
        self.weight = weight
        if weight > 0:
            self.last_weight = weight

    @property
    def key(self) -> tuple[IPAddress, int]:
        """Identity inside its service. IPVS finds a deleted destination again by
        it (the dest trash), so per-destination scheduler state keyed by it
        survives a delete and re-add, as it does in the kernel."""
        return (self.address, self.port)

    @property
    def total_connections(self) -> int:
        return self.active + self.inactive

    def refresh_overload(self) -> None:
        """Set/clear the overload flag as ip_vs_bind_dest/ip_vs_unbind_dest do.

        Overloaded once active+inactive reaches the upper threshold; cleared
        only when it falls below the lower threshold (conns < lower), or, if
        the lower threshold is 0, below 3/4 of the upper one (conns * 4 <
        upper * 3). E.g. upper 4: still overloaded at 3, cleared at 2.
        """
        if not self.upper_threshold:
            self.overloaded = False
            return
        conns = self.total_connections
        if conns >= self.upper_threshold:
            self.overloaded = True
        elif self.overloaded:
            if self.lower_threshold:
                below = conns < self.lower_threshold
            else:
                below = conns * 4 < self.upper_threshold * 3
            if below:
                self.overloaded = False


def conn_overhead(dest: Dest) -> int:
    """ip_vs_dest_conn_overhead(): an active connection costs 256 inactive ones."""
    return (dest.active << 8) + dest.inactive


def usable(dest: Dest) -> bool:
    return dest.weight > 0 and not dest.overloaded


class Scheduler(ABC):
    """One instance per virtual server; holds the scheduler's private state."""

    name: ClassVar[str]
    flags_allowed: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, flags: frozenset[str] = frozenset(), rng: random.Random | None = None):
        unknown = flags - self.flags_allowed
        if unknown:
            raise ValueError(f"scheduler {self.name!r} has no flag {sorted(unknown)[0]!r}")
        self.flags = flags
        self.rng = rng or random.Random()

    def update(self, dests: Sequence[Dest]) -> None:  # noqa: B027 - optional hook
        """Called after any destination add/delete/weight change, once per change as
        the kernel's add_dest/del_dest/upd_dest hooks are (wrr's sequence depends
        on it), with `dests` in list order after the change."""

    @abstractmethod
    def schedule(self, dests: Sequence[Dest], flow: Flow, now: float) -> Dest | None:
        """Pick a destination for a new connection, or None (no destination available)."""
