"""Piranha's lvs.cf (lvs.cf(5): pulse, lvs and nanny) -> lvsmon.

    service = lvs                  primary = 192.0.2.2        backup = 192.0.2.3
    network = nat                  nat_router = 198.51.100.1 eth1:1
    virtual web {                  # one virtual server
        address = 192.0.2.100 eth0:1      port = 80      scheduler = wlc
        send = "GET / HTTP/1.0\\r\\n\\r\\n"   expect = "HTTP"     timeout = 6   reentry = 15
        server web1 { address = 198.51.100.11  active = 1  weight = 1 }
    }

nanny checks every `timeout` seconds (its --interval) and takes a real server
out at the first failure; it re-adds one after `reentry` seconds of successes.
pulse's heartbeat is not VRRP: the primary/backup pair becomes one VRRPv3
failover group holding every virtual server's address and the NAT router.
"""

from __future__ import annotations

import ipaddress
import math
import re
from dataclasses import dataclass

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
    seconds,
)
from lvsmon.importers.report import Origin, Report
from lvsmon.importers.source import Source
from lvsmon.importers.values import FORWARDING, Reader, read_main, split_command
from lvsmon.schedulers import IPVS_SCHEDULERS

_LINE = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)\Z")  # on a stripped line
_BLOCK = re.compile(r"\s*(virtual|server|failover)\s+(\S+)\s*\{\s*\Z")
_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "\\": "\\", '"': '"'}
NOTES = {
    "serial_no": "the Piranha GUI's revision counter",
    "debug_level": "lvsmon logs at daemon.log_level",
    "rsh_command": "lvsmon never copies files between directors",
    "heartbeat": "VRRP adverts are lvsmon's heartbeat",
    "heartbeat_port": "VRRP is IP protocol 112, not a UDP port",
    "primary_private": "VRRP adverts go out on the failover group's interface",
    "backup_private": "VRRP adverts go out on the failover group's interface",
    "hard_shutdown": "no effect in lvsmon",
    "reservation_conflict_action": "no effect in lvsmon",
    "monitor_links": "use failover_group.track_interface",
    "lvs_sync_daemon": "see syncdaemon",
}


@dataclass
class Item:
    key: str
    value: str
    origin: Origin
    children: list[Item] | None = None


def parse(text: str, path: str, report: Report) -> list[Item]:
    root: list[Item] = []
    stack: list[list[Item]] = [root]
    for n, raw in enumerate(text.splitlines(), start=1):
        origin = Origin(path, n)
        if report.overlong(origin, raw):
            continue
        line = _strip_comment(raw).strip()
        if not line:
            continue
        if m := _BLOCK.match(line):
            item = Item(m.group(1), m.group(2), origin, [])
            stack[-1].append(item)
            assert item.children is not None
            stack.append(item.children)
        elif line == "}":
            if len(stack) == 1:
                report.error(origin, "}", "closes no block")
            else:
                stack.pop()
        elif m := _LINE.match(line):
            stack[-1].append(Item(m.group(1), _unquote(m.group(2)), origin))
        else:
            report.error(origin, line.split()[0], "not a `key = value` line or a block")
    if len(stack) > 1:
        report.error(Origin(path, len(text.splitlines())), "{", "a block is never closed")
    return root


def _strip_comment(line: str) -> str:
    quoted = False
    for i, c in enumerate(line):
        if c == '"' and (i == 0 or line[i - 1] != "\\"):
            quoted = not quoted
        elif c == "#" and not quoted:
            return line[:i]
    return line


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def unescape(text: str) -> str:
    """nanny's send string escapes: \\n \\r \\t and \\ before any other character."""
    out, i = [], 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text):
            out.append(_ESCAPES.get(text[i + 1], text[i + 1]))
            i += 2
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


