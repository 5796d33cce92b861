"""`[bgp]` as frozen values: how this director announces its VIPs (lvsmon.bgp)."""

from __future__ import annotations

from dataclasses import dataclass

from lvsmon.model.table import IPAddress


@dataclass(frozen=True, slots=True)
class Peer:
    name: str
    address: IPAddress
    remote_as: int
    local_address: IPAddress | None = None
    bfd: bool = False
    hold_time: float = 9.0  # seconds; keepalives every third
    connect_retry: float = 5.0  # seconds between attempts, and after an error (BFD down)

    @property
    def family(self) -> int:
        return self.address.version


@dataclass(frozen=True, slots=True)
class Drain:
    """How a draining director makes its routes less preferred before withdrawing."""

    period: float = 30.0
    med: int | None = 1000  # None: leave the MED alone
    prepend: int = 0
    communities: tuple[tuple[int, int], ...] = ((65535, 0),)  # GRACEFUL_SHUTDOWN


@dataclass(frozen=True, slots=True)
class Bfd:
    interval: float = 0.1
    multiplier: int = 3


@dataclass(frozen=True, slots=True)
class BgpSettings:
    local_as: int
    peers: tuple[Peer, ...]
    router_id: IPAddress | None = None
    routing_daemon: str = "bird"
    include_file: str = "/run/lvsmon/bird-lvsmon.conf"
    control_socket: str = "/run/bird/bird.ctl"
    liveness_interface: str = "lvsmon0"
    next_hop: IPAddress | None = None  # None: the session's own address ("self")
    communities: tuple[tuple[int, int], ...] = ()
    healthy_threshold: int = 1
    drain: Drain = Drain()
    bfd: Bfd = Bfd()
