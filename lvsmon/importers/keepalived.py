"""keepalived.conf -> lvsmon: LVS (virtual_server, groups, real servers) here; checkers in
keepalived_checks.py, VRRP in keepalived_vrrp.py.

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
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from lvsmon.importers import kaparse
from lvsmon.importers.draft import (
    Draft,
    RealServerDraft,
    VirtualServerDraft,
    endpoint,
    safe_name,
    service_name,
)
from lvsmon.importers.kaparse import Node
from lvsmon.importers.keepalived_checks import Checkers, Settings
from lvsmon.importers.keepalived_vrrp import Vrrp
from lvsmon.importers.report import Report
from lvsmon.importers.source import Source
from lvsmon.importers.values import FORWARDING, Reader, number
from lvsmon.schedulers import IPVS_SCHEDULERS

NO_EFFECT = "no effect in lvsmon"
# a real_server block read once, built for each port of its virtual server (groups)
RealServerBuilder = Callable[[int], "RealServerDraft | None"]
SCHEDULER_FLAGS = ("sh-port", "sh-fallback", "mh-port", "mh-fallback", "flag-1", "flag-2", "flag-3")
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
class Translator:
    path: str
    source: Source
    report: Report
    config_id: str = ""
    draft: Draft = field(init=False)
    read: Reader = field(init=False)
    vs_groups: dict[str, Node] = field(default_factory=dict)
    ssl: dict[str, str] = field(default_factory=dict)
    vrrp: Vrrp = field(init=False)
    checkers: Checkers = field(init=False)

    def __post_init__(self) -> None:
        self.draft = Draft("keepalived", self.path)
        self.read = Reader(self.report)
        self.vrrp = Vrrp(self.draft, self.report, self.read)
        self.checkers = Checkers(self.report, self.read, self.source, self.ssl)

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
        self.vrrp.finish()
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
            self.vrrp.instance(node)
        elif k == "virtual_server":
            self._virtual_server(node)
        elif k == "vrrp_sync_group":
            members = [
                c.keyword
                for g in node.children or []
                if g.keyword == "group"
                for c in g.children or []
            ]
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
            self.report.note(
                node.origin, k, "static addresses and routes are the OS's to configure"
            )
        elif k in (
            "vrrp_track_file",
            "track_file",
            "vrrp_track_process",
            "bfd_instance",
            "garp_group",
        ):
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
            self.vrrp.global_version = (
                self.read.integer(node.origin, k, args[0] if args else None, 2, 3) or 0
            )
        elif k == "vrrp_garp_master_repeat":
            self.vrrp.garp_repeat = self.read.integer(
                node.origin, k, args[0] if args else None, 0, 100
            )
        elif k == "vrrp_garp_master_refresh":
            self.vrrp.garp_refresh = self.read.timer(node.origin, k, args[0] if args else None)
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
                self.report.warning(
                    node.origin, node.keyword, f"{word} {args.pop(0)}: not translated"
                )
            elif not instance:
                instance = word
        self.vrrp.sync_daemon = (node, interface, instance, syncid)

    # --- VRRP ---

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
                self.report.error(
                    node.origin, "virtual_server", f'group "{args[1]}" is not defined'
                )
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
            same = (vs.fwmark and other.fwmark == vs.fwmark) or (
                not vs.fwmark
                and (other.protocol, other.address, other.port)
                == (vs.protocol, vs.address, vs.port)
            )
            if same:
                self.report.error(
                    vs.origin, "virtual_server", f"duplicate of the one at {other.origin}"
                )
                return True
        return False

    def _group_members(self, group: Node) -> list[tuple[str, int, int, str]]:
        name = group.args[0]
        out: list[tuple[str, int, int, str]] = []
        for item in group.children or []:
            words = item.words
            if words[0] == "fwmark":
                mark = self.read.integer(
                    item.origin, "fwmark", words[1] if len(words) > 1 else None, 1, 2**32 - 1
                )
                if mark:
                    out.append(("", 0, mark, f"{name}-fwmark-{mark}"))
                continue
            port = 0
            if len(words) > 1:
                port = (
                    self.read.integer(item.origin, "virtual_server_group", words[1], 0, 65535) or 0
                )
            if not port:
                self.report.error(
                    item.origin,
                    "virtual_server_group",
                    f"{words[0]} without a port: lvsmon needs one",
                )
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
            self.report.error(
                item.origin, "virtual_server_group", f'"{text}" is not an address or range'
            )
            return []
        if not hosts:
            self.report.error(
                item.origin,
                "virtual_server_group",
                f'"{text}": more than 256 addresses, not expanded',
            )
        elif len(hosts) > 1:
            self.report.note(
                item.origin, "virtual_server_group", f"{text}: {len(hosts)} virtual servers"
            )
        return hosts

    def _service_settings(
        self, node: Node
    ) -> tuple[VirtualServerDraft | None, list[RealServerBuilder]]:
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
                vs.persistence_timeout = (
                    360.0 if first is None else (self.read.timer(o, k, first) or 0.0)
                )
            elif k == "persistence_granularity":
                vs.persistence_netmask = number(first) if first else first
            elif k == "persistence_engine":
                self.report.error(o, k, f"{first}: lvsmon has no persistence engines")
            elif k in SCHEDULER_FLAGS:
                flags.append(k)
            elif k == "ops":
                self.report.warning(o, k, "not translated: lvsmon has no one-packet scheduling")
            elif k == "sorry_server":
                address = self.read.address(o, k, first)
                port = self.read.integer(o, k, args[1], 1, 65535) if len(args) > 1 else 0
                if address is not None and port is not None:
                    vs.sorry_server = endpoint(address, port)
            elif k in ("sorry_server_inhibit", "sorry_server_lvs_method"):
                self.report.warning(
                    o, k, "not translated: the sorry server uses the virtual server's forwarding"
                )
            elif k == "quorum":
                quorum = (self.read.integer(o, k, first, 0, 2**31) or 1, quorum[1])
            elif k == "hysteresis":
                quorum = (quorum[0], self.read.integer(o, k, first, 0, 2**31) or 0)
            elif k in ("quorum_up", "quorum_down"):
                self.report.warning(
                    o,
                    k,
                    "not translated: lvsmon runs no quorum scripts "
                    "(alert LvsmonVirtualServerNoHealthyRealServer instead)",
                )
            elif k == "snmp_name":
                vs.name = safe_name(first or "")
            elif k == "ip_family":
                self.report.note(o, k, "lvsmon takes the family from the addresses")
            elif k == "real_server":
                real_nodes.append(c)
            elif k in ("ha_suspend", "smtp_alert", "nat_mask", "omega"):
                self.report.note(o, k, NO_EFFECT)
            elif not self.checkers.cascading(c, settings):
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
        builders: list[RealServerBuilder] = []
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
        by_number = {
            "sh": {"flag-1": "sh-fallback", "flag-2": "sh-port"},
            "mh": {"flag-1": "mh-fallback", "flag-2": "mh-port"},
        }
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
            kind = (
                c.args[c.args.index("type") + 1] if c.args.index("type") + 1 < len(c.args) else ""
            )
            if kind != "ipip":
                self.report.error(
                    c.origin, c.keyword, f"TUN type {kind}: lvsmon tunnels with IP-in-IP only"
                )
                return None
        return fwd

    def _real_server_builder(
        self, node: Node, vs: VirtualServerDraft, s: Settings, quiesce: list[bool | None]
    ) -> RealServerBuilder:
        """Reads the real_server block now (reports once), builds it per virtual server port."""
        args = node.args
        address = self.read.address(node.origin, "real_server", args[0] if args else None)
        port_text = args[1] if len(args) > 1 else None
        fixed_port = (
            self.read.integer(node.origin, "real_server", port_text, 0, 65535)
            if port_text
            else None
        )
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
                    o,
                    k,
                    "not translated: lvsmon logs each transition and exports lvsmon_real_server_up",
                )
            elif k.endswith("_CHECK") or k in ("HTTP_GET", "SSL_GET"):
                checkers.append(c)
            elif not self.checkers.cascading(c, s):
                self.report.warning(o, k, "unknown real_server directive: not translated")
        quiesce.append(s.inhibit)
        if s.alpha:
            self.report.warning(
                node.origin,
                "alpha",
                "lvsmon starts a new real server in service until its first check decides",
            )
        check = self.checkers.checks(node, checkers, s, rs.address)
        rs.check = check

        def build(vs_port: int) -> RealServerDraft | None:
            if not rs.address:
                return None
            port = fixed_port if fixed_port is not None else vs_port
            built = replace(rs, port=port)
            check = built.check
            portless = port == 0 and check is not None and "connect_port" not in check.keys
            if portless and check is not None and check.keys.get("type") != "exec":
                self.report.warning(
                    check.origin,
                    "connect_port",
                    "the real server has no port (fwmark) and the checker names none: "
                    "not translated, the real server is not checked",
                )
                built.check = None
            return built

        return build

    # --- checkers ---


def translate(path: str, source: Source, config_id: str = "") -> tuple[Draft, Report]:
    report = Report()
    draft = Translator(path, source, report, config_id).run()
    return draft, report
