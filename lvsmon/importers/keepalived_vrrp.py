"""keepalived's VRRP (vrrp_instance, its addresses, tracking, notify scripts, the IPVS sync
daemon that follows it) as lvsmon failover groups: VRRPv3 on the wire."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from lvsmon.importers.draft import Draft, GroupAddressDraft, GroupDraft, SyncDaemonDraft, safe_name
from lvsmon.importers.kaparse import Node
from lvsmon.importers.report import Report
from lvsmon.importers.values import Reader, split_command

NO_EFFECT = "no effect in lvsmon"


@dataclass
class Vrrp:
    draft: Draft
    report: Report
    read: Reader
    instances: dict[str, GroupDraft] = field(default_factory=dict)
    versions: dict[str, int] = field(default_factory=dict)  # instance -> VRRP version set
    global_version: int = 0
    garp_repeat: int | None = None
    garp_refresh: float | None = None
    sync_daemon: tuple[Node, str, str, int] | None = None  # node, interface, instance, id

    def instance(self, node: Node) -> None:
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
                        self.report.warning(
                            peer.origin, k, f"{' '.join(peer.args)}: not translated"
                        )
            elif k in ("unicast_src_ip", "mcast_src_ip"):
                self.report.note(o, k, "lvsmon sends from the interface's primary address")
            elif k == "version":
                self.versions[group.name] = self.read.integer(o, k, first, 2, 3) or 0
            elif k == "authentication":
                self.report.warning(
                    o,
                    k,
                    'dropped: VRRPv3 has no authentication (lvsmon\'s auth = "hmac-sha256" '
                    "works between lvsmon directors only)",
                )
            elif k == "garp_master_repeat":
                group.garp_repeat = self.read.integer(o, k, first, 0, 100)
            elif k == "garp_master_refresh":
                group.garp_refresh = self.read.timer(o, k, first)
            elif k == "lvs_sync_daemon_interface":
                self.sync_daemon = (c, first or "", name, 0)
            elif k in ("use_vmac", "vmac_xmit_base", "use_ipvlan", "use_vmac_addr"):
                self.report.warning(
                    o, k, "not translated: lvsmon moves addresses, not a virtual MAC"
                )
            elif k in ("virtual_routes", "virtual_rules"):
                self.report.warning(
                    o, k, "not translated: lvsmon moves addresses, not routes or rules"
                )
            elif k in ("mcast_dst_ip", "down_timer_adverts", "dont_track_primary", "unicast_ttl"):
                self.report.warning(o, k, "not translated: lvsmon follows RFC 5798 here")
            else:
                self.report.note(o, k, NO_EFFECT)
        if priority is None:
            priority = 255 if state == "MASTER" else 100  # keepalived's defaults
            if state == "MASTER":
                self.report.note(
                    node.origin, "priority", "unset with state MASTER: 255, as keepalived"
                )
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
        missing = [
            w
            for w, v in (("virtual_router_id", group.vrid), ("interface", group.interface))
            if not v
        ]
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
            self.report.warning(
                c.origin, c.keyword, f"{value}s rounded to {centis / 100}s (whole centiseconds)"
            )
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
                self.report.note(
                    item.origin, c.keyword, f"{text}: {' '.join(options)}: not translated"
                )
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
                severity(
                    item.origin,
                    c.keyword,
                    f"{iface.ip} is already moved by failover group {owner}: dropped",
                )
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
        extra = (
            f" (run as {' '.join(c.args[1:])} by keepalived: lvsmon runs it as itself)"
            if len(c.args) > 1
            else ""
        )
        self.report.warning(
            c.origin,
            c.keyword,
            f"review {argv[0]}: lvsmon runs {argv} without a shell, with LVSMON_HA_GROUP, "
            f"LVSMON_HA_STATE ... in its environment{extra}",
        )

    def finish(self) -> None:
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