class Translator:
    def __init__(self, path: str, source: Source, report: Report):
        self.path, self.source, self.report = path, source, report
        self.read = Reader(report)
        self.draft = Draft("lvs.cf", path)
        self.globals: dict[str, Item] = {}
        self.vips: list[tuple[str, int, str, Origin]] = []  # address, prefix, device

    def run(self, items: list[Item]) -> Draft:
        for item in items:
            if item.children is None:
                self.globals[item.key] = item
        forwarding = self._network()
        for item in items:
            if item.children is None:
                self._global(item)
            elif item.key == "virtual":
                self._virtual(item, forwarding)
            else:
                self.report.error(
                    item.origin,
                    f"{item.key} {item.value}",
                    "failover services (fos) are not translated",
                )
        self._failover()
        return self.draft

    def _value(self, key: str) -> str:
        item = self.globals.get(key)
        return item.value if item else ""

    def _network(self) -> str:
        item = self.globals.get("network")
        if item is None:
            return "nat"
        fwd = FORWARDING.get(item.value.lower())
        if fwd is None:
            self.report.error(
                item.origin, "network", f'"{item.value}" is not nat, direct or tunnel'
            )
            return "nat"
        return fwd

    def _global(self, item: Item) -> None:
        k, o = item.key, item.origin
        if k == "service" and item.value != "lvs":
            self.report.error(o, k, f'"{item.value}": only Virtual Servers (lvs) are translated')
        elif k in ("tcp_timeout", "tcpfin_timeout", "udp_timeout"):
            value = self.read.timer(o, k, item.value)
            if value:
                self.draft.timeouts[
                    {"tcpfin_timeout": "tcp_fin"}.get(k, k.removesuffix("_timeout"))
                ] = value
        elif k in NOTES:
            self.report.note(o, k, NOTES[k])
        elif k not in (
            "service",
            "primary",
            "backup",
            "backup_active",
            "keepalive",
            "deadtime",
            "network",
            "nat_router",
            "nat_nmask",
            "syncdaemon",
            "syncd_iface",
            "syncd_id",
        ):
            self.report.warning(o, k, "unknown lvs.cf setting: not translated")

    def _virtual(self, item: Item, forwarding: str) -> None:
        keys = {c.key: c for c in item.children or [] if c.children is None}
        name = safe_name(item.value)
        active = keys.get("active")
        if active is not None and active.value.strip() == "0":
            self.report.note(item.origin, f"virtual {item.value}", "active = 0: not translated")
            return
        vs = VirtualServerDraft(
            name=self.draft.unique_name(name), origin=item.origin, forwarding=forwarding
        )
        address_item = keys.get("address")
        if address_item is None:
            self.report.error(item.origin, f"virtual {item.value}", "has no address")
            return
        words = address_item.value.split()
        address = self.read.address(address_item.origin, "address", words[0] if words else "")
        if address is None:
            return
        vs.address = address
        device = words[1].split(":")[0] if len(words) > 1 else ""
        prefix = self._prefix(keys.get("vip_nmask"), address)
        self.vips.append((address, prefix, device, address_item.origin))
        port_item = keys.get("port")
        port = (
            self.read.integer(port_item.origin, "port", port_item.value, 0, 65535)
            if port_item
            else 0
        )
        mark_item = keys.get("fwmark")
        if mark_item is not None and mark_item.value.strip() not in ("", "0"):
            vs.fwmark = (
                self.read.integer(mark_item.origin, "fwmark", mark_item.value, 1, 2**32 - 1) or 0
            )
        if not vs.fwmark and not port:
            self.report.error(item.origin, f"virtual {item.value}", "has no port (and no fwmark)")
            return
        vs.port = port or 0
        for c in item.children or []:
            self._vs_key(vs, c)
        check = self._check(item, keys, vs)
        for c in item.children or []:
            if c.children is not None and c.key == "server":
                rs = self._server(c, vs, port or 0)
                if rs is not None:
                    rs.check = check
                    vs.real_servers.append(rs)
        self.draft.virtual_servers.append(vs)

    def _prefix(self, item: Item | None, address: str) -> int:
        if item is None:
            return 32 if ":" not in address else 128
        try:
            return ipaddress.ip_network(f"0.0.0.0/{item.value}").prefixlen
        except ValueError:
            self.report.error(item.origin, item.key, f'"{item.value}" is not a netmask')
            return 32

    def _vs_key(self, vs: VirtualServerDraft, c: Item) -> None:
        k, v, o = c.key, c.value, c.origin
        if c.children is not None:
            return
        if k == "scheduler":
            if v not in IPVS_SCHEDULERS:
                self.report.error(o, k, f'"{v}" is not an IPVS scheduler lvsmon knows')
            else:
                vs.scheduler = v
        elif k == "protocol":
            if v.lower() not in ("tcp", "udp"):
                self.report.error(o, k, f'"{v}" is not tcp or udp')
            else:
                vs.protocol = v.lower()
        elif k == "persistent":
            vs.persistence_timeout = self.read.timer(o, k, v) or 0.0
        elif k == "pmask":
            vs.persistence_netmask = v
        elif k in ("sorry_server", "fallback"):
            self._sorry(vs, c)
        elif k == "quiesce_server":
            if v.strip() == "1":
                self.report.warning(
                    o,
                    k,
                    "lvsmon cannot reset the kernel's connection counts; use slow_start so a "
                    "returning server is not flooded (lvsmon/health/README.md)",
                )
        elif k == "load_monitor":
            if v not in ("", "none"):
                self.report.warning(
                    o,
                    k,
                    f"{v}: not translated; lvsmon's [virtual_server.adaptive_weights] mode = "
                    '"piranha" follows node_exporter load (lvsmon/weights/README.md)',
                )
        elif k == "vip_nmask" and not vs.fwmark:
            pass
        elif k not in (
            "active",
            "address",
            "port",
            "fwmark",
            "send",
            "expect",
            "use_regex",
            "send_program",
            "timeout",
            "reentry",
            "vip_nmask",
        ):
            self.report.warning(o, k, "unknown virtual server setting: not translated")

    def _sorry(self, vs: VirtualServerDraft, c: Item) -> None:
        text = c.value.replace(" ", ":") if c.value.count(":") <= 1 else c.value
        host, _, port_text = text.rpartition(":") if ":" in text else (text, "", "")
        address = self.read.address(c.origin, c.key, host or text)
        port = self.read.integer(c.origin, c.key, port_text, 1, 65535) if port_text else vs.port
        if address is not None and port:
            vs.sorry_server = endpoint(address, port)
        elif address is not None:
            self.report.error(c.origin, c.key, "has no port; lvsmon needs one")

    def _check(self, item: Item, keys: dict[str, Item], vs: VirtualServerDraft) -> Check:
        timeout = (
            self.read.timer(keys["timeout"].origin, "timeout", keys["timeout"].value)
            if "timeout" in keys
            else None
        )
        reentry = (
            self.read.timer(keys["reentry"].origin, "reentry", keys["reentry"].value)
            if "reentry" in keys
            else None
        )
        interval = max(timeout or 6.0, 0.2)
        rise = max(1, math.ceil((reentry if reentry is not None else 15.0) / interval))
        spec: dict[str, object] = {}
        program = keys.get("send_program")
        send = keys.get("send")
        expect = keys.get("expect")
        regex = keys.get("use_regex")
        origin = item.origin
        if program is not None and program.value:
            argv = [a.replace("%h", "{address}") for a in split_command(program.value)]
            spec = {"type": "exec", "program": argv[0]}
            if argv[1:]:
                spec["args"] = argv[1:]
            origin = program.origin
            if expect is not None and expect.value:
                self.report.warning(
                    expect.origin,
                    "expect",
                    f'"{expect.value}": lvsmon judges send_program by its exit status (0 = up), '
                    "not by its output",
                )
            if not self.source.executable(argv[0]):
                spec["enabled"] = False
                self.report.warning(
                    program.origin,
                    "send_program",
                    f"{argv[0]} is not an executable file on this machine: the check is written "
                    "with enabled = false; install it, then remove that line",
                )
            else:
                self.report.warning(
                    program.origin, "send_program", f"review: lvsmon runs {argv} without a shell"
                )
        elif (
            (send is not None and send.value)
            or (expect is not None and expect.value)
            or vs.protocol == "udp"
        ):
            spec = {"type": "send_expect", "protocol": vs.protocol}
            if send is not None and send.value:
                spec["send"] = unescape(send.value)
            if expect is not None and expect.value:
                use_regex = regex is not None and regex.value.strip() == "1"
                spec["expect"] = (
                    expect.value if use_regex else "^" + re.escape(unescape(expect.value))
                )
            elif vs.protocol == "udp":
                spec["expect"] = "*"
                self.report.warning(
                    item.origin, "expect", "UDP checks need an answer: any answer is accepted"
                )
        else:
            spec = {"type": "tcp"}
        check_timeout = min(interval / 2, 5.0)
        spec.update(
            {
                "interval": seconds(interval),
                "timeout": seconds(round(check_timeout, 3)),
                "rise": rise,
                "fall": 1,
            }
        )
        if spec.get("enabled") is False:
            spec = {"type": spec.pop("type"), "enabled": spec.pop("enabled"), **spec}
        self.report.warning(
            item.origin,
            "timeout/reentry",
            f"nanny's timing as lvsmon's: a check every {seconds(interval)}, out at the first "
            f"failure, back after {rise} successes in a row",
        )
        return Check(spec, origin)  # type: ignore[arg-type]

    def _server(self, item: Item, vs: VirtualServerDraft, port: int) -> RealServerDraft | None:
        keys = {c.key: c for c in item.children or []}
        if "active" in keys and keys["active"].value.strip() == "0":
            self.report.note(item.origin, f"server {item.value}", "active = 0: not translated")
            return None
        if "address" not in keys:
            self.report.error(item.origin, f"server {item.value}", "has no address")
            return None
        a = keys["address"]
        address = self.read.address(a.origin, "address", a.value.split()[0] if a.value else "")
        if address is None:
            return None
        rs = RealServerDraft(address=address, port=port, origin=item.origin)
        for c in item.children or []:
            if c.key == "weight":
                weight = self.read.integer(c.origin, "weight", c.value, 0, 65535)
                rs.weight = 1 if weight is None else weight
            elif c.key == "port":
                rs.port = self.read.integer(c.origin, "port", c.value, 0, 65535) or port
            elif c.key not in ("address", "active"):
                self.report.warning(c.origin, c.key, "unknown server setting: not translated")
        return rs

    def _failover(self) -> None:
        backup = self.globals.get("backup")
        active = self.globals.get("backup_active")
        if backup is None or (active is not None and active.value.strip() == "0"):
            if self.draft.virtual_servers:
                self.report.note(
                    Origin(self.path, 0), "backup", "no active backup director: no failover group"
                )
            return
        devices = [d for _, _, d, _ in self.vips if d]
        interface = devices[0] if devices else ""
        if not interface:
            interface = "eth0"
            self.report.warning(
                backup.origin,
                "backup",
                'no virtual server address names its device (address = IP DEV): "eth0"',
            )
        group = GroupDraft(
            name="lvs", origin=backup.origin, vrid=1, interface=interface, priority=150
        )
        seen: set[str] = set()
        for address, prefix, device, _origin in self.vips:
            if address not in seen:
                seen.add(address)
                group.addresses.append(GroupAddressDraft(f"{address}/{prefix}", device))
        nat = self.globals.get("nat_router")
        if nat is not None and nat.value:
            words = nat.value.split()
            router = self.read.address(nat.origin, "nat_router", words[0])
            mask = self._prefix(self.globals.get("nat_nmask"), router or "")
            if router and router not in seen:
                group.addresses.append(
                    GroupAddressDraft(
                        f"{router}/{mask}", words[1].split(":")[0] if len(words) > 1 else ""
                    )
                )
        keepalive = self.globals.get("keepalive")
        if keepalive is not None:
            value = self.read.timer(keepalive.origin, "keepalive", keepalive.value) or 1.0
            group.advert_interval = min(40.95, max(0.01, round(value, 2)))
        deadtime = self.globals.get("deadtime")
        if deadtime is not None:
            self.report.warning(
                deadtime.origin,
                "deadtime",
                f"{deadtime.value}s: a VRRPv3 backup takes over after 3 adverts "
                f"({seconds(3 * group.advert_interval)}) plus skew",
            )
        self.report.warning(
            backup.origin,
            "primary/backup",
            f'pulse\'s heartbeat becomes VRRPv3 failover group "lvs" (vrid 1) on {interface}, '
            f"priority 150 on this director; on the backup ({backup.value}) set priority = 100; "
            "run lvsmon on both directors",
        )
        self.draft.groups.append(group)
        if self._value("syncdaemon").strip() == "1":
            iface = self._value("syncd_iface") or interface
            item = self.globals.get("syncd_id")
            syncid = item and self.read.integer(item.origin, item.key, item.value, 0, 255)
            self.draft.sync_daemon = SyncDaemonDraft(iface, syncid or 0, follow=group.name)


def translate(path: str, source: Source) -> tuple[Draft, Report]:
    report = Report()
    text = read_main(path, source, report)
    if text is None:
        return Draft("lvs.cf", path), report
    return Translator(path, source, report).run(parse(text, path, report)), report
