"""What lowers a group's priority, or sends it to FAULT. Pure, plus a cheap link probe.

The advert interface is tracked implicitly (down = FAULT, as keepalived).
Real-server health arrives from the daemon as counts per virtual server; until
the first report nothing is lowered, so a starting checker cannot cause a
failover.
"""

from __future__ import annotations

import fcntl
import socket
import struct
from collections.abc import Collection, Mapping

from lvsmon.model.failover import FailoverGroup

SIOCGIFFLAGS = 0x8913
IFF_UP = 0x1
IFF_RUNNING = 0x40  # carrier (operstate up)

Health = Mapping[str, tuple[int, int]]  # virtual server -> (real servers up, configured)


def evaluate(group: FailoverGroup, down: Collection[str], health: Health) -> tuple[int, bool]:
    """(effective priority 1..255, fault) for the group given the links that are down."""
    priority, fault = group.priority, group.interface in down
    for track in group.track_interfaces:
        if track.interface in down:
            if track.weight:
                priority += track.weight
            else:
                fault = True
    rule = group.track_real_servers
    if rule is not None and health:
        names = rule.virtual_servers or tuple(health)
        up = sum(health[n][0] for n in names if n in health)
        total = sum(health[n][1] for n in names if n in health)
        if total and up / total < rule.min_fraction:
            priority += rule.weight
    if group.priority == 255:
        return 255, fault
    return max(1, min(254, priority)), fault


def tracked_interfaces(group: FailoverGroup) -> tuple[str, ...]:
    return tuple(dict.fromkeys([group.interface, *(t.interface for t in group.track_interfaces)]))


class LinkProbe:
    """Interface up-and-running via SIOCGIFFLAGS: microseconds, no netlink round trip."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)

    def is_up(self, interface: str) -> bool:
        request = struct.pack("16sH14x", interface.encode(), 0)
        try:
            reply = fcntl.ioctl(self._sock.fileno(), SIOCGIFFLAGS, request)
        except OSError:  # no such interface: as good as down
            return False
        flags: int = struct.unpack_from("16sH", reply)[1]
        return bool(flags & IFF_UP and flags & IFF_RUNNING)

    def down(self, interfaces: Collection[str]) -> frozenset[str]:
        return frozenset(i for i in interfaces if not self.is_up(i))

    def close(self) -> None:
        self._sock.close()
