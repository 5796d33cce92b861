"""The importers' common target: an lvsmon config as plain values, then as TOML text.

Each importer fills a `Draft` (virtual servers, real servers, health checks,
failover groups, daemon settings) from its own format; `render` writes the
idiomatic lvsmon TOML (a check shared by every real server goes on the
virtual server, see lvsmon/health/README.md). Nothing here validates:
`lvsmon check` does, on the text.
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter
from dataclasses import dataclass, field

from lvsmon import __version__
from lvsmon.configkit import format_duration
from lvsmon.importers.report import Origin
from lvsmon.importers.toml_writer import Table, Value, document

_NAME_CHARS = re.compile(r"[^A-Za-z0-9_.-]+")


def seconds(value: float) -> str:
    """A duration as lvsmon writes it ("5m", "1.5s", "100ms")."""
    return format_duration(value)


def safe_name(text: str, fallback: str = "vs") -> str:
    """An lvsmon name (letters, digits, '_', '.', '-'; 1-64 chars) from any label."""
    name = _NAME_CHARS.sub("_", text).strip("_")[:64]
    return name or fallback


def endpoint(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def service_name(protocol: str, address: str, port: int) -> str:
    """`tcp-192.0.2.10-80`, `tcp-2001_db8__10-443`: readable and a valid name."""
    return safe_name(f"{protocol}-{address.replace(':', '_')}-{port}")


@dataclass
class Check:
    """One health check: its lvsmon keys in the order they are written."""

    keys: dict[str, Value]
    origin: Origin

    def same_as(self, other: Check | None) -> bool:
        return other is not None and self.keys == other.keys


@dataclass
class RealServerDraft:
    address: str
    port: int
    origin: Origin
    weight: int = 1
    forwarding: str = ""  # "" = the virtual server's
    upper_threshold: int = 0
    lower_threshold: int = 0
    check: Check | None = None


@dataclass
class VirtualServerDraft:
    name: str
    origin: Origin
    address: str = ""
    port: int = 0
    protocol: str = "tcp"
    fwmark: int = 0
    scheduler: str = "wlc"
    scheduler_flags: list[str] = field(default_factory=list)
    persistence_timeout: float = 0.0
    persistence_netmask: str | int | None = None
    forwarding: str = "nat"
    quiesce: bool = False
    sorry_server: str = ""
    real_servers: list[RealServerDraft] = field(default_factory=list)


@dataclass
class GroupAddressDraft:
    address: str  # with its prefix length: "192.0.2.100/24"
    interface: str = ""  # "" = the group's


@dataclass
class GroupDraft:
    name: str
    origin: Origin
    vrid: int
    interface: str
    priority: int = 100
    advert_interval: float = 1.0
    preempt: bool = True
    preempt_delay: float = 0.0
    family: str = ""  # "" = from the first address
    addresses: list[GroupAddressDraft] = field(default_factory=list)
    unicast_peers: list[str] = field(default_factory=list)
    track_interfaces: list[tuple[str, int]] = field(default_factory=list)  # weight 0 = fault
    notify: dict[str, list[str]] = field(default_factory=dict)  # on_master -> argv
    garp_repeat: int | None = None
    garp_refresh: float | None = None


@dataclass
class SyncDaemonDraft:
    interface: str
    syncid: int = 0
    state: str = ""  # "master" | "backup"; "" with follow
    follow: str = ""


@dataclass
class Draft:
    source_format: str
    source: str
    virtual_servers: list[VirtualServerDraft] = field(default_factory=list)
    groups: list[GroupDraft] = field(default_factory=list)
    timeouts: dict[str, float] = field(default_factory=dict)  # tcp, tcp_fin, udp
    sync_daemon: SyncDaemonDraft | None = None
    flush_on_stop: bool = False

    def unique_name(self, wanted: str) -> str:
        """`wanted`, or `wanted-2`, `-3` ... when a virtual server already has it."""
        return _unique(wanted, {vs.name for vs in self.virtual_servers})

    def unique_group_name(self, wanted: str) -> str:
        return _unique(wanted, {g.name for g in self.groups})


def _unique(wanted: str, taken: set[str]) -> str:
    name, n = wanted, 1
    while name in taken:
        n += 1
        name = f"{wanted[:60]}-{n}"
    return name


def family_of(address: str) -> int:
    return ipaddress.ip_interface(address).version


def render(draft: Draft) -> str:
    head = (
        f"lvsmon config imported from {draft.source} ({draft.source_format})\n"
        f"by `lvsmon import {draft.source_format}` (lvsmon {__version__}).\n"
        "Review the import report it printed (every directive not translated exactly),\n"
        "then `lvsmon check -c THIS_FILE`."
    )
    return document(head, [*_daemon(draft), *_virtual_servers(draft), *_groups(draft)])


def _daemon(draft: Draft) -> list[Table]:
    daemon = Table("daemon")
    daemon.set("dataplane", "ipvs", f"{draft.source_format} programs the kernel's IPVS table")
    daemon.set("metrics_listen", "127.0.0.1:9108")
    daemon.set("pid_file", "/run/lvsmon.pid", "for `lvsmon reload`")
    tables = [daemon]
    if draft.timeouts:
        timeouts = Table("daemon.timeouts")
        for name, value in draft.timeouts.items():
            timeouts.set(name, seconds(value))
        tables.append(timeouts)
    ipvs = Table("daemon.ipvs")
    ipvs.set("adopt", True, f"take over the table {draft.source_format} left in the kernel")
    if draft.flush_on_stop:
        ipvs.set("flush_on_stop", True)
    tables.append(ipvs)
    if draft.sync_daemon is not None:
        sync = Table("daemon.ipvs.sync_daemon")
        sd = draft.sync_daemon
        if sd.follow:
            sync.set("follow", sd.follow)
        else:
            sync.set("state", sd.state)
        sync.set("interface", sd.interface)
        sync.set("syncid", sd.syncid)
        tables.append(sync)
    return tables


def _virtual_servers(draft: Draft) -> list[Table]:
    tables: list[Table] = []
    for vs in draft.virtual_servers:
        t = Table("virtual_server", array=True, comment=str(vs.origin))
        t.set("name", vs.name)
        if vs.fwmark:
            t.set("fwmark", vs.fwmark)
            if vs.address:
                t.set("address", vs.address)
        else:
            t.set("address", vs.address)
            t.set("port", vs.port)
        t.set("protocol", vs.protocol)
        t.set("scheduler", vs.scheduler)
        if vs.scheduler_flags:
            t.set("scheduler_flags", list(vs.scheduler_flags))
        if vs.persistence_timeout:
            t.set("persistence_timeout", seconds(vs.persistence_timeout))
            if vs.persistence_netmask is not None:
                t.set("persistence_netmask", vs.persistence_netmask)
        t.set("forwarding", vs.forwarding)
        if vs.quiesce:
            t.set("on_failure", "quiesce")
        if vs.sorry_server:
            t.set("sorry_server", vs.sorry_server)
        tables.append(t)
        shared = _shared_check(vs)
        if shared is not None:
            tables.append(_check_table("virtual_server.health_check", shared))
        for rs in vs.real_servers:
            r = Table("virtual_server.real_server", array=True, comment=str(rs.origin))
            r.set("address", rs.address)
            r.set("port", rs.port)
            r.set("weight", rs.weight)
            if rs.forwarding and rs.forwarding != vs.forwarding:
                r.set("forwarding", rs.forwarding)
            if rs.upper_threshold:
                r.set("upper_threshold", rs.upper_threshold)
            if rs.lower_threshold:
                r.set("lower_threshold", rs.lower_threshold)
            tables.append(r)
            if shared is None and rs.check is not None:
                tables.append(_check_table("virtual_server.real_server.health_check", rs.check))
    return tables


def _shared_check(vs: VirtualServerDraft) -> Check | None:
    """The check every real server has, written once on the virtual server."""
    if not vs.real_servers:
        return None
    first = vs.real_servers[0].check
    if first is None or not all(first.same_as(rs.check) for rs in vs.real_servers):
        return None
    return first


def _check_table(header: str, check: Check) -> Table:
    t = Table(header, comment=str(check.origin))
    for name, value in check.keys.items():
        t.set(name, value)
    return t


def _groups(draft: Draft) -> list[Table]:
    tables: list[Table] = []
    for g in draft.groups:
        t = Table("failover_group", array=True, comment=str(g.origin))
        t.set("name", g.name)
        t.set("vrid", g.vrid)
        t.set("interface", g.interface)
        if g.family:
            t.set("family", g.family)
        t.set("priority", g.priority)
        t.set("advert_interval", seconds(g.advert_interval))
        t.set("preempt", g.preempt)
        if g.preempt and g.preempt_delay:
            t.set("preempt_delay", seconds(g.preempt_delay))
        if g.unicast_peers:
            t.set("unicast_peers", list(g.unicast_peers))
        if g.garp_repeat is not None:
            t.set("garp_repeat", g.garp_repeat)
        if g.garp_refresh is not None:
            t.set("garp_refresh", seconds(g.garp_refresh))
        tables.append(t)
        for a in g.addresses:
            at = Table("failover_group.address", array=True)
            at.set("address", a.address)
            if a.interface and a.interface != g.interface:
                at.set("interface", a.interface)
            tables.append(at)
        for iface, weight in g.track_interfaces:
            tt = Table("failover_group.track_interface", array=True)
            tt.set("interface", iface)
            if weight:
                tt.set("weight", weight)
            tables.append(tt)
        if g.notify:
            nt = Table("failover_group.notify")
            for hook, argv in g.notify.items():
                nt.set(hook, argv)
            tables.append(nt)
    return tables


def most_common(values: list[str]) -> str:
    return Counter(values).most_common(1)[0][0]
