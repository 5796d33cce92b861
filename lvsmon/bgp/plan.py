"""What the routing daemon should announce now: a plain value every daemon renders.

The seam toward a routing daemon (`RoutingDaemon`) takes a `Plan` and nothing
else, so BIRD (lvsmon.bgp.bird) and a later FRR speak the same language.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Protocol

from lvsmon.model import IPAddress
from lvsmon.model.bgp import BgpSettings, Peer


@dataclass(frozen=True, slots=True)
class Plan:
    settings: BgpSettings
    vips: tuple[IPAddress, ...] = ()  # sorted; each announced as a host route
    draining: bool = False  # routes made less preferred (bgp.drain)

    def of_family(self, family: int) -> tuple[IPAddress, ...]:
        return tuple(v for v in self.vips if v.version == family)


def plan_of(settings: BgpSettings, vips: set[IPAddress], draining: bool = False) -> Plan:
    return Plan(settings, tuple(sorted(vips, key=lambda a: (a.version, a))), draining)


@dataclass(frozen=True, slots=True)
class Session:
    """One BGP session as the routing daemon reports it."""

    peer: str
    state: str  # RFC 4271 state, lower case: idle, connect, active, opensent, ...
    up: bool = field(default=False)


SESSION_STATES = ("idle", "connect", "active", "opensent", "openconfirm", "established", "down")


class RoutingDaemonError(Exception):
    """The routing daemon refused or could not be reached; the message says which."""


class RoutingDaemon(Protocol):
    """A routing daemon lvsmon drives: it owns only its fragment (or API objects)."""

    name: str

    async def apply(self, plan: Plan) -> None:
        """Make the daemon announce exactly `plan`, without touching its other routes."""

    async def sessions(self) -> tuple[Session, ...]:
        """The state of the BGP sessions to lvsmon's peers."""


def protocol_name(peer: Peer) -> str:
    """The routing daemon's name for a peer's session: lvsmon_<name>, [A-Za-z0-9_]."""
    return "lvsmon_" + re.sub(r"[^A-Za-z0-9_]", "_", peer.name)
