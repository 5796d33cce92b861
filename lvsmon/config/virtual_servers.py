"""`[[virtual_server]]` and its `[[virtual_server.real_server]]` tables -> VirtualServer.

Real servers are numbered from 1 in the order of their blocks; virtual servers are
named by their `name` (or numbered when the name is missing). What the types allow
but the scheduler or the data plane cannot do is checked against the plane's
declared capabilities (lvsmon.dataplane.registry).
"""

from __future__ import annotations

from typing import Any

from lvsmon import configkit as ck
from lvsmon import schedulers
from lvsmon.config import adaptive, health
from lvsmon.config.readout import Readout
from lvsmon.model import MAX_WEIGHT, Forwarding, Protocol, RealServer, VirtualServer
from lvsmon.model.adaptive import AdaptiveSpec
from lvsmon.model.capabilities import Capabilities
from lvsmon.model.health import HealthCheck

SECTION = "virtual_server"


def read(root: ck.Section, readout: Readout) -> tuple[VirtualServer, ...]:
    problems = readout.problems
    services: list[VirtualServer] = []
    names: dict[str, int] = {}
    keys: dict[object, str] = {}
    for i, data in enumerate(root.tables(SECTION), start=1):
        vs = _read_virtual_server(data, i, readout)
        if vs is None:
            continue
        path = f"virtual_server[{vs.name}]"
        if vs.name in names:
            problems.append(
                ck.Problem(
                    f"{path}.name",
                    f'"{vs.name}" is used by two virtual servers (#{names[vs.name]} and #{i})',
                )
            )
            continue
        # IPVS names a fwmark service by mark and address family, not by protocol
        ident = ("fwmark", vs.family, vs.fwmark) if vs.fwmark else vs.key
        if ident in keys:
            problems.append(
                ck.Problem(
                    path, f"duplicate virtual server {vs.key} (also virtual_server[{keys[ident]}])"
                )
            )
            continue
        names[vs.name] = i
        keys[ident] = vs.name
        services.append(vs)
    return tuple(services)


def _read_virtual_server(
    data: dict[str, Any], index: int, readout: Readout
) -> VirtualServer | None:
    problems = readout.problems
    sec = ck.Section(data, f"virtual_server[{ck.label_of(data, index)}]", problems)
    name = sec.require("name", ck.name, ck.NAME)
    fwmark = sec.get("fwmark", ck.int_in(0, 2**32 - 1), 0, "an integer firewall mark 1..4294967295")
    if fwmark:
        sec.known.add("address")
        sec.known.add("port")
        address = sec.get("address", ck.address, None, "an IPv4 or IPv6 address")
        port = 0
    else:
        address = sec.require("address", ck.address, "an IPv4 or IPv6 address (or set fwmark)")
        port = sec.require("port", ck.int_in(1, 65535), ck.PORT) or 0
    protocol = sec.get("protocol", Protocol, Protocol.TCP, 'one of "tcp", "udp", "sctp"')
    scheduler = sec.get(
        "scheduler",
        ck.choice(schedulers.IPVS_SCHEDULERS),
        "wlc",
        "one of " + ", ".join(schedulers.IPVS_SCHEDULERS),
    )
    flags: frozenset[str] = sec.get("scheduler_flags", _flags, frozenset(), "an array of flags")
    timeout = sec.get("persistence_timeout", ck.duration, 0.0, ck.DURATION + " (0 = off)")
    family = address.version if address is not None else None
    netmask = sec.get(
        "persistence_netmask",
        ck.netmask(family or 4),
        128 if family == 6 else 32,
        'a netmask such as "255.255.255.0" or a prefix length',
    )
    forwarding = sec.get("forwarding", Forwarding, Forwarding.NAT, 'one of "nat", "dr", "tunnel"')
    on_failure = sec.get(
        "on_failure", ck.choice(("remove", "quiesce")), "remove", 'one of "remove", "quiesce"'
    )
    slow_start = sec.get("slow_start", ck.duration, 0.0, ck.DURATION + " (0 = off)")
    check = health.health_check_of(sec)
    sorry = sec.get("sorry_server", ck.endpoint, None, 'an address:port such as "10.0.0.9:80"')
    reals: list[RealServer] = []
    seen: dict[object, int] = {}
    for i, rdata in enumerate(sec.tables("real_server"), start=1):
        rsec = ck.Section(rdata, f"{sec.path}.real_server[{i}]", problems)
        rs = _read_real_server(rsec, port, family, forwarding, check)
        if rs is None:
            continue
        if rs.key in seen:
            rsec.error("", f"duplicate real server {rs.label} (also real_server[{seen[rs.key]}])")
            continue
        seen[rs.key] = i
        reals.append(rs)
    adaptive_spec = _read_adaptive(sec, reals)
    announce = sec.get("announce", ck.boolean, False, "true or false (announce the VIP over BGP)")
    sec.check_unknown()
    if name is None or (address is None and not fwmark):
        return None
    vs = VirtualServer(
        name=name,
        address=address,
        port=port,
        protocol=protocol,
        fwmark=fwmark,
        scheduler=scheduler,
        scheduler_flags=flags,
        persistence_timeout=timeout,
        persistence_netmask=netmask,
        quiesce=on_failure == "quiesce",
        slow_start=slow_start,
        sorry_server=sorry,
        real_servers=tuple(reals),
        adaptive_weights=adaptive_spec,
        announce=announce,
    )
    _check_semantics(sec, vs, forwarding, readout.capabilities())
    return vs


