"""One read-only view of the director, for /metrics, /status, `lvsmon status` and `save`.

Built from the data plane's snapshot (what is programmed, with counters) and
the config (what was asked for). Pure: no I/O; JSON round-trips for the CLI.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from lvsmon import __version__
from lvsmon.dataplane.base import Snapshot
from lvsmon.model import Config, DestKey, ServiceKey, endpoint_label
from lvsmon.weights.effective import WeightParts

# Real server states shown in `lvsmon status` and used for the `up` metric.
UP, DOWN, DRAINING, SORRY = "up", "down", "draining", "sorry"


@dataclass(frozen=True, slots=True)
class RealServerView:
    address: str
    port: int
    forwarding: str
    weight: int  # programmed
    configured_weight: int | None  # None: not in the config (draining or sorry server)
    state: str
    active: int
    inactive: int
    persistent: int
    connections: int
    in_bytes: int
    out_bytes: int
    in_packets: int | None = None
    out_packets: int | None = None
    upper_threshold: int = 0
    lower_threshold: int = 0
    programmed: bool = True  # False: configured, but out of the table by its health verdict
    connect_failures: int | None = None  # lvsmon.dataplane.base.DestStats (proxy only)
    # lvsmon.weights.effective.WeightParts.columns(): configured, health, slow_start,
    # adaptive, effective; empty for a server not in the config (draining, sorry)
    weight_parts: dict[str, str] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return endpoint_label(self.address, self.port)


@dataclass(frozen=True, slots=True)
class VirtualServerView:
    name: str
    protocol: str
    address: str
    port: int
    fwmark: int
    scheduler: str
    scheduler_flags: list[str]
    persistence_timeout: float
    persistence_netmask: int
    configured: bool  # False while a removed virtual server drains
    connections: int
    in_bytes: int
    out_bytes: int
    in_packets: int | None = None
    out_packets: int | None = None
    real_servers: list[RealServerView] = field(default_factory=list)

    @property
    def key(self) -> ServiceKey:
        return ServiceKey(self.protocol, self.address, self.port, self.fwmark)

    @property
    def family(self) -> int:
        return 6 if ":" in self.address else 4


@dataclass(frozen=True, slots=True)
class DirectorView:
    version: str
    dataplane: str
    config_source: str
    last_reload_successful: bool
    last_reload_success_timestamp: float
    virtual_servers: list[VirtualServerView] = field(default_factory=list)
    dataplane_errors: int = 0  # failed data plane operations since start
    config_reload_failures: int = 0  # reloads rejected (or not fully applied) since start
    failover_groups: list[dict[str, Any]] = field(default_factory=list)  # lvsmon.ha GroupStatus
    # the IPVS connection-sync daemons running now: state, interface, syncid (ipvs only)
    sync_daemons: list[dict[str, Any]] = field(default_factory=list)
    sync_follows: str = ""  # daemon.ipvs.sync_daemon.follow: the failover group they follow
    # [bgp]: one row per VIP (prefix, state, next_hop, peers, why); None without [bgp]
    bgp: list[dict[str, Any]] | None = None
    # [bgp]: the announcer's phase, sessions, errors (lvsmon.bgp.status.AnnouncerSummary)
    bgp_announcer: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DirectorView:
        services = []
        for vs in data.get("virtual_servers", []):
            reals = [RealServerView(**rs) for rs in vs.get("real_servers", [])]
            services.append(VirtualServerView(**{**vs, "real_servers": reals}))
        return cls(**{**data, "virtual_servers": services})


def build_view(
    config: Config,
    snapshot: Snapshot,
    down: frozenset[tuple[ServiceKey, DestKey]] = frozenset(),
    *,
    last_reload_successful: bool = True,
    last_reload_success_timestamp: float = 0.0,
    dataplane_errors: int = 0,
    config_reload_failures: int = 0,
    failover_groups: list[dict[str, Any]] | None = None,
    sync_daemons: list[dict[str, Any]] | None = None,
    weight_parts: Mapping[tuple[ServiceKey, DestKey], WeightParts] | None = None,
    bgp: list[dict[str, Any]] | None = None,
    bgp_announcer: dict[str, Any] | None = None,
) -> DirectorView:
    """`down`: real servers the health checks currently hold out of service.
    `weight_parts`: each configured server's weight factor by factor (the daemon's
    lvsmon.weights.effective.weight_parts); without it the columns show no effect."""
    parts = weight_parts or {}
    table = config.table()
    services = []
    for s in snapshot.services:
        vs = s.service
        skey = vs.key
        wanted = table.get(skey)
        # by key once per service: a lookup per real server would be quadratic
        configured_by_key = {rs.key: rs for rs in wanted.real_servers} if wanted else {}
        programmed_by_key = {rs.key: rs for rs in vs.real_servers}
        reals = []
        for d in s.dests:
            configured = configured_by_key.get(d.key)
            state = _state(skey, d.key, configured is not None, wanted, down)
            rs = programmed_by_key.get(d.key)
            reals.append(
                RealServerView(
                    address=d.key.address,
                    port=d.key.port,
                    forwarding=rs.forwarding if rs else "nat",  # a StrEnum: no .value lookup
                    weight=d.weight,
                    configured_weight=configured.weight if configured else None,
                    state=state,
                    active=d.active,
                    inactive=d.inactive,
                    persistent=d.persistent,
                    connections=d.counters.connections,
                    in_bytes=d.counters.in_bytes,
                    out_bytes=d.counters.out_bytes,
                    in_packets=d.counters.in_packets,
                    out_packets=d.counters.out_packets,
                    upper_threshold=rs.upper_threshold if rs else 0,
                    lower_threshold=rs.lower_threshold if rs else 0,
                    weight_parts=_columns(parts, skey, d.key, configured),
                    connect_failures=d.connect_failures,
                )
            )
        present = {d.key for d in s.dests}
        for c in wanted.real_servers if wanted else ():
            if c.key not in present and (vs.key, c.key) in down:  # removed by health: say so
                reals.append(
                    RealServerView(
                        address=c.key.address,
                        port=c.key.port,
                        forwarding=c.forwarding.value,
                        weight=0,
                        configured_weight=c.weight,
                        state=DOWN,
                        active=0,
                        inactive=0,
                        persistent=0,
                        connections=0,
                        in_bytes=0,
                        out_bytes=0,
                        programmed=False,
                        weight_parts=_columns(parts, skey, c.key, c),
                    )
                )
        services.append(
            VirtualServerView(
                name=wanted.name if wanted else vs.name,
                protocol=vs.key.protocol,
                address=vs.key.address or (str(vs.address) if vs.address else ""),
                port=vs.key.port,
                fwmark=vs.fwmark,
                scheduler=vs.scheduler,
                scheduler_flags=sorted(vs.scheduler_flags),
                persistence_timeout=vs.persistence_timeout,
                persistence_netmask=vs.persistence_netmask,
                configured=wanted is not None,
                connections=s.counters.connections,
                in_bytes=s.counters.in_bytes,
                out_bytes=s.counters.out_bytes,
                in_packets=s.counters.in_packets,
                out_packets=s.counters.out_packets,
                real_servers=reals,
            )
        )
    return DirectorView(
        version=__version__,
        dataplane=config.daemon.dataplane,
        config_source=config.source,
        last_reload_successful=last_reload_successful,
        last_reload_success_timestamp=last_reload_success_timestamp,
        virtual_servers=services,
        dataplane_errors=dataplane_errors,
        config_reload_failures=config_reload_failures,
        failover_groups=failover_groups or [],
        sync_daemons=sync_daemons or [],
        sync_follows=config.daemon.ipvs.sync_daemon.follow if sync_daemons is not None else "",
        bgp=bgp,
        bgp_announcer=bgp_announcer,
    )


def _columns(
    parts: Mapping[tuple[ServiceKey, DestKey], WeightParts],
    skey: ServiceKey,
    dkey: DestKey,
    configured: Any,
) -> dict[str, str]:
    if configured is None:
        return {}
    found = parts.get((skey, dkey))
    return (found or WeightParts(configured.weight)).columns()


def _state(
    skey: ServiceKey,
    dkey: DestKey,
    configured: bool,
    wanted: Any,
    down: frozenset[tuple[ServiceKey, DestKey]],
) -> str:
    if (skey, dkey) in down:
        return DOWN
    if configured:
        return UP
    sorry = wanted.sorry_server if wanted else None
    if sorry and DestKey(str(sorry.address), sorry.port) == dkey:
        return SORRY
    return DRAINING


# --- ipvsadm-style text -------------------------------------------------------


def _netmask_text(vs: VirtualServerView) -> str:
    if vs.family == 6:
        return str(vs.persistence_netmask)
    return str(ipaddress.IPv4Network(f"0.0.0.0/{vs.persistence_netmask}").netmask)


def _service_head(vs: VirtualServerView) -> str:
    if vs.fwmark:
        head = f"FWM  {vs.fwmark}{' IPv6' if vs.family == 6 else ''}"
    else:
        head = f"{vs.protocol.upper():<4} {endpoint_label(vs.address, vs.port)}"
    head += f" {vs.scheduler}"
    if vs.scheduler_flags:
        head += f" ({','.join(vs.scheduler_flags)})"
    if vs.persistence_timeout:
        head += f" persistent {int(vs.persistence_timeout)}"
        if vs.persistence_netmask != (128 if vs.family == 6 else 32):
            head += f" mask {_netmask_text(vs)}"
    return head


FORWARD_NAMES = {"nat": "Masq", "dr": "Route", "tunnel": "Tunnel"}


WEIGHT_COLUMNS = ("configured", "health", "slow_start", "adaptive", "effective")


def render_table(view: DirectorView) -> str:
    """`ipvsadm -Ln` layout, plus per real server its health state and its weight factor
    by factor: Weight is what is programmed; Config x Health x SlowStart x Adapt gives
    Effective ("-": no effect, e.g. no ramp running, no adaptive weights)."""
    lines = [
        f"lvsmon {view.version} (dataplane={view.dataplane}, config={view.config_source})",
        "Prot LocalAddress:Port Scheduler Flags",
        "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn State    "
        "Config Health SlowStart Adapt Effective",
    ]
    for vs in view.virtual_servers:
        suffix = "" if vs.configured else "  [draining: removed from config]"
        lines.append(f"{_service_head(vs)}{suffix}")
        for rs in vs.real_servers:
            cells = [rs.weight_parts.get(c, "-") for c in WEIGHT_COLUMNS]
            if "operator" in rs.weight_parts:  # a drain or temporary weight (status page)
                cells[4] += f" (operator {rs.weight_parts['operator']})"
            lines.append(
                (
                    f"  -> {rs.label:<28} {FORWARD_NAMES.get(rs.forwarding, rs.forwarding):<7} "
                    f"{rs.weight:<6} {rs.active:<10} {rs.inactive:<9} {rs.state:<8} "
                    f"{cells[0]:<6} {cells[1]:<6} {cells[2]:<9} {cells[3]:<5} {cells[4]}"
                ).rstrip()
            )
    for d in view.sync_daemons:  # as `ipvsadm -L --daemon` writes them
        follows = f"  (follows failover group {view.sync_follows})" if view.sync_follows else ""
        lines.append(
            f"{d['state']} sync daemon (mcast={d['interface']}, syncid={d['syncid']}){follows}"
        )
    if view.failover_groups:
        from lvsmon.ha.status import GroupStatus, render

        groups = [GroupStatus.from_json(g) for g in view.failover_groups]
        lines.extend(["", *render(groups, time.time())])
    if view.bgp is not None or view.bgp_announcer is not None:
        from lvsmon.bgp.status import AnnouncerSummary
        from lvsmon.bgp.status import render as render_bgp

        summary = view.bgp_announcer
        announcer = AnnouncerSummary.from_json(summary) if summary is not None else None
        lines.extend(["", *render_bgp(announcer, view.bgp or [], time.time())])
    return "\n".join(lines)


def render_save(view: DirectorView) -> str:
    """`ipvsadm -S -n` rules (accepted by `ipvsadm -R`)."""
    flag = {"tcp": "-t", "udp": "-u", "sctp": "--sctp-service"}
    lines = []
    for vs in view.virtual_servers:
        if vs.fwmark:
            svc = f"-f {vs.fwmark}" + (" -6" if vs.family == 6 else "")
        else:
            svc = f"{flag[vs.protocol]} {endpoint_label(vs.address, vs.port)}"
        rule = f"-A {svc} -s {vs.scheduler}"
        if vs.scheduler_flags:
            rule += f" -b {','.join(vs.scheduler_flags)}"
        if vs.persistence_timeout:
            rule += f" -p {int(vs.persistence_timeout)}"
            if vs.persistence_netmask != (128 if vs.family == 6 else 32):
                rule += f" -M {_netmask_text(vs)}"
        lines.append(rule)
        for rs in vs.real_servers:
            if not rs.programmed:
                continue
            fwd = {"nat": "-m", "dr": "-g", "tunnel": "-i"}[rs.forwarding]
            rule = f"-a {svc} -r {rs.label} {fwd} -w {rs.weight}"
            if rs.upper_threshold:
                rule += f" -x {rs.upper_threshold}"
            if rs.lower_threshold:
                rule += f" -y {rs.lower_threshold}"
            lines.append(rule)
    return "\n".join(lines) + ("\n" if lines else "")
