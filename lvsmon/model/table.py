"""The frozen model of an LVS table: virtual servers and their real servers.

Identity follows IPVS (and kube-proxy's proxier): a virtual server is
(protocol, address, port) or a firewall mark; a real server is (address, port)
inside its virtual server. Everything else (weight, forwarding method,
scheduler, thresholds, ...) is an attribute, edited in place on reload.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from dataclasses import dataclass, field
from enum import StrEnum
from typing import NamedTuple

from lvsmon.model.adaptive import AdaptiveSpec
from lvsmon.model.health import HealthCheck

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

MAX_WEIGHT = 65535


class Protocol(StrEnum):
    TCP = "tcp"
    UDP = "udp"
    SCTP = "sctp"


class Forwarding(StrEnum):
    """How packets reach a real server (ipvsadm -m / -g / -i)."""

    NAT = "nat"  # masquerading
    DR = "dr"  # direct routing ("gatewaying")
    TUNNEL = "tunnel"  # IP-in-IP

    @property
    def ipvsadm_name(self) -> str:
        return {"nat": "Masq", "dr": "Route", "tunnel": "Tunnel"}[self.value]

    @property
    def ipvsadm_flag(self) -> str:
        return {"nat": "-m", "dr": "-g", "tunnel": "-i"}[self.value]


class ServiceKey(NamedTuple):
    """Identity of a virtual server: protocol/address/port, or fwmark (address "")."""

    protocol: str
    address: str
    port: int
    fwmark: int = 0

    def __str__(self) -> str:
        if self.fwmark:
            return f"FWM {self.fwmark}"
        return f"{self.protocol.upper()} {endpoint_label(self.address, self.port)}"


class DestKey(NamedTuple):
    """Identity of a real server inside its virtual server."""

    address: str
    port: int

    def __str__(self) -> str:
        return endpoint_label(self.address, self.port)


def endpoint_label(address: str | IPAddress, port: int) -> str:
    """`address:port`, with IPv6 addresses bracketed — the `real_server` label value."""
    text = str(address)
    return f"[{text}]:{port}" if ":" in text else f"{text}:{port}"


@dataclass(frozen=True, slots=True)
class Endpoint:
    address: IPAddress
    port: int

    def __str__(self) -> str:
        return endpoint_label(self.address, self.port)


@dataclass(frozen=True, slots=True)
class RealServer:
    address: IPAddress
    port: int
    weight: int = 1
    forwarding: Forwarding = Forwarding.NAT
    upper_threshold: int = 0  # ipvsadm -x: 0 = no limit
    lower_threshold: int = 0  # ipvsadm -y
    # the effective check (the virtual server's table with this one's laid over it);
    # compare=False: the data plane never sees it, so a changed check is no table edit
    health_check: HealthCheck | None = field(default=None, compare=False)
    # the identity, computed once: str() of an address is slow, and reconcile, the data
    # planes and every scrape ask for keys by the hundred thousand at 1,000 x 50
    _key: DestKey = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_key", DestKey(str(self.address), self.port))

    @property
    def key(self) -> DestKey:
        return self._key

    @property
    def label(self) -> str:
        return endpoint_label(self.address, self.port)


@dataclass(frozen=True, slots=True)
class VirtualServer:
    name: str
    address: IPAddress | None
    port: int
    protocol: Protocol = Protocol.TCP
    fwmark: int = 0
    scheduler: str = "wlc"
    scheduler_flags: frozenset[str] = frozenset()
    persistence_timeout: float = 0.0  # seconds; 0 = not persistent
    persistence_netmask: int = 32  # prefix length applied to the client address
    quiesce: bool = False  # on health failure: weight 0 (True) or remove (False)
    slow_start: float = field(default=0.0, compare=False)  # seconds of weight ramp on return
    sorry_server: Endpoint | None = None
    real_servers: tuple[RealServer, ...] = ()
    # [virtual_server.adaptive_weights]; compare=False: the data plane never sees it
    adaptive_weights: AdaptiveSpec | None = field(default=None, compare=False)
    # announce the address over BGP while this director can serve it (lvsmon.bgp)
    announce: bool = field(default=False, compare=False)

    _key: ServiceKey = field(init=False, repr=False, compare=False)  # computed once

    def __post_init__(self) -> None:
        key = (
            ServiceKey(self.protocol.value, "", 0, self.fwmark)
            if self.fwmark
            else ServiceKey(self.protocol.value, str(self.address), self.port)
        )
        object.__setattr__(self, "_key", key)

    @property
    def key(self) -> ServiceKey:
        return self._key

    @property
    def family(self) -> int:
        return 6 if isinstance(self.address, ipaddress.IPv6Address) else 4

    @property
    def persistent(self) -> bool:
        return self.persistence_timeout > 0

    def attributes(self) -> VirtualServer:
        """This virtual server without its real servers: what an edit compares."""
        return dataclasses.replace(self, real_servers=())

    def real_server(self, key: DestKey) -> RealServer | None:
        for rs in self.real_servers:
            if rs.key == key:
                return rs
        return None