def _read_real_server(
    sec: ck.Section,
    vs_port: int,
    family: int | None,
    forwarding: Forwarding,
    check: HealthCheck | None = None,
) -> RealServer | None:
    address = sec.require("address", ck.address, "an IPv4 or IPv6 address")
    # real servers of a fwmark service may be port-less (0: the packet's own port)
    low = 0 if vs_port == 0 else 1
    port = sec.get("port", ck.int_in(low, 65535), vs_port, f"an integer port {low}..65535")
    weight = sec.get("weight", ck.int_in(0, MAX_WEIGHT), 1, ck.WEIGHT)
    fwd = sec.get("forwarding", Forwarding, forwarding, 'one of "nat", "dr", "tunnel"')
    upper = sec.get("upper_threshold", ck.int_in(0, 2**31 - 1), 0, "an integer >= 0 (0 = no limit)")
    lower = sec.get("lower_threshold", ck.int_in(0, 2**31 - 1), 0, "an integer >= 0")
    check = health.health_check_of(sec, base=check, port=port)
    sec.check_unknown()
    if address is None:
        return None
    if family is not None and address.version != family:
        sec.error(
            "address",
            f'"{address}" is IPv{address.version} but the virtual server is '
            f"IPv{family}: IPVS cannot mix address families",
        )
    if upper and lower > upper:
        sec.error("lower_threshold", f"{lower} is above upper_threshold {upper}")
    return RealServer(address, port, weight, fwd, upper, lower, check)


def _flags(value: Any) -> frozenset[str]:
    return frozenset(ck.strings(value))


def _read_adaptive(sec: ck.Section, reals: list[RealServer]) -> AdaptiveSpec | None:
    """[virtual_server.adaptive_weights] (lvsmon.config.adaptive has the keys)."""
    sec.known.add("adaptive_weights")
    if "adaptive_weights" not in sec.data:
        return None
    path = sec.key_path("adaptive_weights")
    spec = adaptive.read_adaptive(sec.table("adaptive_weights"), path, sec.problems)
    if spec is not None:
        adaptive.check_real_servers(spec, sec.path, [rs.weight for rs in reals], sec.problems)
    return spec


def _check_semantics(
    sec: ck.Section, vs: VirtualServer, forwarding: Forwarding, caps: Capabilities
) -> None:
    """What the types allow but the scheduler or the data plane cannot do."""
    allowed = schedulers.SCHEDULER_FLAGS.get(vs.scheduler, set())
    for flag in sorted(vs.scheduler_flags - allowed):
        what = ", ".join(f'"{f}"' for f in sorted(allowed)) or "none"
        sec.error(
            "scheduler_flags",
            f'"{flag}" is not a flag of scheduler "{vs.scheduler}" (its flags: {what})',
        )
    if vs.sorry_server and vs.address and vs.sorry_server.address.version != vs.address.version:
        sec.error(
            "sorry_server", f'"{vs.sorry_server}" is not in the virtual server\'s address family'
        )
    where = f'data plane "{caps.name}"'
    if vs.scheduler not in caps.schedulers:
        sec.error(
            "scheduler",
            f'"{vs.scheduler}" is not available on {where}: {caps.scheduler_why or caps.why}; '
            "available: " + ", ".join(sorted(caps.schedulers)),
        )
    elif caps.scheduler_flags is not None:
        usable = ", ".join(f'"{f}"' for f in sorted(allowed & caps.scheduler_flags)) or "none"
        for flag in sorted(vs.scheduler_flags & allowed - caps.scheduler_flags):
            sec.error(
                "scheduler_flags",
                f'"{flag}" is not available on {where} (flags of "{vs.scheduler}" there: {usable})',
            )
    if not caps.thresholds:
        for i, rs in enumerate(vs.real_servers, start=1):
            for key in ("upper_threshold", "lower_threshold"):
                if getattr(rs, key):
                    sec.error(
                        f"real_server[{i}].{key}",
                        f"{getattr(rs, key)}: connection limits are not available on {where} "
                        "(no connection counts at decision time)",
                    )
    if vs.protocol.value not in caps.protocols:
        sec.error("protocol", f'"{vs.protocol}" is not supported on {where}: {caps.why}')
    if vs.fwmark and not caps.fwmark:
        sec.error(
            "fwmark",
            f"{vs.fwmark}: fwmark virtual servers are not supported on {where}: {caps.why}",
        )
    if vs.persistent and not caps.persistence:
        sec.error("persistence_timeout", f"persistence is not supported on {where}: {caps.why}")
    if vs.family == 6 and not caps.ipv6:
        sec.error("address", f'"{vs.address}": IPv6 is not supported on {where}: {caps.why}')
    if forwarding.value not in caps.forwarding:
        sec.error("forwarding", f'"{forwarding}" is not supported on {where}: {caps.why}')
    for i, rs in enumerate(vs.real_servers, start=1):
        if rs.forwarding != forwarding and rs.forwarding.value not in caps.forwarding:
            key = f"real_server[{i}].forwarding"
            sec.error(key, f'"{rs.forwarding}" is not supported on {where}: {caps.why}')
