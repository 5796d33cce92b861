"""A failover group (one VRRPv3 virtual router) as frozen values.

The addresses it moves together (public VIPs and the private-side NAT gateway, on
any interfaces), how it advertises, and what lowers its priority. Read from
`[[failover_group]]` by lvsmon.config.failover.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lvsmon.model.table import IPAddress


@dataclass(frozen=True, slots=True)
class GroupAddress:
    """One address the group moves: added on the master, announced, removed on backup."""

    address: IPAddress
    prefixlen: int
    interface: str

    def __str__(self) -> str:
        return f"{self.address}/{self.prefixlen} dev {self.interface}"


@dataclass(frozen=True, slots=True)
class TrackInterface:
    interface: str
    weight: int  # added to the priority while the interface is down; 0 = go to fault


@dataclass(frozen=True, slots=True)
class TrackRealServers:
    """Lower the priority when fewer than `min_fraction` of the real servers are up."""

    min_fraction: float
    weight: int
    virtual_servers: tuple[str, ...] = ()  # empty: every virtual server


@dataclass(frozen=True, slots=True)
class Hooks:
    """Programs run on entering a state: argv only (no shell), see hooks.py for the env."""

    on_master: tuple[str, ...] = ()
    on_backup: tuple[str, ...] = ()
    on_fault: tuple[str, ...] = ()
    on_stop: tuple[str, ...] = ()
    timeout: float = 10.0

    def for_state(self, state: str) -> tuple[str, ...]:
        return {
            "master": self.on_master,
            "backup": self.on_backup,
            "fault": self.on_fault,
            "initialize": self.on_stop,
        }.get(state, ())


@dataclass(frozen=True, slots=True)
class FailoverGroup:
    name: str
    vrid: int
    interface: str
    family: int  # 4 or 6: the family the adverts use and list
    addresses: tuple[GroupAddress, ...]
    priority: int = 100
    advert_interval: float = 1.0  # seconds, a whole number of centiseconds
    preempt: bool = True
    preempt_delay: float = 0.0
    unicast_peers: tuple[IPAddress, ...] = ()
    garp_repeat: int = 5
    garp_interval: float = 0.01
    garp_refresh: float = 10.0  # 0 = no periodic refresh
    handover_timeout: float = 0.0  # 0 = derived: max(1 s, 4 x advert_interval)
    handover_forward: float = 0.0  # seconds; 0 = off (lvsmon.ha.handover)
    track_interfaces: tuple[TrackInterface, ...] = ()
    track_real_servers: TrackRealServers | None = None
    hooks: Hooks = field(default_factory=Hooks)
    auth_key: bytes = b""  # empty: plain VRRPv3; else HMAC-SHA256 (lvsmon peers only)

    @property
    def advertised(self) -> tuple[IPAddress, ...]:
        """The addresses listed in adverts: those of the advert family, sorted."""
        return tuple(sorted(a.address for a in self.addresses if a.address.version == self.family))

    @property
    def effective_handover_timeout(self) -> float:
        return self.handover_timeout or max(1.0, 4 * self.advert_interval)

    @property
    def interfaces(self) -> tuple[str, ...]:
        names = [self.interface, *(a.interface for a in self.addresses)]
        return tuple(dict.fromkeys(names))
