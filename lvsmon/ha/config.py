"""`[[failover_group]]` tables -> frozen `FailoverGroup`s, errors with key paths.

Reuses lvsmon.config's `_Section` and converters so messages read exactly like
the rest of the file ("<value> is not valid: expected ..."). A failover group
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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lvsmon.config import (
    DURATION,
    Problem,
    _address,
    _bool,
    _choice,
    _duration,
    _int_in,
    _name,
    _Section,
    format_duration,
)
from lvsmon.model import IPAddress

SECTION = "failover_group"
AUTH_MODES = ("off", "hmac-sha256")
MIN_KEY_LENGTH = 16
NAME = "a name of letters, digits, '_', '.', '-' (1-64 chars)"
PRIORITY_DROP = "a negative integer -254..-1 (subtracted from the priority)"


@dataclass(frozen=True, slots=True)
class GroupAddress:
    """One address the group moves: added on the master, announced, removed on backup."""

    address: IPAddress
    prefixlen: int
    interface: str

    def __str__(self) -> str:
        return f"{self.address}/{self.prefixlen} dev {self.interface}"


@dataclass(frozen=True, slots=True)
class TrackInterface:
    interface: str
    weight: int  # added to the priority while the interface is down; 0 = go to fault


@dataclass(frozen=True, slots=True)
class TrackRealServers:
    """Lower the priority when fewer than `min_fraction` of the real servers are up."""

    min_fraction: float
    weight: int
    virtual_servers: tuple[str, ...] = ()  # empty: every virtual server


@dataclass(frozen=True, slots=True)
class Hooks:
    """Programs run on entering a state: argv only (no shell), see hooks.py for the env."""

    on_master: tuple[str, ...] = ()
    on_backup: tuple[str, ...] = ()
    on_fault: tuple[str, ...] = ()
    on_stop: tuple[str, ...] = ()
    timeout: float = 10.0

    def for_state(self, state: str) -> tuple[str, ...]:
        return {
            "master": self.on_master,
            "backup": self.on_backup,
            "fault": self.on_fault,
            "initialize": self.on_stop,
        }.get(state, ())


@dataclass(frozen=True, slots=True)
class FailoverGroup:
    name: str
    vrid: int
    interface: str
    family: int  # 4 or 6: the family the adverts use and list
    addresses: tuple[GroupAddress, ...]
    priority: int = 100
    advert_interval: float = 1.0  # seconds, a whole number of centiseconds
    preempt: bool = True
    preempt_delay: float = 0.0
    unicast_peers: tuple[IPAddress, ...] = ()
    garp_repeat: int = 5
    garp_interval: float = 0.01
    garp_refresh: float = 10.0  # 0 = no periodic refresh
    handover_timeout: float = 0.0  # 0 = derived: max(1 s, 4 x advert_interval)
    track_interfaces: tuple[TrackInterface, ...] = ()
    track_real_servers: TrackRealServers | None = None
    hooks: Hooks = field(default_factory=Hooks)
    auth_key: bytes = b""  # empty: plain VRRPv3; else HMAC-SHA256 (lvsmon peers only)

    @property
    def advertised(self) -> tuple[IPAddress, ...]:
        """The addresses listed in adverts: those of the advert family, sorted."""
        return tuple(sorted(a.address for a in self.addresses if a.address.version == self.family))

    @property
    def effective_handover_timeout(self) -> float:
        return self.handover_timeout or max(1.0, 4 * self.advert_interval)

    @property
    def interfaces(self) -> tuple[str, ...]:
        names = [self.interface, *(a.interface for a in self.addresses)]
        return tuple(dict.fromkeys(names))


def _interface(value: Any) -> str:
    # Linux IFNAMSIZ is 16 including the NUL; '/' and whitespace are never valid
    if not isinstance(value, str) or not 1 <= len(value) <= 15:
        raise ValueError(value)
    if any(c in value for c in "/ \t:") or value in (".", ".."):
        raise ValueError(value)
    return value


def _interface_address(value: Any) -> tuple[IPAddress, int]:
    if not isinstance(value, str):
        raise TypeError(value)
    iface = ipaddress.ip_interface(value)
    if "/" not in value:  # a bare address is a host route, as with `ip addr add`
        return iface.ip, iface.max_prefixlen
    return iface.ip, iface.network.prefixlen


def _advert_interval(value: Any) -> float:
    seconds = _duration(value)
    centis = round(seconds * 100)
    if abs(centis - seconds * 100) > 1e-6 or not 1 <= centis <= 4095:
        raise ValueError(value)
    return centis / 100


def _bounded_duration(high: float) -> Callable[[Any], float]:
    def convert(value: Any) -> float:
        seconds = _duration(value)
        if seconds > high:
            raise ValueError(value)
        return seconds

    return convert


def _fraction(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise ValueError(value)
    return float(value)


def _argv(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise TypeError(value)
    if not value[0]:
        raise ValueError(value)
    return tuple(value)


def _strings(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TypeError(value)
    return tuple(value)


def _addresses(value: Any) -> tuple[IPAddress, ...]:
    if not isinstance(value, list):
        raise TypeError(value)
    return tuple(_address(v) for v in value)


def read_failover_groups(
    root_data: dict[str, Any], problems: list[Problem]
) -> tuple[FailoverGroup, ...]:
    """Read every `[[failover_group]]` of a parsed TOML document; append problems.

    Only the `failover_group` key of `root_data` is read (plus `daemon.dataplane`
    and the virtual server names, for cross-checks); unknown keys inside the
    groups are reported, other top-level keys are the caller's business.
    """
    root = _Section(root_data, "", problems)
    context = _Context.of(root_data)
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
    dataplane: str
    virtual_servers: frozenset[str] | None  # None: the document has no virtual servers

    @staticmethod
    def of(root_data: dict[str, Any]) -> _Context:
        daemon = root_data.get("daemon")
        dataplane = daemon.get("dataplane", "proxy") if isinstance(daemon, dict) else "proxy"
        vss = root_data.get("virtual_server")
        names = None
        if isinstance(vss, list):
            names = frozenset(v["name"] for v in vss if isinstance(v, dict) and "name" in v)
        return _Context(str(dataplane), names)


def _read_group(
    data: dict[str, Any], index: int, problems: list[Problem], ctx: _Context
) -> FailoverGroup | None:
    raw_name = data.get("name")
    label = raw_name if isinstance(raw_name, str) and raw_name else str(index)
    sec = _Section(data, f"{SECTION}[{label}]", problems)
    before = len(problems)
    name = sec.require("name", _name, NAME)
    sec.get("version", _version, 3, "3 (VRRP version 3, RFC 5798; keepalived: vrrp_version 3)")
    vrid = sec.require("vrid", _int_in(1, 255), "an integer virtual router id 1..255")
    interface = sec.require("interface", _interface, 'an interface name such as "eth0"')
    priority = sec.get(
        "priority",
        _int_in(1, 255),
        100,
        "an integer 1..255 (255: the address owner; 0 is reserved for handover)",
    )
    interval = sec.get(
        "advert_interval",
        _advert_interval,
        1.0,
        'a duration of whole centiseconds from "10ms" to "40.95s", such as "1s" or "100ms"',
    )
    preempt = sec.get("preempt", _bool, True, "true or false")
    preempt_delay = sec.get("preempt_delay", _bounded_duration(3600), 0.0, DURATION + " up to 1h")
    addresses = _read_addresses(sec, interface or "")
    family = _read_family(sec, addresses)
    peers: tuple[IPAddress, ...] = sec.get(
        "unicast_peers", _addresses, (), "an array of IPv4 or IPv6 addresses"
    )
    garp_repeat = sec.get("garp_repeat", _int_in(0, 100), 5, "an integer 0..100")
    garp_interval = sec.get("garp_interval", _bounded_duration(10), 0.01, DURATION + " up to 10s")
    garp_refresh = sec.get("garp_refresh", _duration, 10.0, DURATION + " (0 = off)")
    handover = sec.get("handover_timeout", _bounded_duration(600), 0.0, DURATION + " up to 10m")
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
        track_interfaces=track_if,
        track_real_servers=track_rs,
        hooks=hooks,
        auth_key=key,
    )


def _version(value: Any) -> int:
    if value != 3 or isinstance(value, bool):
        raise ValueError(value)
    return 3


def _read_addresses(sec: _Section, interface: str) -> tuple[GroupAddress, ...]:
    result: list[GroupAddress] = []
    seen: dict[IPAddress, int] = {}
    tables = sec.tables("address")
    for i, data in enumerate(tables, start=1):
        asec = _Section(data, f"{sec.path}.address[{i}]", sec.problems)
        parsed = asec.require(
            "address",
            _interface_address,
            'an address with its prefix length, such as "192.0.2.100/24" or "2001:db8::100/64"',
        )
        iface = asec.get("interface", _interface, interface, 'an interface name such as "eth1"')
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


def _read_family(sec: _Section, addresses: tuple[GroupAddress, ...]) -> int:
    default = addresses[0].address.version if addresses else 4
    text = sec.get("family", _choice(("ipv4", "ipv6")), f"ipv{default}", 'one of "ipv4", "ipv6"')
    family = 6 if text == "ipv6" else 4
    if addresses and not any(a.address.version == family for a in addresses):
        sec.error(
            "family",
            f'"{text}": no address of the group is IPv{family}; adverts must list at least one',
        )
    return family


def _read_track_interfaces(sec: _Section) -> tuple[TrackInterface, ...]:
    result: list[TrackInterface] = []
    for i, data in enumerate(sec.tables("track_interface"), start=1):
        tsec = _Section(data, f"{sec.path}.track_interface[{i}]", sec.problems)
        iface = tsec.require("interface", _interface, 'an interface name such as "eth1"')
        weight = tsec.get("weight", _int_in(-254, -1), 0, PRIORITY_DROP + "; omit to go to fault")
        tsec.check_unknown()
        if iface is not None:
            result.append(TrackInterface(iface, weight))
    return tuple(result)


def _read_track_real_servers(sec: _Section, ctx: _Context) -> TrackRealServers | None:
    if "track_real_servers" not in sec.data:
        sec.known.add("track_real_servers")
        return None
    tsec = _Section(sec.table("track_real_servers"), f"{sec.path}.track_real_servers", sec.problems)
    fraction = tsec.require("min_fraction", _fraction, "a fraction 0..1 of real servers up")
    weight = tsec.require("weight", _int_in(-254, -1), PRIORITY_DROP)
    vss: tuple[str, ...] = tsec.get(
        "virtual_servers", _strings, (), "an array of virtual server names"
    )
    tsec.check_unknown()
    if ctx.virtual_servers is not None:
        for name in vss:
            if name not in ctx.virtual_servers:
                tsec.error("virtual_servers", f'"{name}" is not a configured virtual server')
    if fraction is None or weight is None:
        return None
    return TrackRealServers(fraction, weight, vss)


def _read_hooks(sec: _Section) -> Hooks:
    if "notify" not in sec.data:
        sec.known.add("notify")
        return Hooks()
    hsec = _Section(sec.table("notify"), f"{sec.path}.notify", sec.problems)
    argv = 'an array: the program and its arguments, such as ["/usr/local/bin/ha-event", "-v"]'
    hooks = Hooks(
        on_master=hsec.get("on_master", _argv, (), argv),
        on_backup=hsec.get("on_backup", _argv, (), argv),
        on_fault=hsec.get("on_fault", _argv, (), argv),
        on_stop=hsec.get("on_stop", _argv, (), argv),
        timeout=hsec.get("timeout", _bounded_duration(3600), 10.0, DURATION + " up to 1h"),
    )
    hsec.check_unknown()
    return hooks


def _read_auth(sec: _Section) -> bytes:
    mode = sec.get("auth", _choice(AUTH_MODES), "off", 'one of "off", "hmac-sha256"')
    key = sec.get("auth_key", _text, "", f"a shared secret of at least {MIN_KEY_LENGTH} characters")
    key_file = sec.get("auth_key_file", _text, "", "a file path")
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
            secret = Path(key_file).read_bytes().strip()
        except OSError as exc:
            sec.error("auth_key_file", f'"{key_file}": cannot read: {exc.strerror}')
            return b""
        where = "auth_key_file"
    else:
        secret, where = key.encode(), "auth_key"
    if len(secret) < MIN_KEY_LENGTH:
        sec.error(where, f"is {len(secret)} bytes long: expected at least {MIN_KEY_LENGTH}")
        return b""
    return secret


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(value)
    return value


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
