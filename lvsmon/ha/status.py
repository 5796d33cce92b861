"""What the VRRP process reports about each group: for metrics and `lvsmon status`.

Plain data that pickles across the process boundary and round-trips JSON.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class GroupStatus:
    name: str
    vrid: int
    interface: str
    state: str  # initialize, backup, master, fault
    priority: int  # advertised now (0 while handing over)
    configured_priority: int
    source: str  # our own address in the adverts
    master: str  # the master's address as far as we know ("" = none heard)
    peer: str  # the last valid advert's source
    peer_priority: int
    peer_last_advert: float  # Unix time; 0 = never
    since: float  # Unix time of the last transition
    adverts_sent: int = 0
    adverts_received: int = 0
    rejected: dict[str, int] = field(default_factory=dict)  # reason -> count
    transitions: dict[str, int] = field(default_factory=dict)  # state entered -> count
    forwarding_to: str = ""  # handover_forward: the old master our unknown segments go to

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_json(data: dict[str, Any]) -> GroupStatus:
        return GroupStatus(**data)


def render(groups: Sequence[GroupStatus], now: float) -> list[str]:
    """Lines for `lvsmon status`: each group's role, its peer and the last advert's age."""
    lines = []
    for g in groups:
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(g.since))
        prio = f"priority {g.priority}"
        if g.priority != g.configured_priority:
            prio += f" (configured {g.configured_priority})"
        lines.append(
            f"Failover group {g.name} (vrid {g.vrid} on {g.interface}): "
            f"{g.state.upper()} since {since}, {prio}"
        )
        if g.peer:
            age = max(0.0, now - g.peer_last_advert)
            lines.append(f"  peer {g.peer} priority {g.peer_priority}, last advert {age:.1f}s ago")
        else:
            lines.append("  peer: no advert heard")
        rejected = sum(g.rejected.values())
        if g.forwarding_to:
            lines.append(f"  forwarding connections it never saw to {g.forwarding_to} (handover)")
        lines.append(
            f"  adverts sent {g.adverts_sent}, received {g.adverts_received}, "
            f"rejected {rejected}"
            + (
                f" ({', '.join(f'{k} {v}' for k, v in sorted(g.rejected.items()))})"
                if rejected
                else ""
            )
        )
    return lines
