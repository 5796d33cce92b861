"""`[bgp]` -> frozen `BgpSettings` (lvsmon.model.bgp), errors with key paths.

    [bgp]
    local_as = 65001
    router_id = "10.0.0.2"                 # optional: written only when set
    include_file = "/run/lvsmon/bird-lvsmon.conf"
    control_socket = "/run/bird/bird.ctl"
    liveness_interface = "lvsmon0"         # a TUN device that dies with lvsmon
    next_hop = "self"                      # or an address
    communities = ["65001:100"]
    healthy_threshold = 1                  # real servers in service to announce a VIP

    [bgp.drain]
    period = "30s"                         # preference lowered, then withdrawn
    med = 1000
    prepend = 2
    communities = ["65535:0"]              # RFC 8326 GRACEFUL_SHUTDOWN

    [bgp.bfd]
    interval = "100ms"
    multiplier = 3

    [[bgp.peer]]
    name = "tor1"
    address = "10.0.0.1"
    remote_as = 65000
    bfd = true

Cross-checks against the rest of the file (`check_announced`): a virtual server
with `announce = true` needs `[bgp]`, an address, a peer of its family, and
must not also be moved by a failover group.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from lvsmon import configkit as ck
from lvsmon.config.readout import Readout
from lvsmon.configkit import DURATION, NAME, Problem, Section
from lvsmon.model import DaemonSettings, IPAddress, VirtualServer
from lvsmon.model.bgp import Bfd, BgpSettings, Drain, Peer

SECTION = "bgp"
ROUTING_DAEMONS = ("bird",)  # the seam (lvsmon.bgp.daemon) is where "frr" would join
ASN = "an AS number 1..4294967295"
COMMUNITY = 'an array of communities "ASN:value" (each part 0..65535)'
_COMMUNITY = re.compile(r"(\d{1,5}):(\d{1,5})")
_IFNAME = re.compile(r"[A-Za-z0-9_.-]{1,15}")


def _communities(value: Any) -> tuple[tuple[int, int], ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TypeError(value)
    out = []
    for text in value:
        match = _COMMUNITY.fullmatch(text)
        if not match or max(int(match.group(1)), int(match.group(2))) > 65535:
            raise ValueError(text)
        out.append((int(match.group(1)), int(match.group(2))))
    return tuple(out)


def _next_hop(value: Any) -> IPAddress | None:
    if value == "self":
        return None
    return ck.address(value)


def _ifname(value: Any) -> str:
    if not isinstance(value, str) or not _IFNAME.fullmatch(value):
        raise ValueError(value)
    return value


def _path(value: Any) -> str:
    if not isinstance(value, str) or not value.startswith("/") or '"' in value:
        raise ValueError(value)
    return value


def _read_peer(sec: Section) -> Peer | None:
    name = sec.require("name", ck.name, NAME)
    address = sec.require("address", ck.address, "the peer's IPv4 or IPv6 address")
    remote_as = sec.require("remote_as", ck.int_in(1, 2**32 - 1), ASN)
    local = sec.get("local_address", ck.address, None, "an IPv4 or IPv6 address of this director")
    bfd = sec.get("bfd", ck.boolean, False, "true or false")
    hold = sec.get("hold_time", ck.duration, 9.0, DURATION + " (3s..65535s, or 0)")
    retry = sec.get("connect_retry", ck.duration, 5.0, DURATION + " (1s or more)")
    if retry < 1:
        sec.error("connect_retry", f"{retry:g}s is not valid: expected 1s or more")
    sec.check_unknown()
    if hold and not 3 <= hold <= 65535:
        sec.error("hold_time", f"{hold:g}s is not valid: expected 0 or 3s..65535s (RFC 4271)")
    if local is not None and address is not None and local.version != address.version:
        sec.error("local_address", f'"{local}" is not in the family of address "{address}"')
    if name is None or address is None or remote_as is None:
        return None
    return Peer(name, address, remote_as, local, bfd, hold, retry)


def read(root: Section, readout: Readout) -> BgpSettings | None:
    """The `[bgp]` section reader (lvsmon.config.SECTIONS)."""
    root.known.add(SECTION)
    return read_bgp(readout.doc, readout.problems)


def check(readout: Readout) -> None:
    """Announced virtual servers against [bgp], the failover groups and the data plane."""
    bgp = readout.values.get("bgp")
    moved = {a.address: g.name for g in readout.failover_groups() for a in g.addresses}
    check_announced(
        bgp if isinstance(bgp, BgpSettings) else None,
        readout.virtual_servers(),
        moved,
        readout.problems,
        readout.get("daemon", DaemonSettings),
    )


def read_bgp(root_data: dict[str, Any], problems: list[Problem]) -> BgpSettings | None:
    """The `[bgp]` table, or None when the document has none."""
    if SECTION not in root_data:
        return None
    root = Section(root_data, "", problems)
    sec = Section(root.table(SECTION), SECTION, problems)
    local_as = sec.require("local_as", ck.int_in(1, 2**32 - 1), ASN)
    defaults = BgpSettings(0, ())
    router_id = sec.get("router_id", ck.address, None, "an IPv4 address (BGP identifier)")
    daemon = sec.get("routing_daemon", ck.choice(ROUTING_DAEMONS), "bird", 'one of "bird" (BIRD 2)')
    include = sec.get("include_file", _path, defaults.include_file, "an absolute file path")
    socket = sec.get("control_socket", _path, defaults.control_socket, "an absolute file path")
    liveness = sec.get(
        "liveness_interface", _ifname, defaults.liveness_interface, "an interface name (1-15)"
    )
    next_hop = sec.get("next_hop", _next_hop, None, '"self" or an IPv4 or IPv6 address')
    communities = sec.get("communities", _communities, defaults.communities, COMMUNITY)
    threshold = sec.get(
        "healthy_threshold", ck.int_in(1, 65535), 1, "an integer >= 1 (real servers in service)"
    )
    drain = _read_drain(Section(sec.table("drain"), "bgp.drain", problems))
    bsec = Section(sec.table("bfd"), "bgp.bfd", problems)
    bfd = Bfd(
        interval=bsec.get("interval", ck.duration, Bfd().interval, DURATION + " (10ms or more)"),
        multiplier=bsec.get("multiplier", ck.int_in(1, 255), Bfd().multiplier, "an integer 1..255"),
    )
    if bfd.interval < 0.01:
        bsec.error("interval", f"{bfd.interval:g}s is below BIRD's 10ms minimum")
    bsec.check_unknown()
    peers = _read_peers(sec)
    sec.check_unknown()
    if router_id is not None and router_id.version != 4:
        sec.error("router_id", f'"{router_id}" is not valid: a BGP identifier is IPv4-shaped')
    if not peers and "peer" not in sec.data:
        sec.error("peer", "missing: expected at least one [[bgp.peer]] table")
    if local_as is None:
        return None
    return BgpSettings(
        local_as=local_as,
        peers=peers,
        router_id=router_id,
        routing_daemon=daemon,
        include_file=include,
        control_socket=socket,
        liveness_interface=liveness,
        next_hop=next_hop,
        communities=communities,
        healthy_threshold=threshold,
        drain=drain,
        bfd=bfd,
    )


def _read_drain(sec: Section) -> Drain:
    d = Drain()
    period = sec.get("period", ck.duration, d.period, DURATION)
    med = sec.get("med", ck.int_in(0, 2**32 - 1), d.med, "an integer MED 0..4294967295")
    prepend = sec.get("prepend", ck.int_in(0, 16), 0, "an integer 0..16 (times the local AS)")
    communities = sec.get("communities", _communities, d.communities, COMMUNITY)
    sec.check_unknown()
    return Drain(period, med, prepend, communities)


def _read_peers(sec: Section) -> tuple[Peer, ...]:
    peers: list[Peer] = []
    seen: dict[object, int] = {}
    for i, data in enumerate(sec.tables("peer"), start=1):
        raw = data.get("name")
        label = raw if isinstance(raw, str) and raw else str(i)
        psec = Section(data, f"bgp.peer[{label}]", sec.problems)
        peer = _read_peer(psec)
        if peer is None:
            continue
        for key, what in ((peer.name, "name"), (peer.address, "address")):
            if key in seen:
                psec.error(what, f'"{key}" is used by two peers (#{seen[key]} and #{i})')
                break
        else:
            seen[peer.name] = seen[peer.address] = i
            peers.append(peer)
    return tuple(peers)


def check_announced(
    bgp: BgpSettings | None,
    services: Sequence[VirtualServer],
    moved: dict[IPAddress, str],
    problems: list[Problem],
    daemon: DaemonSettings | None = None,
) -> None:
    """Contradictions between `announce = true` and the rest; `moved`: address -> the
    failover group that moves it between two directors."""
    for vs in services:
        if not vs.announce:
            continue
        key = f"virtual_server[{vs.name}].announce"
        if bgp is None:
            problems.append(Problem(key, "true needs a [bgp] table (local_as and a peer)"))
            continue
        if vs.address is None:
            problems.append(
                Problem(
                    key, "true: a fwmark virtual server without an address has no VIP to announce"
                )
            )
            continue
        if vs.address in moved:
            problems.append(
                Problem(
                    key,
                    f"true, but {vs.address} is also an address of "
                    f"failover_group[{moved[vs.address]}]: "
                    "VRRP keeps it on one director while BGP draws it to every director; "
                    "announce it or move it, not both",
                )
            )
        if vs.scheduler in ("mh", "sh") and not vs.quiesce:
            problems.append(
                Problem(
                    f"virtual_server[{vs.name}].on_failure",
                    f'"remove" with scheduler "{vs.scheduler}" and announce = true: a real '
                    "server that fails and returns is re-added at the head of the list on that "
                    "director only, and the directors' hash tables then differ (flows moved "
                    'by ECMP change real server); use on_failure = "quiesce" (weight 0 keeps '
                    f'the list and the slots; add "{vs.scheduler}-fallback" to the '
                    "scheduler_flags to send its flows on)",
                )
            )
        sloppy = f"sloppy_{vs.protocol.value}"
        if (
            daemon is not None
            and daemon.dataplane == "ipvs"
            and vs.protocol.value in ("tcp", "sctp")
            and not getattr(daemon.ipvs.sysctl, sloppy)
        ):
            problems.append(
                Problem(
                    f"daemon.ipvs.sysctl.{sloppy}",
                    f"false, but virtual_server[{vs.name}] is announced: when ECMP moves an "
                    "established flow to another director, that director drops its packets "
                    f"unless {sloppy} = true lets IPVS pick up connections mid-stream",
                )
            )
        if not any(p.family == vs.address.version for p in bgp.peers):
            problems.append(
                Problem(
                    key,
                    f"true, but no [[bgp.peer]] is IPv{vs.address.version}: "
                    f"nobody to announce {vs.address} to",
                )
            )
