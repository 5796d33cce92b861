"""`[[failover_group]]` tables -> frozen `FailoverGroup`s, errors with key paths.

Built on lvsmon.configkit, so messages read exactly like the rest of the file
("<value> is not valid: expected ..."). A failover group (lvsmon.model.failover)
is one VRRPv3 virtual router: the addresses it moves together (public VIPs and
the private-side NAT gateway, on any interfaces), how it advertises, and what
lowers its priority.

    [[failover_group]]
    name = "edge"
    vrid = 51
    interface = "eth0"
    priority = 150
    advert_interval = "100ms"

    [[failover_group.address]]
    address = "192.0.2.100/24"          # interface defaults to the group's

    [[failover_group.address]]
    address = "198.51.100.1/24"         # the real servers' NAT gateway
    interface = "eth1"
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from lvsmon import configkit as ck
from lvsmon.config.readout import Readout
from lvsmon.configkit import DURATION, NAME, Problem, Section, format_duration
from lvsmon.model import IPAddress
from lvsmon.model.failover import (
    FailoverGroup,
    GroupAddress,
    Hooks,
    TrackInterface,
    TrackRealServers,
)

SECTION = "failover_group"
AUTH_MODES = ("off", "hmac-sha256")
MIN_KEY_LENGTH = 16
MAX_KEY_FILE_BYTES = 64 * 1024
PRIORITY_DROP = "a negative integer -254..-1 (subtracted from the priority)"


def _interface_address(value: Any) -> tuple[IPAddress, int]:
    if not isinstance(value, str):
        raise TypeError(value)
    iface = ipaddress.ip_interface(value)
    if "/" not in value:  # a bare address is a host route, as with `ip addr add`
        return iface.ip, iface.max_prefixlen
    return iface.ip, iface.network.prefixlen


def _advert_interval(value: Any) -> float:
    seconds = ck.duration(value)
    centis = round(seconds * 100)
    if abs(centis - seconds * 100) > 1e-6 or not 1 <= centis <= 4095:
        raise ValueError(value)
    return centis / 100


def read(root: Section, readout: Readout) -> tuple[FailoverGroup, ...]:
    """Read every `[[failover_group]]` of the document; append problems.

    Besides the groups, only the virtual server names of the raw document are read
    (track_real_servers refers to them, even to one that is itself in error).
    """
    problems = readout.problems
    context = _Context.of(readout.doc)
    groups: list[FailoverGroup] = []
    names: dict[str, int] = {}
    vrids: dict[tuple[str, int, int], str] = {}
    for i, data in enumerate(root.tables(SECTION), start=1):
        group = _read_group(data, i, problems, context)
        if group is None:
            continue
        path = f"{SECTION}[{group.name}]"
        if group.name in names:
            problems.append(
                Problem(
                    f"{path}.name",
                    f'"{group.name}" is used by two failover groups '
                    f"(#{names[group.name]} and #{i})",
                )
            )
            continue
        vkey = (group.interface, group.family, group.vrid)
        if vkey in vrids:
            problems.append(
                Problem(
                    f"{path}.vrid",
                    f"{group.vrid} on {group.interface} (IPv{group.family}) "
                    f"is also used by failover_group[{vrids[vkey]}]",
                )
            )
            continue
        names[group.name] = i
        vrids[vkey] = group.name
        groups.append(group)
    _check_shared_addresses(groups, problems)
    return tuple(groups)


@dataclass(frozen=True, slots=True)
class _Context:
    virtual_servers: frozenset[str] | None  # None: the document has no virtual servers

    @staticmethod
    def of(root_data: dict[str, Any]) -> _Context:
        vss = root_data.get("virtual_server")
        names = None
        if isinstance(vss, list):
            names = frozenset(
                v["name"] for v in vss if isinstance(v, dict) and isinstance(v.get("name"), str)
            )
        return _Context(names)


def _read_group(
    data: dict[str, Any], index: int, problems: list[Problem], ctx: _Context
) -> FailoverGroup | None:
    sec = Section(data, f"{SECTION}[{ck.label_of(data, index)}]", problems)
    before = len(problems)
    name = sec.require("name", ck.name, NAME)
    sec.get("version", _version, 3, "3 (VRRP version 3, RFC 5798; keepalived: vrrp_version 3)")
    vrid = sec.require("vrid", ck.int_in(1, 255), "an integer virtual router id 1..255")
    interface = sec.require("interface", ck.interface, 'an interface name such as "eth0"')
    priority = sec.get(
        "priority",
        ck.int_in(1, 255),
        100,
        "an integer 1..255 (255: the address owner; 0 is reserved for handover)",
    )
    interval = sec.get(
        "advert_interval",
        _advert_interval,
        1.0,
        'a duration of whole centiseconds from "10ms" to "40.95s", such as "1s" or "100ms"',
    )
    preempt = sec.get("preempt", ck.boolean, True, "true or false")
    preempt_delay = sec.get("preempt_delay", ck.bounded_duration(3600), 0.0, DURATION + " up to 1h")
    addresses = _read_addresses(sec, interface or "")
    family = _read_family(sec, addresses)
    peers: tuple[IPAddress, ...] = sec.get(
        "unicast_peers", ck.addresses, (), "an array of IPv4 or IPv6 addresses"
    )
    garp_repeat = sec.get("garp_repeat", ck.int_in(0, 100), 5, "an integer 0..100")
    garp_interval = sec.get("garp_interval", ck.bounded_duration(10), 0.01, DURATION + " up to 10s")
    garp_refresh = sec.get("garp_refresh", ck.duration, 10.0, DURATION + " (0 = off)")
    handover = sec.get("handover_timeout", ck.bounded_duration(600), 0.0, DURATION + " up to 10m")
    forward = sec.get("handover_forward", ck.bounded_duration(3600), 0.0, DURATION + " up to 1h")
    track_if = _read_track_interfaces(sec)
    track_rs = _read_track_real_servers(sec, ctx)
    hooks = _read_hooks(sec)
    key = _read_auth(sec)
    if "sync_daemon" in sec.data:  # where it was before the daemon drove it from the role
        sec.known.add("sync_daemon")
        sec.error(
            "sync_daemon",
            "moved: set [daemon.ipvs.sync_daemon] interface, syncid and "
            f'follow = "{name}" (the IPVS sync daemon follows this group\'s '
            "role)",
        )
    sec.check_unknown()
    for peer in peers:
        if peer.version != family:
            sec.error("unicast_peers", f'"{peer}" is not IPv{family}, the family of the adverts')
    if priority == 255 and (track_if or track_rs):
        sec.error(
            "priority",
            "255 (the address owner) cannot be lowered by tracking; "
            "use 1..254 with track_interface/track_real_servers",
        )
    if not preempt and preempt_delay:
        sec.error(
            "preempt_delay",
            f'"{format_duration(preempt_delay)}" has no effect with preempt = false',
        )
    if len(problems) > before or name is None or vrid is None or interface is None:
        return None
    return FailoverGroup(
        name=name,
        vrid=vrid,
        interface=interface,
        family=family,
        addresses=addresses,
        priority=priority,
        advert_interval=interval,
        preempt=preempt,
        preempt_delay=preempt_delay,
        unicast_peers=peers,
        garp_repeat=garp_repeat,
        garp_interval=garp_interval,
        garp_refresh=garp_refresh,
        handover_timeout=handover,
        handover_forward=forward,
        track_interfaces=track_if,
        track_real_servers=track_rs,
        hooks=hooks,
        auth_key=key,
    )


def _version(value: Any) -> int:
    if value != 3 or isinstance(value, bool):
        raise ValueError(value)
    return 3


def _read_addresses(sec: Section, interface: str) -> tuple[GroupAddress, ...]:
    result: list[GroupAddress] = []
    seen: dict[IPAddress, int] = {}
    tables = sec.tables("address")
    for i, data in enumerate(tables, start=1):
        asec = Section(data, f"{sec.path}.address[{i}]", sec.problems)
        parsed = asec.require(
            "address",
            _interface_address,
            'an address with its prefix length, such as "192.0.2.100/24" or "2001:db8::100/64"',
        )
        iface = asec.get("interface", ck.interface, interface, 'an interface name such as "eth1"')
        asec.check_unknown()
        if parsed is None:
            continue
        address, prefixlen = parsed
        if address in seen:
            asec.error("address", f'"{address}" is listed twice (also address[{seen[address]}])')
            continue
        seen[address] = i
        result.append(GroupAddress(address, prefixlen, iface))
    if not tables:
        sec.error(
            "address",
            f"missing: expected at least one [[{SECTION}.address]] table "
            "with an address the group moves",
        )
    return tuple(result)


def _read_family(sec: Section, addresses: tuple[GroupAddress, ...]) -> int:
    default = addresses[0].address.version if addresses else 4
    text = sec.get("family", ck.choice(("ipv4", "ipv6")), f"ipv{default}", 'one of "ipv4", "ipv6"')
    family = 6 if text == "ipv6" else 4
    if addresses and not any(a.address.version == family for a in addresses):
        sec.error(
            "family",
            f'"{text}": no address of the group is IPv{family}; adverts must list at least one',
        )
    return family


def _read_track_interfaces(sec: Section) -> tuple[TrackInterface, ...]:
    result: list[TrackInterface] = []
    for i, data in enumerate(sec.tables("track_interface"), start=1):
        tsec = Section(data, f"{sec.path}.track_interface[{i}]", sec.problems)
        iface = tsec.require("interface", ck.interface, 'an interface name such as "eth1"')
        weight = tsec.get("weight", ck.int_in(-254, -1), 0, PRIORITY_DROP + "; omit to go to fault")
        tsec.check_unknown()
        if iface is not None:
            result.append(TrackInterface(iface, weight))
    return tuple(result)


def _read_track_real_servers(sec: Section, ctx: _Context) -> TrackRealServers | None:
    if "track_real_servers" not in sec.data:
        sec.known.add("track_real_servers")
        return None
    tsec = Section(sec.table("track_real_servers"), f"{sec.path}.track_real_servers", sec.problems)
    fraction = tsec.require("min_fraction", ck.fraction, "a fraction 0..1 of real servers up")
    weight = tsec.require("weight", ck.int_in(-254, -1), PRIORITY_DROP)
    vss: tuple[str, ...] = tsec.get(
        "virtual_servers", ck.strings, (), "an array of virtual server names"
    )
    tsec.check_unknown()
    if ctx.virtual_servers is not None:
        for name in vss:
            if name not in ctx.virtual_servers:
                tsec.error("virtual_servers", f'"{name}" is not a configured virtual server')
    if fraction is None or weight is None:
        return None
    return TrackRealServers(fraction, weight, vss)


def _read_hooks(sec: Section) -> Hooks:
    if "notify" not in sec.data:
        sec.known.add("notify")
        return Hooks()
    hsec = Section(sec.table("notify"), f"{sec.path}.notify", sec.problems)
    argv = 'an array: the program and its arguments, such as ["/usr/local/bin/ha-event", "-v"]'
    hooks = Hooks(
        on_master=hsec.get("on_master", ck.argv, (), argv),
        on_backup=hsec.get("on_backup", ck.argv, (), argv),
        on_fault=hsec.get("on_fault", ck.argv, (), argv),
        on_stop=hsec.get("on_stop", ck.argv, (), argv),
        timeout=hsec.get("timeout", ck.bounded_duration(3600), 10.0, DURATION + " up to 1h"),
    )
    hsec.check_unknown()
    return hooks


def _read_auth(sec: Section) -> bytes:
    mode = sec.get("auth", ck.choice(AUTH_MODES), "off", 'one of "off", "hmac-sha256"')
    key = sec.get(
        "auth_key", ck.text, "", f"a shared secret of at least {MIN_KEY_LENGTH} characters"
    )
    key_file = sec.get("auth_key_file", ck.text, "", "a file path")
    if mode == "off":
        for k in ("auth_key", "auth_key_file"):
            if k in sec.data:
                sec.error(k, 'is set but auth = "off"; set auth = "hmac-sha256" to use it')
        return b""
    if bool(key) == bool(key_file):
        sec.error("auth", '"hmac-sha256" needs exactly one of auth_key, auth_key_file')
        return b""
    if key_file:
        try:
            secret = ck.read_file(key_file, MAX_KEY_FILE_BYTES).strip()
        except ck.FileProblem as exc:
            sec.error("auth_key_file", f'"{key_file}": {exc}')
            return b""
        where = "auth_key_file"
    else:
        secret, where = key.encode(), "auth_key"
    if len(secret) < MIN_KEY_LENGTH:
        sec.error(where, f"is {len(secret)} bytes long: expected at least {MIN_KEY_LENGTH}")
        return b""
    return secret


def _check_shared_addresses(groups: list[FailoverGroup], problems: list[Problem]) -> None:
    owner: dict[IPAddress, str] = {}
    for group in groups:
        for i, addr in enumerate(group.addresses, start=1):
            other = owner.setdefault(addr.address, group.name)
            if other != group.name:
                problems.append(
                    Problem(
                        f"{SECTION}[{group.name}].address[{i}].address",
                        f'"{addr.address}" is also moved by failover_group[{other}]',
                    )
                )


def read_failover_groups(doc: dict[str, Any], problems: list[Problem]) -> tuple[FailoverGroup, ...]:
    """Only the `[[failover_group]]` tables of a parsed document (the standalone VRRP
    process reads nothing else); other top-level keys are the caller's business."""
    return read(Section(doc, "", problems), Readout(doc, problems))
