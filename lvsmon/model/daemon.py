"""Daemon-wide settings and the whole validated config, as frozen values."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from enum import StrEnum

from lvsmon.model.bgp import BgpSettings
from lvsmon.model.failover import FailoverGroup
from lvsmon.model.table import Endpoint, IPAddress, ServiceKey, VirtualServer
from lvsmon.model.web import WebConfig


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
    # a director that did not see the SYN still forwards mid-stream packets: needed when
    # ECMP moves established flows between directors (announced virtual servers)
    sloppy_tcp: bool = False
    sloppy_sctp: bool = False


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
class StatusPageSettings:
    """[daemon.status_page]: the live page at / and its JSON twin /status.json."""

    refresh: float = 2.0  # how often the page polls /status.json (seconds)
    sample_interval: float = 5.0  # the daemon's rate samples: conn/s, MB/s, sparklines
    history: float = 600.0  # how far back the sparklines reach (seconds)
    admin: bool = False  # drain, temporary weight, reload from the page (TLS + basic auth only)

    @property
    def samples(self) -> int:
        """Ring buffer length: one sample more than the rates it shows."""
        return int(self.history // self.sample_interval) + 1


@dataclass(frozen=True, slots=True)
class NftSettings:
    """[daemon.nft]: the nftables data plane (lvsmon/dataplane/nft.py, docs/nft.md)."""

    table: str = "lvsmon"  # the one `inet` table lvsmon owns
    flush_on_stop: bool = True  # false: leave the table, traffic flows while lvsmon is down
    state_file: str = "/run/lvsmon/nft-state.json"  # what lvsmon programmed, for adoption
    masquerade: bool = False  # SNAT balanced connections to the outgoing interface's address
    snat_address: tuple[IPAddress, ...] = ()  # ... or to these (one per address family)
    hash_seed: int = 0x6C76736D  # jhash seed of sh/dh/mh tables: the same on every director
    persistence_size: int = 65536  # clients remembered per persistent virtual server
    conntrack_limit: int = 200_000  # conntrack entries read per snapshot at most
    ip_forward: bool = True  # set net.ipv4.ip_forward (and IPv6 forwarding) on start

    def rendering(self) -> tuple[object, ...]:
        """The settings the programmed table depends on (a change reprograms it)."""
        return (
            self.table,
            self.masquerade,
            self.snat_address,
            self.hash_seed,
            self.persistence_size,
        )


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
    nft: NftSettings = field(default_factory=NftSettings)
    # TLS and basic auth for metrics_listen: an exporter-toolkit web config (lvsmon.config.web)
    web_config_file: str = ""
    web: WebConfig | None = None  # web_config_file, read and validated with the config
    status_page: StatusPageSettings = field(default_factory=StatusPageSettings)
    # privileges (lvsmon.privilege): the user the daemon becomes after start ("" stays
    # root, with only the capabilities it needs), the user exec checks and notify hooks
    # run as ("": the daemon's), and whether unsafe scripts are refused (lvsmon.scriptsec)
    user: str = ""
    script_user: str = ""
    script_security: bool = True


@dataclass(frozen=True, slots=True)
class Config:
    daemon: DaemonSettings
    virtual_servers: tuple[VirtualServer, ...]
    source: str = "<memory>"
    failover_groups: tuple[FailoverGroup, ...] = ()
    bgp: BgpSettings | None = None

    def table(self) -> dict[ServiceKey, VirtualServer]:
        return {vs.key: vs for vs in self.virtual_servers}
