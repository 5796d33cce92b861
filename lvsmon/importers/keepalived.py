"""keepalived.conf -> lvsmon: LVS (virtual_server, groups, real servers, checkers) and VRRP.

Every directive of keepalived.conf(5) that maps onto lvsmon is translated; every
other one is named in the report (see report.py for the severities). The
settings cascade as keepalived's do: virtual server -> real server -> checker
(delay_loop, connect_timeout, retry, delay_before_retry, virtualhost, ...).
Checker timing: `delay_loop` is the interval, `connect_timeout` the timeout, a
server goes down after `retry` + 1 failures (fall) and comes back after one
success (rise = 1), as keepalived's checkers do.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field, replace

from lvsmon.importers import kaparse
from lvsmon.importers.draft import (
    Check,
    Draft,
    GroupAddressDraft,
    GroupDraft,
    RealServerDraft,
    SyncDaemonDraft,
    VirtualServerDraft,
    endpoint,
    safe_name,
    service_name,
)
from lvsmon.importers.kaparse import Node
from lvsmon.importers.report import Origin, Report
from lvsmon.importers.source import Source
from lvsmon.importers.values import FORWARDING, Reader, hex_payload, split_command
from lvsmon.schedulers import IPVS_SCHEDULERS

NO_EFFECT = "no effect in lvsmon"
GLOBAL_NOTES = {
    "router_id": "lvsmon names itself by its metrics labels and config path",
    "notification_email": "lvsmon alerts through Prometheus (alerts/lvsmon.rules.yml), not mail",
    "notification_email_from": "lvsmon alerts through Prometheus, not mail",
    "smtp_server": "lvsmon alerts through Prometheus, not mail",
    "smtp_connect_timeout": "lvsmon alerts through Prometheus, not mail",
    "smtp_helo_name": "lvsmon alerts through Prometheus, not mail",
    "smtp_alert": "lvsmon alerts through Prometheus, not mail",
    "smtp_alert_vrrp": "lvsmon alerts through Prometheus, not mail",
    "smtp_alert_checker": "lvsmon alerts through Prometheus, not mail",
    "no_email_faults": "lvsmon alerts through Prometheus, not mail",
    "enable_traps": "lvsmon exports Prometheus metrics, not SNMP",
    "enable_snmp_vrrp": "lvsmon exports Prometheus metrics, not SNMP",
    "enable_snmp_checker": "lvsmon exports Prometheus metrics, not SNMP",
    "enable_snmp_rfc": "lvsmon exports Prometheus metrics, not SNMP",
    "enable_snmp_rfcv2": "lvsmon exports Prometheus metrics, not SNMP",
    "enable_snmp_rfcv3": "lvsmon exports Prometheus metrics, not SNMP",
    "script_user": "lvsmon runs exec checks and hooks as its own user",
    "enable_script_security": "lvsmon runs argv without a shell; check the scripts' permissions",
    "vrrp_skip_check_adv_addr": "lvsmon accepts adverts whatever their address list",
    "vrrp_strict": "lvsmon is VRRPv3 without authentication already",
    "vrrp_garp_master_delay": "lvsmon repeats gratuitous ARPs at takeover (garp_repeat)",
    "vrrp_garp_interval": "lvsmon's garp_interval defaults to 10ms",
    "vrrp_gna_interval": "lvsmon's garp_interval applies to unsolicited NAs too",
    "vrrp_priority": "lvsmon's VRRP process always runs at a real-time priority",
    "checker_priority": NO_EFFECT,
    "vrrp_no_swap": NO_EFFECT,
    "checker_no_swap": NO_EFFECT,
    "vrrp_rlimit_rttime": NO_EFFECT,
    "checker_rlimit_rttime": NO_EFFECT,
    "vrrp_iptables": "lvsmon installs no firewall rules",
    "vrrp_ipsets": "lvsmon installs no firewall rules",
    "nftables": "lvsmon installs no firewall rules",
    "max_auto_priority": NO_EFFECT,
    "process_names": NO_EFFECT,
    "dynamic_interfaces": NO_EFFECT,
    "default_interface": "lvsmon needs each failover group's interface spelled out",
}


@dataclass
class Settings:
    """What cascades from a virtual server to its real servers and checkers."""

    delay_loop: float = 60.0
    connect_timeout: float | None = None
    retry: int | None = None
    delay_before_retry: float | None = None
    virtualhost: str = ""
    alpha: bool = False
    inhibit: bool | None = None
    warmup: float | None = None


@dataclass
class Translator:
    path: str
    source: Source
    report: Report
    config_id: str = ""
    draft: Draft = field(init=False)
    read: Reader = field(init=False)
    vs_groups: dict[str, Node] = field(default_factory=dict)
    instances: dict[str, GroupDraft] = field(default_factory=dict)
    versions: dict[str, int] = field(default_factory=dict)  # instance -> VRRP version set
    global_version: int = 0
    garp_repeat: int | None = None
    garp_refresh: float | None = None
    sync_daemon: tuple[Node, str, str, int] | None = None  # node, interface, instance, id
    ssl: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.draft = Draft("keepalived", self.path)
        self.read = Reader(self.report)

    # --- entry ---

    def run(self) -> Draft:
        root = kaparse.parse(kaparse.Parser(self.source, self.report, self.config_id), self.path)
        top = root.children or []
        order = ("global_defs", "SSL", "virtual_server_group", "vrrp_instance")
        for keyword in order:  # what others refer to first, whatever its place in the file
            for node in top:
                if node.keyword == keyword:
                    self._top(node)
        for node in top:
            if node.keyword not in order:
                self._top(node)
        self._finish_vrrp()
        return self.draft

    def _top(self, node: Node) -> None:
        k = node.keyword
        if k == "global_defs":
            for child in node.children or []:
                self._global(child)
        elif k == "SSL":
            for child in node.children or []:
                self.ssl[child.keyword] = child.args[0] if child.args else ""
        elif k == "virtual_server_group":
            if not node.args:
                self.report.error(node.origin, k, "has no name")
            else:
                self.vs_groups[node.args[0]] = node
        elif k == "vrrp_instance":
            self._instance(node)
        elif k == "virtual_server":
            self._virtual_server(node)
        elif k == "vrrp_sync_group":
            members = [c.keyword for g in node.children or [] if g.keyword == "group" for c in g.children or []]
            self.report.warning(
                node.origin,
                k,
                f"lvsmon has no sync groups: {', '.join(members) or 'its instances'} fail over "
                "independently; put addresses that must move together in one failover group "
                "(its notify scripts and tracking are not translated)",
            )
        elif k == "vrrp_script":
            self.report.warning(
                node.origin,
                k,
                f"{' '.join(node.args)}: lvsmon runs no tracking scripts; it tracks interfaces "
                "and real-server health (failover_group.track_real_servers)",
            )
        elif k in ("static_ipaddress", "static_routes", "static_rules", "linkbeat_interfaces"):
            self.report.note(node.origin, k, "static addresses and routes are the OS's to configure")
        elif k in ("vrrp_track_file", "track_file", "vrrp_track_process", "bfd_instance", "garp_group"):
            self.report.warning(node.origin, k, "not translated: lvsmon has no equivalent")
        elif k in ("net_namespace", "instance", "use_pid_dir", "namespace_with_ipsets"):
            self.report.note(node.origin, k, "run lvsmon itself in the namespace instead")
        else:
            self.report.warning(node.origin, k, "unknown keepalived directive: not translated")

    # --- global_defs ---

    def _global(self, node: Node) -> None:
        k, args = node.keyword, node.args
        if k == "lvs_sync_daemon":
            self._global_sync_daemon(node)
        elif k == "lvs_timeouts":
            names = {"tcp": "tcp", "tcpfin": "tcp_fin", "udp": "udp"}
            for name, value in zip(args[::2], args[1::2], strict=False):
                if name in names and (t := self.read.timer(node.origin, k, value)) is not None:
                    self.draft.timeouts[names[name]] = t
        elif k == "lvs_flush":
            self.report.warning(
                node.origin,
                k,
                "lvsmon never flushes the table: it adopts keepalived's entries at its "
                "virtual servers (daemon.ipvs.adopt) and leaves other entries alone",
            )
        elif k == "lvs_flush_on_stop":
            self.draft.flush_on_stop = True
            if args:
                self.report.note(node.origin, k, f"{args[0]}: lvsmon drains, then deletes")
        elif k == "vrrp_version":
            self.global_version = self.read.integer(node.origin, k, args[0] if args else None, 2, 3) or 0
        elif k == "vrrp_garp_master_repeat":
            self.garp_repeat = self.read.integer(node.origin, k, args[0] if args else None, 0, 100)
        elif k == "vrrp_garp_master_refresh":
            self.garp_refresh = self.read.timer(node.origin, k, args[0] if args else None)
        elif k in ("vrrp_mcast_group4", "vrrp_mcast_group6"):
            self.report.warning(node.origin, k, "lvsmon uses the VRRP groups 224.0.0.18 / ff02::12")
        elif k in GLOBAL_NOTES:
            self.report.note(node.origin, k, GLOBAL_NOTES[k])
        else:
            self.report.note(node.origin, k, "global setting with no lvsmon equivalent")

    def _global_sync_daemon(self, node: Node) -> None:
        args = list(node.args)
        if not args:
            self.report.error(node.origin, node.keyword, "names no interface")
            return
        interface, instance, syncid = args.pop(0), "", 0
        while args:
            word = args.pop(0)
            if word == "inst" and args:
                instance = args.pop(0)
            elif word == "id" and args:
                syncid = self.read.integer(node.origin, node.keyword, args.pop(0), 0, 255) or 0
            elif word in ("maxlen", "port", "ttl", "group") and args:
                self.report.warning(node.origin, node.keyword, f"{word} {args.pop(0)}: not translated")
            elif not instance:
                instance = word
        self.sync_daemon = (node, interface, instance, syncid)

    # --- VRRP ---

    def _instance(self, node: Node) -> None:
        name = node.args[0] if node.args else "vrrp"
        group = GroupDraft(
            name=self.draft.unique_group_name(safe_name(name, "vrrp")),
            origin=node.origin,
            vrid=0,
            interface="",
        )
        priority: int | None = None
        state = ""
        for c in node.children or []:
            k, args, o = c.keyword, c.args, c.origin
            first = args[0] if args else None
            if k == "state":
                state = (first or "").upper()
                self.report.note(
                    o, k, f"{first}: lvsmon elects by priority (an owner's 255 is master at once)"
                )
            elif k == "interface":
                group.interface = first or ""
            elif k == "virtual_router_id":
                group.vrid = self.read.integer(o, k, first, 1, 255) or 0
            elif k == "priority":
                priority = self.read.integer(o, k, first, 1, 255)
            elif k == "advert_int":
                self._advert(group, c)
            elif k == "nopreempt":
                group.preempt = False
            elif k == "preempt":
                group.preempt = True
            elif k == "preempt_delay":
                group.preempt_delay = self.read.timer(o, k, first) or 0.0
            elif k in ("virtual_ipaddress", "virtual_ipaddress_excluded"):
                self._vips(group, c)
            elif k == "track_interface":
                self._track_interfaces(group, c)
            elif k in ("track_script", "track_file", "track_process", "track_bfd"):
                names = ", ".join(ch.keyword for ch in c.children or []) or " ".join(args)
                self.report.warning(
                    o,
                    k,
                    f"{names}: not translated; lvsmon tracks interfaces and real-server health "
                    "(failover_group.track_real_servers)",
                )
            elif k in ("notify_master", "notify_backup", "notify_fault", "notify_stop"):
                self._hook(group, c)
            elif k in ("notify", "notify_master_rx_lower_pri", "notify_deleted"):
                self.report.warning(
                    o,
                    k,
                    "not translated: lvsmon runs on_master/on_backup/on_fault/on_stop hooks, "
                    "with the state in LVSMON_HA_* variables instead of arguments",
                )
            elif k == "unicast_peer":
                for peer in c.children or []:
                    address = self.read.address(peer.origin, k, peer.keyword)
                    if address:
                        group.unicast_peers.append(address)
                    if peer.args:
                        self.report.warning(peer.origin, k, f"{' '.join(peer.args)}: not translated")
            elif k in ("unicast_src_ip", "mcast_src_ip"):
                self.report.note(o, k, "lvsmon sends from the interface's primary address")
            elif k == "version":
                self.versions[group.name] = self.read.integer(o, k, first, 2, 3) or 0
            elif k == "authentication":
                self.report.warning(
                    o,
                    k,
                    "dropped: VRRPv3 has no authentication (lvsmon's auth = \"hmac-sha256\" "
                    "works between lvsmon directors only)",
                )
            elif k == "garp_master_repeat":
                group.garp_repeat = self.read.integer(o, k, first, 0, 100)
            elif k == "garp_master_refresh":
                group.garp_refresh = self.read.timer(o, k, first)
            elif k == "lvs_sync_daemon_interface":
                self.sync_daemon = (c, first or "", name, 0)
            elif k in ("use_vmac", "vmac_xmit_base", "use_ipvlan", "use_vmac_addr"):
                self.report.warning(o, k, "not translated: lvsmon moves addresses, not a virtual MAC")
            elif k in ("virtual_routes", "virtual_rules"):
                self.report.warning(o, k, "not translated: lvsmon moves addresses, not routes or rules")
            elif k in ("mcast_dst_ip", "down_timer_adverts", "dont_track_primary", "unicast_ttl"):
                self.report.warning(o, k, "not translated: lvsmon follows RFC 5798 here")
            else:
                self.report.note(o, k, NO_EFFECT)
        if priority is None:
            priority = 255 if state == "MASTER" else 100  # keepalived's defaults
            if state == "MASTER":
                self.report.note(node.origin, "priority", "unset with state MASTER: 255, as keepalived")
        if priority == 255 and group.track_interfaces:
            self.report.warning(
                node.origin,
                "priority",
                "255 cannot be lowered by tracking in lvsmon: written as 254",
            )
            priority = 254
        group.priority = priority
        if group.garp_repeat is None:
            group.garp_repeat = self.garp_repeat
        if group.garp_refresh is None:
            group.garp_refresh = self.garp_refresh
        if not group.preempt and group.preempt_delay:
            self.report.note(node.origin, "preempt_delay", "no effect with nopreempt: dropped")
            group.preempt_delay = 0.0
        missing = [w for w, v in (("virtual_router_id", group.vrid), ("interface", group.interface)) if not v]
        if not group.addresses:
            missing.append("virtual_ipaddress")
        if missing:
            self.report.error(
                node.origin, f"vrrp_instance {name}", f"not translated: no {', '.join(missing)}"
            )
            return
        self.instances[name] = group
        self.draft.groups.append(group)

    def _advert(self, group: GroupDraft, c: Node) -> None:
        value = self.read.timer(c.origin, c.keyword, c.args[0] if c.args else None)
        if value is None:
            return
        centis = min(4095, max(1, round(value * 100)))
        if abs(centis - value * 100) > 1e-6:
            self.report.warning(c.origin, c.keyword, f"{value}s rounded to {centis / 100}s (whole centiseconds)")
        group.advert_interval = centis / 100

    def _vips(self, group: GroupDraft, c: Node) -> None:
        excluded = c.keyword == "virtual_ipaddress_excluded"
        for item in c.children or []:
            words = item.words
            text = words[0]
            try:
                iface = ipaddress.ip_interface(text)
            except ValueError:
                self.report.error(item.origin, c.keyword, f'"{text}" is not an address[/prefix]')
                continue
            address = f"{iface.ip}/{iface.network.prefixlen}"
            dev, options = "", []
            rest = words[1:]
            while rest:
                word = rest.pop(0)
                if word == "dev" and rest:
                    dev = rest.pop(0)
                elif word in ("brd", "scope", "label", "peer", "preferred_lft") and rest:
                    options.append(f"{word} {rest.pop(0)}")
                else:
                    options.append(word)
            if options:
                self.report.note(item.origin, c.keyword, f"{text}: {' '.join(options)}: not translated")
            if excluded:
                self.report.warning(
                    item.origin,
                    c.keyword,
                    f"{text}: moved with the group, but listed in lvsmon's adverts when it is "
                    "of the adverts' family",
                )
            owner = self._vip_owner(str(iface.ip), group)
            if owner:
                severity = self.report.warning if owner == group.name else self.report.error
                severity(item.origin, c.keyword, f"{iface.ip} is already moved by failover group {owner}: dropped")
                continue
            group.addresses.append(GroupAddressDraft(address, dev))

    def _vip_owner(self, ip: str, group: GroupDraft) -> str:
        for g in [*self.draft.groups, group]:
            if any(a.address.split("/")[0] == ip for a in g.addresses):
                return g.name
        return ""

    def _track_interfaces(self, group: GroupDraft, c: Node) -> None:
        for item in c.children or []:
            weight = 0
            if len(item.args) >= 2 and item.args[0] == "weight":
                weight = self.read.integer(item.origin, c.keyword, item.args[1], -253, 253) or 0
                if weight > 0 or "reverse" in item.args:
                    self.report.warning(
                        item.origin,
                        c.keyword,
                        f"{item.keyword} weight {weight}: lvsmon lowers the priority while the "
                        "interface is down (negative weights): tracked without a weight (fault)",
                    )
                    weight = 0
            group.track_interfaces.append((item.keyword, weight))

    def _hook(self, group: GroupDraft, c: Node) -> None:
        argv = split_command(c.args[0]) if c.args else []
        if not argv:
            self.report.error(c.origin, c.keyword, "names no script")
            return
        hook = "on_" + c.keyword.removeprefix("notify_")
        group.notify[hook] = argv
        extra = f" (run as {' '.join(c.args[1:])} by keepalived: lvsmon runs it as itself)" if len(c.args) > 1 else ""
        self.report.warning(
            c.origin,
            c.keyword,
            f"review {argv[0]}: lvsmon runs {argv} without a shell, with LVSMON_HA_GROUP, "
            f"LVSMON_HA_STATE ... in its environment{extra}",
        )

    def _finish_vrrp(self) -> None:
        for name, group in self.instances.items():
            version = self.versions.get(group.name) or self.global_version
            v6 = any(ipaddress.ip_interface(a.address).version == 6 for a in group.addresses[:1])
            if version != 3 and not v6:
                self.report.warning(
                    group.origin,
                    f"vrrp_instance {name}",
                    "keepalived sends VRRPv2 here (vrrp_version unset or 2); lvsmon speaks "
                    "VRRPv3 (RFC 5798): give keepalived directors that stay during the move "
                    "vrrp_version 3",
                )
        if self.sync_daemon is not None:
            node, interface, instance, syncid = self.sync_daemon
            if instance and instance in self.instances:
                follow = self.instances[instance].name
                self.draft.sync_daemon = SyncDaemonDraft(interface, syncid, follow=follow)
            elif len(self.instances) == 1:
                follow = next(iter(self.instances.values())).name
                self.draft.sync_daemon = SyncDaemonDraft(interface, syncid, follow=follow)
                self.report.warning(
                    node.origin,
                    node.keyword,
                    f"keepalived runs master and backup sync daemons together; lvsmon's follows "
                    f'failover group "{follow}" (master while it is master)',
                )
            else:
                self.report.warning(
                    node.origin,
                    node.keyword,
                    "not translated: name the vrrp instance it follows (inst NAME)",
                )

    # --- LVS ---

    def _virtual_server(self, node: Node) -> None:
        args = node.args
        identities: list[tuple[str, int, int, str]] = []  # address, port, fwmark, name hint
        if len(args) >= 2 and args[0] == "fwmark":
            mark = self.read.integer(node.origin, "virtual_server", args[1], 1, 2**32 - 1)
            if mark is None:
                return
            identities.append(("", 0, mark, f"fwmark-{mark}"))
        elif len(args) >= 2 and args[0] == "group":
            group = self.vs_groups.get(args[1])
            if group is None:
                self.report.error(node.origin, "virtual_server", f'group "{args[1]}" is not defined')
                return
            identities.extend(self._group_members(group))
        elif args:
            address = self.read.address(node.origin, "virtual_server", args[0])
            if address is None:
                return
            if len(args) < 2 or args[1] == "0":
                self.report.error(
                    node.origin,
                    "virtual_server",
                    f"{address} without a port (a persistent all-ports service): lvsmon needs "
                    "a port, or a fwmark service (mark the packets with nftables)",
                )
                return
            port = self.read.integer(node.origin, "virtual_server", args[1], 1, 65535)
            if port is None:
                return
            identities.append((address, port, 0, ""))
        else:
            self.report.error(node.origin, "virtual_server", "names no address, fwmark or group")
            return
        base, reals = self._service_settings(node)
        if base is None:
            return
        for address, port, mark, hint in identities:
            vs = replace(base, address=address, port=port, fwmark=mark, real_servers=[])
            wanted = base.name or hint or service_name(vs.protocol, address, port)
            vs.name = self.draft.unique_name(safe_name(wanted))
            vs.origin = node.origin
            for build in reals:
                rs = build(port)
                if rs is not None:
                    vs.real_servers.append(rs)
            if vs.sorry_server.endswith(":0") and port:
                vs.sorry_server = vs.sorry_server[:-2] + f":{port}"
            if vs.sorry_server.endswith(":0"):
                self.report.error(node.origin, "sorry_server", "has no port; lvsmon needs one")
                vs.sorry_server = ""
            if self._duplicate(vs):
                continue
            self.draft.virtual_servers.append(vs)

    def _duplicate(self, vs: VirtualServerDraft) -> bool:
        for other in self.draft.virtual_servers:
            same = (
                (vs.fwmark and other.fwmark == vs.fwmark)
                or (not vs.fwmark and (other.protocol, other.address, other.port) == (vs.protocol, vs.address, vs.port))
            )
            if same:
                self.report.error(vs.origin, "virtual_server", f"duplicate of the one at {other.origin}")
                return True
        return False

    def _group_members(self, group: Node) -> list[tuple[str, int, int, str]]:
        name = group.args[0]
        out: list[tuple[str, int, int, str]] = []
        for item in group.children or []:
            words = item.words
            if words[0] == "fwmark":
                mark = self.read.integer(item.origin, "fwmark", words[1] if len(words) > 1 else None, 1, 2**32 - 1)
                if mark:
                    out.append(("", 0, mark, f"{name}-fwmark-{mark}"))
                continue
            port = 0
            if len(words) > 1:
                port = self.read.integer(item.origin, "virtual_server_group", words[1], 0, 65535) or 0
            if not port:
                self.report.error(item.origin, "virtual_server_group", f"{words[0]} without a port: lvsmon needs one")
                continue
            addresses = self._range(item, words[0])
            for address in addresses:
                out.append((address, port, 0, f"{name}-{address.replace(':', '_')}-{port}"))
        return out

    def _range(self, item: Node, text: str) -> list[str]:
        try:
            if "/" in text:
                net = ipaddress.ip_network(text, strict=False)
                hosts = [str(a) for a in net] if net.num_addresses <= 256 else []
            elif "-" in text:
                first, last = text.split("-", 1)
                start = ipaddress.ip_address(first)
                if ":" in last or "." in last:
                    end = ipaddress.ip_address(last)
                else:  # 192.168.200.1-10: the last part changes
                    sep = ":" if start.version == 6 else "."
                    prefix = first.rsplit(sep, 1)[0]
                    end = ipaddress.ip_address(f"{prefix}{sep}{last}")
                count = int(end) - int(start) + 1
                hosts = [str(start + i) for i in range(count)] if 0 < count <= 256 else []
            else:
                hosts = [str(ipaddress.ip_address(text))]
        except ValueError:
            self.report.error(item.origin, "virtual_server_group", f'"{text}" is not an address or range')
            return []
        if not hosts:
            self.report.error(item.origin, "virtual_server_group", f'"{text}": more than 256 addresses, not expanded')
        elif len(hosts) > 1:
            self.report.note(item.origin, "virtual_server_group", f"{text}: {len(hosts)} virtual servers")
        return hosts

    def _service_settings(self, node: Node) -> tuple[VirtualServerDraft | None, list]:  # type: ignore[type-arg]
        vs = VirtualServerDraft(name="", origin=node.origin)
        settings = Settings()
        real_nodes: list[Node] = []
        flags: list[str] = []
        quorum = (1, 0)
        for c in node.children or []:
            k, args, o = c.keyword, c.args, c.origin
            first = args[0] if args else None
            if k in ("lb_algo", "lvs_sched"):
                if first not in IPVS_SCHEDULERS:
                    self.report.error(o, k, f'"{first}" is not an IPVS scheduler lvsmon knows')
                    return None, []
                vs.scheduler = first
            elif k in ("lb_kind", "lvs_method"):
                fwd = self._forwarding(c)
                if fwd is None:
                    return None, []
                vs.forwarding = fwd
            elif k == "protocol":
                proto = (first or "").lower()
                if proto not in ("tcp", "udp", "sctp"):
                    self.report.error(o, k, f'"{first}" is not TCP, UDP or SCTP')
                    return None, []
                vs.protocol = proto
            elif k == "persistence_timeout":
                vs.persistence_timeout = 360.0 if first is None else (self.read.timer(o, k, first) or 0.0)
            elif k == "persistence_granularity":
                vs.persistence_netmask = int(first) if first and first.isdigit() else first
            elif k == "persistence_engine":
                self.report.error(o, k, f"{first}: lvsmon has no persistence engines")
            elif k in ("sh-port", "sh-fallback", "mh-port", "mh-fallback"):
                flags.append(k)
            elif k in ("flag-1", "flag-2", "flag-3"):
                flags.append(k)
            elif k == "ops":
                self.report.warning(o, k, "not translated: lvsmon has no one-packet scheduling")
            elif k == "sorry_server":
                address = self.read.address(o, k, first)
                port = self.read.integer(o, k, args[1], 1, 65535) if len(args) > 1 else 0
                if address is not None and port is not None:
                    vs.sorry_server = endpoint(address, port)
            elif k in ("sorry_server_inhibit", "sorry_server_lvs_method"):
                self.report.warning(o, k, "not translated: the sorry server uses the virtual server's forwarding")
            elif k == "quorum":
                quorum = (self.read.integer(o, k, first, 0, 2**31) or 1, quorum[1])
            elif k == "hysteresis":
                quorum = (quorum[0], self.read.integer(o, k, first, 0, 2**31) or 0)
            elif k in ("quorum_up", "quorum_down"):
                self.report.warning(o, k, "not translated: lvsmon runs no quorum scripts (alerts: LvsmonVirtualServerDown)")
            elif k == "snmp_name":
                vs.name = safe_name(first or "")
            elif k == "ip_family":
                self.report.note(o, k, "lvsmon takes the family from the addresses")
            elif k == "real_server":
                real_nodes.append(c)
            elif k in ("ha_suspend", "smtp_alert", "nat_mask", "omega"):
                self.report.note(o, k, NO_EFFECT)
            elif not self._cascading(c, settings):
                self.report.warning(o, k, "unknown virtual_server directive: not translated")
        if quorum != (1, 0):
            self.report.warning(
                node.origin,
                "quorum",
                f"quorum {quorum[0]} hysteresis {quorum[1]}: lvsmon has no quorum; its sorry "
                "server takes over only when no real server is in service",
            )
        vs.scheduler_flags = self._flags(node, vs.scheduler, flags)
        quiesce = [settings.inhibit]
        builders = []
        for rnode in real_nodes:
            rs_settings = replace(settings)
            builders.append(self._real_server_builder(rnode, vs, rs_settings, quiesce))
        chosen = [q for q in quiesce[1:] if q is not None] or [bool(settings.inhibit)]
        vs.quiesce = sum(chosen) * 2 >= len(chosen) if chosen else bool(settings.inhibit)
        if len(set(chosen)) > 1:
            self.report.warning(
                node.origin,
                "inhibit_on_failure",
                "set on some real servers only: lvsmon's on_failure is per virtual server; "
                f'written as "{"quiesce" if vs.quiesce else "remove"}"',
            )
        return vs, builders

    def _flags(self, node: Node, scheduler: str, flags: list[str]) -> list[str]:
        by_number = {"sh": {"flag-1": "sh-fallback", "flag-2": "sh-port"}, "mh": {"flag-1": "mh-fallback", "flag-2": "mh-port"}}
        out: list[str] = []
        for f in flags:
            name = by_number.get(scheduler, {}).get(f, f)
            if not name.startswith(f"{scheduler}-"):
                self.report.warning(node.origin, f, f"not a flag of scheduler {scheduler}: dropped")
                continue
            if name not in out:
                out.append(name)
        return out

    def _forwarding(self, c: Node) -> str | None:
        method = (c.args[0] if c.args else "").lower()
        fwd = FORWARDING.get(method)
        if fwd is None:
            self.report.error(c.origin, c.keyword, f'"{method}" is not NAT, DR or TUN')
            return None
        if fwd == "tunnel" and "type" in c.args:
            kind = c.args[c.args.index("type") + 1] if c.args.index("type") + 1 < len(c.args) else ""
            if kind != "ipip":
                self.report.error(c.origin, c.keyword, f"TUN type {kind}: lvsmon tunnels with IP-in-IP only")
                return None
        return fwd

    def _cascading(self, c: Node, s: Settings) -> bool:
        """Settings that a virtual server, real server or checker may carry."""
        k, first, o = c.keyword, c.args[0] if c.args else None, c.origin
        if k == "delay_loop":
            s.delay_loop = self.read.timer(o, k, first) or s.delay_loop
        elif k == "connect_timeout":
            s.connect_timeout = self.read.timer(o, k, first)
        elif k in ("retry", "nb_get_retry"):
            s.retry = self.read.integer(o, k, first, 0, 999)
        elif k == "delay_before_retry":
            s.delay_before_retry = self.read.timer(o, k, first)
        elif k == "virtualhost":
            s.virtualhost = first or ""
        elif k == "alpha":
            s.alpha = self.read.boolean(o, k, c.args)
        elif k == "inhibit_on_failure":
            s.inhibit = self.read.boolean(o, k, c.args)
        elif k == "warmup":
            s.warmup = self.read.timer(o, k, first)
            self.report.note(o, k, "lvsmon always starts checks at a random point of the first interval")
        elif k in ("log_all_failures", "smtp_alert", "snmp_name"):
            self.report.note(o, k, NO_EFFECT)
        else:
            return False
        return True

    def _real_server_builder(self, node: Node, vs: VirtualServerDraft, s: Settings, quiesce: list[bool | None]):  # type: ignore[no-untyped-def]
        """Reads the real_server block now (reports once), builds it per virtual server port."""
        args = node.args
        address = self.read.address(node.origin, "real_server", args[0] if args else None)
        port_text = args[1] if len(args) > 1 else None
        fixed_port = self.read.integer(node.origin, "real_server", port_text, 0, 65535) if port_text else None
        rs = RealServerDraft(address=address or "", port=0, origin=node.origin)
        checkers: list[Node] = []
        for c in node.children or []:
            k, cargs, o = c.keyword, c.args, c.origin
            first = cargs[0] if cargs else None
            if k == "weight":
                weight = self.read.integer(o, k, first, 0, 65535)
                rs.weight = 1 if weight is None else weight
            elif k in ("lvs_method", "lb_kind"):
                rs.forwarding = self._forwarding(c) or ""
            elif k == "uthreshold":
                rs.upper_threshold = self.read.integer(o, k, first, 0, 2**31 - 1) or 0
            elif k == "lthreshold":
                rs.lower_threshold = self.read.integer(o, k, first, 0, 2**31 - 1) or 0
            elif k in ("notify_up", "notify_down"):
                self.report.warning(
                    o, k, "not translated: lvsmon logs each transition and exports lvsmon_real_server_up"
                )
            elif k.endswith("_CHECK") or k in ("HTTP_GET", "SSL_GET"):
                checkers.append(c)
            elif not self._cascading(c, s):
                self.report.warning(o, k, "unknown real_server directive: not translated")
        quiesce.append(s.inhibit)
        if s.alpha:
            self.report.warning(
                node.origin,
                "alpha",
                "lvsmon starts a new real server in service until its first check decides",
            )
        check = self._checks(node, checkers, s, rs.address)
        rs.check = check

        def build(vs_port: int) -> RealServerDraft | None:
            if not rs.address:
                return None
            port = fixed_port if fixed_port is not None else vs_port
            return replace(rs, port=port)

        return build

    # --- checkers ---

    def _checks(self, rs: Node, checkers: list[Node], s: Settings, address: str) -> Check | None:
        chosen: Check | None = None
        for c in checkers:
            check = self._check(c, replace(s), address)
            if check is None:
                continue
            if chosen is None:
                chosen = check
            else:
                self.report.warning(
                    c.origin,
                    c.keyword,
                    "not translated: lvsmon runs one check per real server (the first one here)",
                )
        return chosen

    def _check(self, c: Node, s: Settings, address: str) -> Check | None:
        kind = c.keyword
        if kind in ("PING_CHECK", "FILE_CHECK", "BFD_CHECK"):
            self.report.warning(c.origin, kind, "not translated: lvsmon has no such check; the real server is not checked by it")
            return None
        keys: dict[str, object] = {}
        extra: dict[str, object] = {}
        urls: list[Node] = []
        hosts: list[Node] = []
        misc: dict[str, object] = {}
        for o in c.children or []:
            k, first = o.keyword, o.args[0] if o.args else None
            if self._cascading(o, s):
                continue
            if k == "connect_ip":
                if (a := self.read.address(o.origin, k, first)) is not None:
                    keys["connect_address"] = a
            elif k == "connect_port":
                if (p := self.read.integer(o.origin, k, first, 1, 65535)) is not None:
                    keys["connect_port"] = p
            elif k in ("bindto", "bind_port", "bind_if", "fwmark", "source_ip"):
                self.report.warning(o.origin, k, "not translated: lvsmon's checks use the default source")
            elif k == "url":
                urls.append(o)
            elif k == "host":
                hosts.append(o)
            elif k in ("misc_path", "misc_timeout", "misc_dynamic", "user"):
                misc[k] = o
            elif k in ("type", "name", "payload", "require_reply", "helo_name", "enable_sni", "http_protocol", "fast_recovery", "min_reply_length", "max_reply_length"):
                extra[k] = o
            else:
                self.report.warning(o.origin, k, f"unknown {kind} directive: not translated")
        if hosts:  # old SMTP_CHECK syntax: host { connect_ip ... }
            for o in hosts[0].children or []:
                if o.keyword == "connect_ip" and o.args:
                    keys["connect_address"] = o.args[0]
                elif o.keyword == "connect_port" and o.args:
                    keys["connect_port"] = int(o.args[0]) if o.args[0].isdigit() else o.args[0]
            if len(hosts) > 1:
                self.report.warning(hosts[1].origin, "host", "lvsmon checks one host per real server: the first")
        spec = self._spec(c, kind, s, urls, extra, misc)
        if spec is None:
            return None
        retry_default = {"DNS_CHECK": 3, "MISC_CHECK": 0}.get(kind, 1)
        retry = retry_default if s.retry is None else s.retry
        interval = s.delay_loop
        timeout = s.connect_timeout if s.connect_timeout is not None else 5.0
        if kind == "MISC_CHECK":
            mt = misc.get("misc_timeout")
            timeout = float(mt.args[0]) if isinstance(mt, Node) and mt.args and mt.args[0].isdigit() else interval
        if timeout >= interval:
            new = round(interval / 2, 3)
            if kind != "MISC_CHECK" or "misc_timeout" in misc:
                self.report.warning(
                    c.origin, kind, f"timeout {timeout:g}s is not shorter than delay_loop {interval:g}s: written as {new:g}s"
                )
            timeout = new
        if retry and s.delay_before_retry is not None and s.delay_before_retry != interval:
            self.report.warning(
                c.origin,
                kind,
                f"retries {s.delay_before_retry:g}s apart (delay_before_retry) become checks "
                f"every {interval:g}s (delay_loop): a failing server goes out after {retry + 1} "
                "failed checks",
            )
        out: dict[str, object] = dict(spec)
        out.update(
            {
                "interval": _duration(interval),
                "timeout": _duration(timeout),
                "rise": 1,
                "fall": retry + 1,
            }
        )
        out.update(keys)
        enabled = out.pop("enabled", True)
        if enabled is False:
            out = {"type": out["type"], "enabled": False, **{k: v for k, v in out.items() if k != "type"}}
        return Check(out, c.origin)  # type: ignore[arg-type]

    def _spec(
        self, c: Node, kind: str, s: Settings, urls: list[Node], extra: dict[str, object], misc: dict[str, object]
    ) -> dict[str, object] | None:
        def arg(name: str) -> str | None:
            node = extra.get(name)
            return node.args[0] if isinstance(node, Node) and node.args else None

        if kind == "TCP_CHECK":
            return {"type": "tcp"}
        if kind in ("HTTP_GET", "SSL_GET"):
            return self._http(c, kind, s, urls, extra)
        if kind == "SMTP_CHECK":
            helo = arg("helo_name")
            self.report.warning(
                c.origin,
                kind,
                "checked as a send_expect banner check (expects 220)"
                + (f"; HELO {helo} is not sent" if helo else "; no HELO is sent"),
            )
            return {"type": "send_expect", "protocol": "tcp", "expect": "^220"}
        if kind == "DNS_CHECK":
            return {"type": "dns", "query_name": arg("name") or ".", "query_type": (arg("type") or "SOA").upper()}
        if kind == "UDP_CHECK":
            return self._udp(c, extra)
        if kind == "MISC_CHECK":
            return self._misc(c, misc)
        self.report.warning(c.origin, kind, "unknown checker: not translated")
        return None

    def _http(self, c: Node, kind: str, s: Settings, urls: list[Node], extra: dict[str, object]) -> dict[str, object]:
        spec: dict[str, object] = {"type": "https" if kind == "SSL_GET" else "http"}
        url = urls[0] if urls else None
        path, status, regex, host = "/", "", "", s.virtualhost
        for u in (url.children or []) if url else []:
            first = u.args[0] if u.args else ""
            if u.keyword == "path":
                path = first if first.startswith("/") else "/" + first
            elif u.keyword == "status_code":
                status = " ".join(u.args)
            elif u.keyword == "digest":
                self.report.warning(u.origin, "digest", "not translated: lvsmon does not hash the body; the status is checked")
            elif u.keyword == "virtualhost":
                host = first
            elif u.keyword == "regex":
                regex = first
            elif u.keyword == "regex_no_match":
                self.report.warning(u.origin, u.keyword, "not translated: lvsmon's expect_body must match; the regex is dropped")
                regex = "\x00dropped"
            else:
                self.report.warning(u.origin, u.keyword, "not translated")
        if len(urls) > 1:
            self.report.warning(urls[1].origin, "url", f"lvsmon checks one path per real server: {path}")
        spec["path"] = path
        if host:
            spec["host"] = host
        if status:
            codes = [p if "-" in p else int(p) for p in status.split() if p.replace("-", "").isdigit()]
            spec["expect_status"] = codes  # type: ignore[assignment]
        if regex and regex != "\x00dropped":
            spec["expect_body"] = regex
        if kind == "SSL_GET":
            spec["tls_verify"] = False
            if host and "enable_sni" not in extra:
                self.report.note(c.origin, kind, f"lvsmon sends SNI {host} (keepalived: only with enable_sni)")
            for ka, lv in (("certificate", "client_cert"), ("key", "client_key")):
                file = self.ssl.get(ka)
                if file and self.source.readable(file):
                    spec[lv] = file
                elif file:
                    self.report.warning(c.origin, f"SSL {ka}", f'"{file}" is not readable here: not used')
        for name in ("http_protocol", "fast_recovery"):
            if name in extra:
                node = extra[name]
                assert isinstance(node, Node)
                self.report.note(node.origin, name, NO_EFFECT)
        return spec

    def _udp(self, c: Node, extra: dict[str, object]) -> dict[str, object]:
        spec: dict[str, object] = {"type": "send_expect", "protocol": "udp"}
        payload = extra.get("payload")
        if isinstance(payload, Node) and payload.args:
            spec["send_hex"] = hex_payload(" ".join(payload.args))
        reply = extra.get("require_reply")
        if isinstance(reply, Node) and reply.args and "x" not in " ".join(reply.args).lower():
            spec["expect_hex"] = hex_payload(" ".join(reply.args))
        else:
            spec["expect"] = "*"
            if not isinstance(reply, Node):
                self.report.warning(
                    c.origin,
                    "UDP_CHECK",
                    "without require_reply keepalived only notices ICMP errors; lvsmon needs an answer (any)",
                )
            elif reply.args:
                self.report.warning(reply.origin, "require_reply", "wildcard nibbles: any answer is accepted")
        for name in ("min_reply_length", "max_reply_length"):
            node = extra.get(name)
            if isinstance(node, Node):
                self.report.warning(node.origin, name, "not translated")
        return spec

    def _misc(self, c: Node, misc: dict[str, object]) -> dict[str, object] | None:
        path = misc.get("misc_path")
        if not isinstance(path, Node) or not path.args:
            self.report.error(c.origin, "MISC_CHECK", "has no misc_path")
            return None
        argv = split_command(" ".join(path.args))
        spec: dict[str, object] = {"type": "exec", "program": argv[0]}
        if len(argv) > 1:
            spec["args"] = argv[1:]
        if "misc_dynamic" in misc:
            spec["dynamic_weight"] = True
        user = misc.get("user")
        if isinstance(user, Node):
            self.report.warning(user.origin, "user", f"{' '.join(user.args)}: lvsmon runs the program as itself")
        if self.source.executable(argv[0]):
            self.report.warning(
                path.origin,
                "misc_path",
                f"review {argv[0]}: lvsmon runs {argv} without a shell; exit 0 = up, 1 = down"
                + (", 2..255 = weight exit-2" if "misc_dynamic" in misc else ""),
            )
        else:
            spec["enabled"] = False
            self.report.warning(
                path.origin,
                "misc_path",
                f"{argv[0]} is not an executable file on this machine: the check is written "
                "with enabled = false (the real server is not checked); install the script, "
                "then remove that line",
            )
        return spec


def _duration(seconds: float) -> str:
    from lvsmon.importers.draft import seconds as fmt

    return fmt(seconds)


def translate(path: str, source: Source, config_id: str = "") -> tuple[Draft, Report]:
    report = Report()
    draft = Translator(path, source, report, config_id).run()
    return draft, report
