"""The validated, frozen model of an LVS table: virtual servers and their real servers.

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
from typing import TYPE_CHECKING, NamedTuple

from lvsmon.health.check import HealthCheck
from lvsmon.weights.spec import AdaptiveSpec

if TYPE_CHECKING:  # lvsmon.ha.config reads through lvsmon.config, which imports this module
    from lvsmon.ha.config import FailoverGroup
    from lvsmon.webconfig import WebConfig

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

    @property
    def key(self) -> DestKey:
        return DestKey(str(self.address), self.port)

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

    @property
    def key(self) -> ServiceKey:
        if self.fwmark:
            return ServiceKey(self.protocol.value, "", 0, self.fwmark)
        return ServiceKey(self.protocol.value, str(self.address), self.port)

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


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Connection-entry timeouts, as `ipvsadm --set tcp tcpfin udp` (kernel defaults).

    tcp: idle ESTABLISHED connection; tcp_fin: how long a closed TCP connection
    still counts as inactive; udp: idle UDP flow."""

    tcp: float = 900.0
    tcp_fin: float = 120.0
    udp: float = 300.0


class SyncState(StrEnum):
    """Role of the IPVS connection-synchronisation daemon (ipvsadm --start-daemon)."""

    NONE = "none"
    MASTER = "master"  # the active director sends its connection table
    BACKUP = "backup"  # the standby receives it, so a takeover keeps connections


@dataclass(frozen=True, slots=True)
class SyncDaemon:
    state: SyncState = SyncState.NONE
    interface: str = ""  # multicast interface facing the peer director
    syncid: int = 0  # 0..255; 0 = accept any (backup) / none (master)
    follow: str = ""  # a failover group: its role decides the state (see for_role)

    def for_role(self, role: str) -> SyncDaemon:
        """The sync daemon to run while the followed failover group is in `role`: master
        sends the connection table; every other role (backup, fault, initialize, and no
        VRRP process at all) receives it, so this director holds the connections when
        it takes over later (keepalived's lvs_sync_daemon does the same)."""
        state = SyncState.MASTER if role == "master" else SyncState.BACKUP
        return SyncDaemon(state, self.interface, self.syncid)


@dataclass(frozen=True, slots=True)
class IpvsSysctls:
    """net.ipv4.vs.* set on start and reload. Defaults suit a director that drains:
    connections to a deleted real server fail fast instead of hanging, and
    persistence templates of a quiesced (weight 0) server expire so clients move."""

    expire_nodest_conn: bool = True
    expire_quiescent_template: bool = True
    conntrack: bool = False  # true when netfilter rules on the director need IPVS flows
    conn_reuse_mode: int = 1  # the kernel default


@dataclass(frozen=True, slots=True)
class IpvsSettings:
    flush_on_stop: bool = False  # default: leave the table so traffic flows across restarts
    adopt: bool = False  # take over foreign entries at every configured identity
    adopt_names: frozenset[str] = frozenset()  # ... or at these virtual servers only
    state_file: str = "/run/lvsmon/ipvs-owned.json"  # identities lvsmon created
    sysctl: IpvsSysctls = field(default_factory=IpvsSysctls)
    sync_daemon: SyncDaemon = field(default_factory=SyncDaemon)

    def adopts(self, name: str) -> bool:
        return self.adopt or name in self.adopt_names


@dataclass(frozen=True, slots=True)
class DaemonSettings:
    dataplane: str = "proxy"
    metrics_listen: Endpoint = field(
        default_factory=lambda: Endpoint(ipaddress.IPv4Address("127.0.0.1"), 9108)
    )
    pid_file: str = ""
    shutdown_grace: float = 10.0
    timeouts: Timeouts = field(default_factory=Timeouts)
    log_level: str = "warning"
    ipvs: IpvsSettings = field(default_factory=IpvsSettings)
    # TLS and basic auth for metrics_listen: an exporter-toolkit web config (lvsmon.webconfig)
    web_config_file: str = ""
    web: WebConfig | None = None  # web_config_file, read and validated with the config


@dataclass(frozen=True, slots=True)
class Config:
    daemon: DaemonSettings
    virtual_servers: tuple[VirtualServer, ...]
    source: str = "<memory>"
    failover_groups: tuple[FailoverGroup, ...] = ()

    def table(self) -> dict[ServiceKey, VirtualServer]:
        return {vs.key: vs for vs in self.virtual_servers}
