"""What `lvsmon status` prints about BGP: the announcer's phase, its sessions, and per
VIP whether it is announced and why.

Pure: the announcer's summary (built by lvsmon.bgp.announcer, carried in /status as
plain JSON) and the per-VIP rows the status page shows (/status.json "bgp") in,
text lines out, as lvsmon.ha.status does for the failover groups.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

# what each phase means for the routes, after its name
PHASE_NOTES = {
    "draining": "routes less preferred, withdrawn when bgp.drain.period ends",
    "withdrawn": "nothing announced",
}


@dataclass(frozen=True, slots=True)
class AnnouncerSummary:
    phase: str  # active, draining, withdrawn (lvsmon.bgp.announcer.Phase)
    phase_since: float  # Unix time
    routing_daemon: str
    routing_daemon_up: bool  # answered lvsmon's last request
    # per peer: name, address, state (RFC 4271, lower case; down: not running)
    sessions: list[dict[str, str]] = field(default_factory=list)
    errors: int = 0
    last_error: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_json(data: Mapping[str, Any]) -> AnnouncerSummary:
        return AnnouncerSummary(**data)


def render(
    summary: AnnouncerSummary | None, rows: Sequence[Mapping[str, Any]], now: float
) -> list[str]:
    """Lines for `lvsmon status`: the phase and since when, each peer's session, then each
    VIP's prefix, state (announced, draining, withdrawn) and why."""
    lines = []
    if summary is not None:
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(summary.phase_since))
        answering = "answering" if summary.routing_daemon_up else "not answering"
        note = PHASE_NOTES.get(summary.phase)
        lines.append(
            f"BGP via {summary.routing_daemon} ({answering}): {summary.phase.upper()} "
            f"since {since}, {max(0.0, now - summary.phase_since):.0f}s"
            + (f" ({note})" if note else "")
        )
        for s in summary.sessions:
            address = f" {s['address']}" if s.get("address") else ""
            lines.append(f"  peer {s['name']}{address}: {s['state']}")
        if summary.last_error:
            lines.append(f"  last error ({summary.errors} in all): {summary.last_error}")
    else:
        lines.append("BGP")
    for row in rows:
        lines.append(f"  {row['prefix']} {row['state']}: {row['why']}")
    if not rows:
        lines.append("  no VIP to announce (no virtual server has announce = true)")
    return lines
