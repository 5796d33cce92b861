"""The nft data plane's table, and the one JSON transaction that changes it. Pure.

lvsmon owns one `inet` table (daemon.nft.table). Its layout:

    map svc4, svc6   ip[6] daddr . meta l4proto . th dport : goto vs_<slot>  (counter: connections)
    map fwm4, fwm6   meta mark : goto vs_<slot>                             (fwmark services)
    chain vs_<slot>  one per virtual server: [persistence hits], the scheduler, reject
    map dest4, dest6 ct mark : real server address
    map rsport       ct mark : real server port (only virtual servers whose ports differ)
    set vs_in, vs_out            ct mark & 0xffff0000: packet/byte counters per virtual server
    set rs_in, rs_out, rs_conn   ct mark: per real server packets/bytes, connections (dynamic)
    set persist_<slot>_<timeout>_<prefix>   client . ct mark, with timeouts (persistence)
    map owner        1: layout version, 2: generation (changes with every transaction)

Every balanced connection carries a conntrack mark naming its virtual and real
server: TAG | vs slot << 16 | rs slot. The scheduler's rule sets it (`ct mark
set <table lookup>`), DNAT reads the address from it, the counters and lvsmon's
conntrack reading (active/inactive connections) are keyed by it. Slots are
allocated once per virtual/real server and kept (in the state file) across
restarts, so established connections stay attributed.

The per-real-server counter sets (rs_in, rs_out, rs_conn) are dynamic: the
packet path adds a real server's element (`update @rs_in { ct mark }`, the set's
counter attached) the first time one of its packets is counted, and only for a
mark dest4/dest6 holds, so a real server that left is not counted again. A full
program writes none of their elements: allocating 150,000 per-CPU counters was
~40% of the kernel's share of programming 1,000 x 50. A real server leaving
clears its elements (`add` then `delete`: removes one whether traffic created it
or not). Their size (a dynamic set's limit) is COUNTER_SIZE or twice the real
servers of the last full program, whichever is more; a plan that outgrows it is
written in full (`Plan.outgrown`).

`Plan.apply(ops)` turns reconcile operations into the next `Plan` and the
commands between the two: only the virtual servers the operations touch are
rendered again, and only what differs is written (elements added or deleted,
a chain flushed and refilled). libnftables 1.0.6's JSON has no `typeof` sets,
no map update statements and no concatenated NAT maps, which is why scheduling
tables are anonymous maps inside each chain's rule, persistence is a set of
`client . mark` tested per real server, and ports come from a constant or a
second map.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import math
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from lvsmon.dataplane.nft_sched import Decision, Member, decide
from lvsmon.model import (
    DestKey,
    Endpoint,
    Forwarding,
    IPAddress,
    NftSettings,
    Protocol,
    RealServer,
    ServiceKey,
    VirtualServer,
)
from lvsmon.reconcile import (
    AddDest,
    AddService,
    DeleteDest,
    DeleteService,
    EditDest,
    EditService,
    Op,
)

LAYOUT = 2  # owner map entry 1: bumped when the table layout changes incompatibly
# 1: counters on static rs_in/rs_out elements and on dest4/dest6 (connections)
COUNTER_SIZE = 65536  # the smallest size of the dynamic per-real-server counter sets
TAG = 0x80000000  # every mark lvsmon sets has the top bit
BUCKET = 0x40000000  # ... except a new connection's table index, for one lookup (`sched`)
VS_MASK = 0xFFFF0000
MAX_VS_SLOT = 0x7FFF
MAX_RS_SLOT = 0xFFFF
DSTNAT, SRCNAT, COUNT = -100, 100, -90  # hook priorities (counting after DNAT)

_CT_MARK: dict[str, Any] = {"ct": {"key": "mark"}}
_PROTOCOL_NUMBERS = {"tcp": 6, "udp": 17, "sctp": 132}
_REJECT = json.dumps([{"reject": {"type": "icmpx", "expr": "port-unreachable"}}])


class PlanError(ValueError):
    """A table this layout cannot express (the message names the virtual server)."""


def vs_mark(slot: int) -> int:
    return TAG | slot << 16


# --- what lvsmon programmed ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Entry:
    """One virtual server as programmed: its attributes, real servers (programmed
    order), slot, and per real server its mark and last non-zero weight."""

    service: VirtualServer
    slot: int
    marks: Mapping[DestKey, int]
    last_weights: Mapping[DestKey, int]
    next_rs: int = 1  # the next real-server slot to try (slots are not reused at once)
    members: tuple[Member, ...] = field(default=(), compare=False)  # the above, per server
    dnat: str | None = field(default=None, compare=False)  # its shared DNAT chain
    ports: Mapping[int, int] = field(default_factory=dict, compare=False)  # rsport entries

    @property
    def mark(self) -> int:
        return vs_mark(self.slot)


def make_entry(
    service: VirtualServer,
    slot: int,
    marks: Mapping[DestKey, int],
    last_weights: Mapping[DestKey, int],
    next_rs: int = 1,
) -> Entry:
    members = tuple(
        Member(marks[key], rs, last_weights[key], key)
        for key, rs in zip(marks, service.real_servers, strict=True)
    )
    dnat, ports = _dnat(service, members)
    return Entry(service, slot, marks, last_weights, next_rs, members, dnat, ports)


@dataclass(frozen=True, slots=True)
class Plan:
    """The whole programmed table and what it was rendered with."""

    settings: NftSettings
    entries: Mapping[ServiceKey, Entry] = field(default_factory=dict)
    generation: int = 0
    next_vs: int = 1
    rendered: Mapping[ServiceKey, Rendered] = field(default_factory=dict, compare=False)
    counter_size: int = COUNTER_SIZE  # of rs_in, rs_out, rs_conn as programmed

    def table(self) -> dict[ServiceKey, VirtualServer]:
        return {key: e.service for key, e in self.entries.items()}

    def apply(self, ops: Sequence[Op], *, diff: bool = True) -> tuple[Plan, list[str]]:
        """The plan after `ops`, and the commands (JSON texts) that get there (none
        with diff=False: a full program follows)."""
        services = apply_grouped({k: e.service for k, e in self.entries.items()}, ops)
        touched = list(services)
        entries = dict(self.entries)
        rendered = dict(self.rendered)
        next_vs = self.next_vs
        used = {e.slot for e in entries.values()}
        for key in touched:
            vs = services.get(key)
            if vs is None:
                entries.pop(key, None)
                rendered.pop(key, None)
                continue
            old = entries.get(key)
            if old is None:
                slot, next_vs = _allocate(next_vs, used)
                used.add(slot)
                old = Entry(vs[0], slot, {}, {})
            entries[key] = entry = _update_entry(old, *vs)
            if diff:
                rendered[key] = render(entry, self.settings)
            else:
                rendered.pop(key, None)
        plan = Plan(
            self.settings, entries, self.generation + 1, next_vs, rendered, self.counter_size
        )
        if not diff:
            return plan, []
        commands = _diff(self, plan, touched)
        commands.extend(_generation(plan))
        return plan, commands

    def outgrown(self) -> bool:
        """More real servers than the counter sets hold: the table must be written in
        full (with larger sets)."""
        return sum(len(e.marks) for e in self.entries.values()) > self.counter_size

    def full(self, *, replace: str | None = None) -> tuple[Plan, list[str]]:
        """Commands that build the whole table from nothing, deleting any table of
        that name first (`replace`: also a table of another name, e.g. the old one
        after daemon.nft.table changed): one transaction, so traffic never sees a
        half-built table."""
        rendered = {
            k: self.rendered.get(k) or render(e, self.settings) for k, e in self.entries.items()
        }
        reals = sum(len(e.marks) for e in self.entries.values())
        plan = dataclasses.replace(
            self,
            generation=self.generation + 1,
            rendered=rendered,
            counter_size=max(COUNTER_SIZE, 1 << (2 * reals - 1).bit_length()),
        )
        commands = []
        for name in dict.fromkeys([replace or plan.settings.table, plan.settings.table]):
            commands += [_cmd("add", "table", _table(name)), _cmd("delete", "table", _table(name))]
        commands += skeleton(plan.settings, plan.counter_size)
        empty = Plan(plan.settings)
        commands += _diff(empty, plan, list(plan.entries))
        commands.extend(_generation(plan, first=True))
        return plan, commands


def apply_grouped(
    table: Mapping[ServiceKey, VirtualServer], ops: Sequence[Op]
) -> dict[ServiceKey, tuple[VirtualServer, list[DestKey]] | None]:
    """`reconcile.apply_ops` for the virtual servers the operations touch, in one pass
    (a full program is 50,000 AddDest operations, which apply_ops handles in O(n^2)):
    per virtual server, in the order first touched (slots are allocated in it), the
    server with its real servers' keys, or None when it is gone."""
    attrs: dict[ServiceKey, VirtualServer | None] = {}
    dests: dict[ServiceKey, dict[DestKey, RealServer]] = {}

    def reals(key: ServiceKey) -> dict[DestKey, RealServer]:
        d = dests.get(key)
        if d is None:  # first touched
            vs = attrs[key] = table.get(key)
            d = dests[key] = {rs.key: rs for rs in vs.real_servers} if vs is not None else {}
        return d

    for op in ops:
        if type(op) is AddDest:  # nearly all of a full program's: before the match
            d, rs = reals(op.service), op.dest
            d.pop(rs.key, None)
            d[rs.key] = rs
            continue
        match op:
            case AddService(vs) | EditService(vs):
                reals(vs.key)
                if attrs[vs.key] is None:  # (re)created: no real servers yet
                    dests[vs.key] = {}
                attrs[vs.key] = vs
            case DeleteService(key):
                reals(key)
                attrs[key] = None
            case EditDest(key, rs):
                d, k = reals(key), rs.key
                if k in d:  # an edit keeps the server's list position
                    d[k] = rs
            case DeleteDest(key, dkey):
                reals(key).pop(dkey, None)
    return {
        key: None
        if vs is None
        else (dataclasses.replace(vs, real_servers=tuple(dests[key].values())), list(dests[key]))
        for key, vs in attrs.items()
    }


def _allocate(cursor: int, used: set[int]) -> tuple[int, int]:
    """The next free slot from `cursor` on (wrapping), and the cursor after it."""
    for step in range(MAX_VS_SLOT):
        slot = (cursor - 1 + step) % MAX_VS_SLOT + 1
        if slot not in used:
            return slot, slot % MAX_VS_SLOT + 1
    raise PlanError(f"more than {MAX_VS_SLOT} virtual servers")


def _update_entry(old: Entry, vs: VirtualServer, keys: list[DestKey]) -> Entry:
    if not old.marks and len(keys) < MAX_RS_SLOT:  # a new virtual server: slots 1, 2, ...
        base = vs_mark(old.slot)
        return make_entry(
            vs,
            old.slot,
            {k: base | i for i, k in enumerate(keys, start=1)},
            {k: rs.weight for k, rs in zip(keys, vs.real_servers, strict=True)},
            len(keys) + 1,
        )
    present = set(keys)
    used = {m & MAX_RS_SLOT for k, m in old.marks.items() if k in present}
    marks: dict[DestKey, int] = {}
    last: dict[DestKey, int] = {}
    cursor = old.next_rs
    for key, rs in zip(keys, vs.real_servers, strict=True):
        mark = old.marks.get(key)
        if mark is None:
            for step in range(MAX_RS_SLOT):
                slot = (cursor - 1 + step) % MAX_RS_SLOT + 1
                if slot not in used:
                    break
            else:
                raise PlanError(f"virtual server {vs.name}: more than {MAX_RS_SLOT} real servers")
            used.add(slot)
            cursor = slot % MAX_RS_SLOT + 1
            mark = vs_mark(old.slot) | slot
        marks[key] = mark
        last[key] = rs.weight if rs.weight > 0 else old.last_weights.get(key, 0)
    return make_entry(vs, old.slot, marks, last, cursor)


# --- rendering one virtual server --------------------------------------------------


@dataclass(frozen=True, slots=True)
class Rendered:
    """What one virtual server contributes to the table, as JSON texts."""

    chain: str
    rules: tuple[str, ...]  # each rule's expression array
    dispatch: tuple[str, str, str]  # (map, element with verdict, element key only)
    dests: Mapping[int, tuple[str, str]]  # mark -> (dest4|dest6, address)
    ports: Mapping[int, int]  # mark -> port, when the real servers' ports differ
    persist: tuple[str, str] | None  # (set name, its definition)
    sched: Mapping[int, int]  # bucket mark -> real server mark (the `sched` map's entries)


def render(entry: Entry, settings: NftSettings) -> Rendered:
    vs = entry.service
    family = "ip6" if vs.family == 6 else "ip"
    chain = f"vs_{entry.slot}"
    members = entry.members
    dmap = f"dest{vs.family}"
    dests = {m.mark: (dmap, m.key.address) for m in members}
    tail = [{"goto": {"target": entry.dnat}}] if entry.dnat else []
    try:
        decision = decide(vs.scheduler, vs.scheduler_flags, members, settings.hash_seed)
    except ValueError as exc:
        raise PlanError(f"virtual server {vs.name}: {exc}") from None
    rules: list[str] = []
    persist = None
    update: list[dict[str, Any]] = []
    if vs.persistent and decision.entries:
        name, definition, client = _persistence(entry, settings)
        persist = (name, definition)
        pair = {"concat": [client, _CT_MARK]}
        update = [{"set": {"op": "update", "elem": pair, "set": f"@{name}"}}]
        for m in members:
            if m.server.weight > 0:
                hit = {"match": {"op": "==", "left": pair, "right": f"@{name}"}}
                rules.append(json.dumps([_set_mark(m.mark), hit, *update, *tail]))
    sched: dict[int, int] = {}
    if decision.entries and tail:
        statements, sched = _schedule(decision, family, entry.slot)
        rules.append(json.dumps([*statements, *update, *tail]))
    rules.append(_REJECT)
    return Rendered(chain, tuple(rules), _dispatch(vs, chain), dests, entry.ports, persist, sched)


def _set_mark(value: object) -> dict[str, Any]:
    return {"mangle": {"key": _CT_MARK, "value": value}}


def _schedule(
    decision: Decision, family: str, slot: int
) -> tuple[list[dict[str, Any]], dict[int, int]]:
    """The statements that set a new connection's mark, and the `sched` entries they
    read: the hash or counter lands in the mark first (offset by the virtual server's
    bucket base), then `ct mark set ct mark map @sched_<slot>` turns it into a real
    server's. A named map (not one inside the rule), so a change rewrites only changed
    entries; keyed by the mark because libnftables 1.0.6's JSON cannot declare a map
    keyed by a hash's plain integer. One per virtual server: a kernel hash table of
    150,000 entries costs twice as much to fill as 1,000 of 150."""
    if decision.key == "fixed" or (decision.key == "numgen" and decision.modulus == 1):
        return [_set_mark(decision.entries[0][1])], {}
    base = BUCKET | slot << 16
    if decision.key == "numgen":
        key: dict[str, Any] = {"numgen": {"mode": "inc", "mod": decision.modulus, "offset": base}}
    else:
        flow = decision.flow
        assert flow is not None
        expr: dict[str, Any] = {"payload": {"protocol": family, "field": flow.field}}
        if flow.port:
            expr = {"concat": [expr, {"payload": {"protocol": "th", "field": "sport"}}]}
        key = {"jhash": {"mod": flow.modulus, "seed": flow.seed, "offset": base, "expr": expr}}
    lookup = _set_mark({"map": {"key": _CT_MARK, "data": f"@sched_{slot}"}})
    return [_set_mark(key), lookup], {base | i: mark for i, mark in decision.entries}


def _dnat(vs: VirtualServer, members: Sequence[Member]) -> tuple[str | None, dict[int, int]]:
    """The shared chain that DNATs a virtual server's new connections to the marked
    real server (per family and port: dnat4_8080, dnat6_keep, dnat4_map), and the
    `rsport` entries it needs. DNAT lives in these few chains rather than in each
    virtual server's rule because adding a rule with a NAT statement makes the
    kernel validate every chain the dispatch maps reach (~15 ms at 1,000)."""
    if not vs.real_servers:
        return None, {}
    ports = {m.server.port for m in members}
    if ports == {0}:  # fwmark service, ports kept as the client sent them
        return f"dnat{vs.family}_keep", {}
    if 0 in ports:
        raise PlanError(
            f"virtual server {vs.name}: nftables cannot mix real servers with and without "
            "a port in one fwmark virtual server"
        )
    if len(ports) == 1:
        return f"dnat{vs.family}_{ports.pop()}", {}
    return f"dnat{vs.family}_map", {m.mark: m.server.port for m in members}


def dnat_rules(chain: str) -> list[str]:
    """The rules of a shared DNAT chain (see _dnat), as JSON texts: count the
    connection (chain `connection`), DNAT it."""
    fam, _, spec = chain.removeprefix("dnat").partition("_")
    family = "ip6" if fam == "6" else "ip"
    addr = {"map": {"key": _CT_MARK, "data": f"@dest{fam}"}}
    count = {"jump": {"target": "connection"}}
    if spec == "keep":
        return [json.dumps([count]), json.dumps([{"dnat": {"family": family, "addr": addr}}])]
    l4 = {"meta": {"key": "l4proto"}}
    transport = {"match": {"op": "==", "left": l4, "right": {"set": ["tcp", "udp", "sctp"]}}}
    port: object = {"map": {"key": _CT_MARK, "data": "@rsport"}} if spec == "map" else int(spec)
    dnat = {"dnat": {"family": family, "addr": addr, "port": port}}
    return [json.dumps([transport, count]), json.dumps([transport, dnat])]


def persistence_set(entry: Entry) -> str | None:
    """The set remembering a persistent virtual server's clients (its name changes
    with timeout and netmask, so a change replaces it in one transaction)."""
    vs = entry.service
    if not vs.persistent:
        return None
    bits = 128 if vs.family == 6 else 32
    timeout = max(1, math.ceil(vs.persistence_timeout))
    return f"persist{vs.family}_{entry.slot}_{timeout}_{min(vs.persistence_netmask, bits)}"


def withdrawn(old: Plan, new: Plan, keys: Iterable[ServiceKey]) -> dict[str, set[int]]:
    """Per persistence set both plans keep: the marks of real servers that took new
    connections before and take none now (weight 0, or gone). Their clients' entries
    must go, as IPVS expires a quiesced server's persistence templates."""
    out: dict[str, set[int]] = {}
    for key in keys:
        before, after = old.entries.get(key), new.entries.get(key)
        if before is None or after is None:
            continue
        name = persistence_set(after)
        if name is None or name != persistence_set(before):
            continue
        gone = {m.mark for m in before.members if m.server.weight > 0} - {
            m.mark for m in after.members if m.server.weight > 0
        }
        if gone:
            out[name] = gone
    return out


def _persistence(entry: Entry, settings: NftSettings) -> tuple[str, str, dict[str, Any]]:
    vs = entry.service
    family = "ip6" if vs.family == 6 else "ip"
    bits = 128 if vs.family == 6 else 32
    timeout = max(1, math.ceil(vs.persistence_timeout))
    prefix = min(vs.persistence_netmask, bits)
    client: dict[str, Any] = {"payload": {"protocol": family, "field": "saddr"}}
    if prefix < bits:
        net = ipaddress.ip_network(f"{'::' if bits == 128 else '0.0.0.0'}/{prefix}")
        client = {"&": [client, str(net.netmask)]}
    name = persistence_set(entry)
    assert name is not None
    definition = {
        "family": "inet",
        "table": settings.table,
        "name": name,
        "type": [f"ipv{vs.family}_addr", "mark"],
        "flags": ["timeout"],
        "timeout": timeout,
        "size": settings.persistence_size,
    }
    return name, json.dumps(definition), client


def dispatch_key(vs: VirtualServer) -> tuple[str, Any]:
    """The map that sends a virtual server's new connections to its chain, and the
    element key there (its counter counts the virtual server's connections)."""
    if vs.fwmark:
        return f"fwm{vs.family}", vs.fwmark
    return f"svc{vs.family}", {"concat": [str(vs.address), vs.protocol.value, vs.port]}


def dispatch_bytes(vs: VirtualServer) -> tuple[str, bytes]:
    """dispatch_key as the kernel stores it: a mark in host byte order; an address,
    protocol number and port in network order, each field padded to 32 bits."""
    name = dispatch_key(vs)[0]
    if vs.fwmark:
        return name, vs.fwmark.to_bytes(4, sys.byteorder)
    assert vs.address is not None
    proto = _PROTOCOL_NUMBERS[vs.protocol.value]
    return name, vs.address.packed + bytes((proto, 0, 0, 0)) + vs.port.to_bytes(2, "big") + b"\0\0"


def _dispatch(vs: VirtualServer, chain: str) -> tuple[str, str, str]:
    name, key = dispatch_key(vs)
    text = json.dumps(key)
    return name, f'[{text},{{"goto":{{"target":"{chain}"}}}}]', text


# --- the table's fixed part ----------------------------------------------------------


def _table(name: str) -> dict[str, Any]:
    return {"family": "inet", "name": name}


def _cmd(verb: str, kind: str, body: Mapping[str, Any]) -> str:
    return json.dumps({verb: {kind: body}})


def skeleton(settings: NftSettings, counter_size: int = COUNTER_SIZE) -> list[str]:
    """Table, maps, sets and base chains: everything but the virtual servers."""
    t = settings.table
    base = {"family": "inet", "table": t}
    counter = [{"counter": None}]
    out = [_cmd("add", "table", _table(t))]

    def obj(kind: str, name: str, **kw: Any) -> None:
        out.append(_cmd("add", kind, {**base, "name": name, **kw}))

    obj("map", "owner", type="mark", map="mark")
    for fam in (4, 6):
        key = [f"ipv{fam}_addr", "inet_proto", "inet_service"]
        obj("map", f"svc{fam}", type=key, map="verdict", stmt=counter)
        obj("map", f"fwm{fam}", type="mark", map="verdict", stmt=counter)
        obj("map", f"dest{fam}", type="mark", map=f"ipv{fam}_addr")
    obj("map", "rsport", type="mark", map="inet_service")
    for name in ("vs_in", "vs_out"):
        obj("set", name, type="mark", stmt=counter)
    for name in ("rs_in", "rs_out", "rs_conn"):
        # dynamic (the packet path adds elements): libnftables 1.0.6's JSON cannot say
        # so, nft flags a set so when a rule of the same transaction updates it
        obj("set", name, type="mark", size=counter_size, stmt=counter)

    def chain(name: str, kind: str = "", hook: str = "", prio: int = 0) -> None:
        hooked = {"type": kind, "hook": hook, "prio": prio, "policy": "accept"} if hook else {}
        obj("chain", name, **hooked)

    def rule(chain_name: str, *expr: Mapping[str, Any]) -> None:
        out.append(_cmd("add", "rule", {**base, "chain": chain_name, "expr": list(expr)}))

    mark: dict[str, Any] = {"meta": {"key": "mark"}}
    l4: dict[str, Any] = {"meta": {"key": "l4proto"}}
    dport: dict[str, Any] = {"payload": {"protocol": "th", "field": "dport"}}
    for name, hook in (("prerouting", "prerouting"), ("output", "output")):
        chain(name, "nat", hook, DSTNAT)
        for fam, proto in ((4, "ipv4"), (6, "ipv6")):  # fwmark first, as IPVS looks them up
            rule(name, _nfproto(proto), {"vmap": {"key": mark, "data": f"@fwm{fam}"}})
        for fam, payload in ((4, "ip"), (6, "ip6")):
            daddr = {"payload": {"protocol": payload, "field": "daddr"}}
            rule(name, {"vmap": {"key": {"concat": [daddr, l4, dport]}, "data": f"@svc{fam}"}})
    chain("postrouting", "nat", "postrouting", SRCNAT)
    for proto, fam in (("ipv4", 4), ("ipv6", 6)):
        snat = _snat(settings, fam)
        if snat is not None:
            ours = {"match": {"op": "==", "left": {"&": [_CT_MARK, TAG]}, "right": TAG}}
            dnat = {"match": {"op": "in", "left": {"ct": {"key": "status"}}, "right": "dnat"}}
            rule("postrouting", _nfproto(proto), ours, dnat, snat)
    chain("connection")  # a new connection, from the DNAT chains (dnat_rules)
    rule("connection", {"set": {"op": "update", "elem": _CT_MARK, "set": "@rs_conn"}})
    chain("count")
    theirs = {"match": {"op": "==", "left": {"&": [_CT_MARK, TAG]}, "right": 0}}
    rule("count", theirs, {"return": None})
    vs_of = {"&": [_CT_MARK, VS_MASK]}
    for direction, suffix, last in (("original", "in", True), ("reply", "out", False)):
        for fam, proto in ((4, "ipv4"), (6, "ipv6")):  # the family first: vs_* count once
            rule(
                "count",
                _nfproto(proto),
                {"match": {"op": "==", "left": {"ct": {"key": "direction"}}, "right": direction}},
                {"match": {"op": "==", "left": vs_of, "right": f"@vs_{suffix}"}},
                {"match": {"op": "==", "left": _CT_MARK, "right": f"@dest{fam}"}},  # still ours
                {"set": {"op": "update", "elem": _CT_MARK, "set": f"@rs_{suffix}"}},
                *([{"return": None}] if last else []),
            )
    for name, hook in (("count_prerouting", "prerouting"), ("count_output", "output")):
        chain(name, "filter", hook, COUNT)
        rule(name, {"jump": {"target": "count"}})
    return out


def _nfproto(proto: str) -> dict[str, Any]:
    return {"match": {"op": "==", "left": {"meta": {"key": "nfproto"}}, "right": proto}}


def _snat(settings: NftSettings, family: int) -> dict[str, Any] | None:
    for address in settings.snat_address:
        if address.version == family:
            return {"snat": {"family": "ip6" if family == 6 else "ip", "addr": str(address)}}
    return {"masquerade": None} if settings.masquerade else None


# --- the difference between two plans ------------------------------------------------


class _Batch:
    """Commands in dependency order: containers, rules, elements, then what goes."""

    def __init__(self, table: str) -> None:
        self.base = f'"family":"inet","table":{json.dumps(table)}'
        self.chains: list[str] = []
        self.sets: list[str] = []
        self.add_elems: dict[str, list[str]] = {}
        self.rules: list[str] = []
        self.dispatch_add: dict[str, list[str]] = {}
        self.dispatch_del: dict[str, list[str]] = {}
        self.drop_chains: list[str] = []
        self.drop_sets: list[str] = []
        self.del_elems: dict[str, list[str]] = {}
        self.clear: dict[str, list[str]] = {}  # elements that may not exist: added, deleted

    def elements(self, verb: str, groups: Mapping[str, list[str]]) -> list[str]:
        return [
            f'{{"{verb}":{{"element":{{{self.base},"name":"{name}","elem":[{",".join(items)}]}}}}}}'
            for name, items in groups.items()
            if items
        ]

    def chain(self, verb: str, name: str) -> str:
        return f'{{"{verb}":{{"chain":{{{self.base},"name":"{name}"}}}}}}'

    def rule(self, chain: str, expr: str) -> str:
        return f'{{"add":{{"rule":{{{self.base},"chain":"{chain}","expr":{expr}}}}}}}'

    def commands(self) -> list[str]:
        return [
            *self.chains,
            *self.sets,
            *self.rules,  # before the elements: nft 1.0.6 evaluates rules slower after them
            *self.elements("delete", self.del_elems),  # before adds: a changed entry is both
            *self.elements("add", self.add_elems),
            # deletes first: an fwmark's key can pass from one virtual server to another
            *self.elements("delete", self.dispatch_del),
            *self.elements("add", self.dispatch_add),
            *self.elements("add", self.clear),
            *self.elements("delete", self.clear),
            *self.drop_chains,
            *self.drop_sets,
        ]


def _diff(old: Plan, new: Plan, touched: Iterable[ServiceKey]) -> list[str]:
    batch = _Batch(new.settings.table)
    shared_before = {e.dnat for e in old.entries.values() if e.dnat}
    shared_after = {e.dnat for e in new.entries.values() if e.dnat}
    for chain in sorted(shared_after - shared_before):
        batch.chains.append(batch.chain("add", chain))
        batch.rules.extend(batch.rule(chain, expr) for expr in dnat_rules(chain))
    for key in touched:
        before, after = old.rendered.get(key), new.rendered.get(key)
        if before is None and key in old.entries:  # not rendered yet (adopted): render now
            before = render(old.entries[key], old.settings)
        _diff_service(
            batch,
            before,
            after,
            old.entries.get(key),
            new.entries.get(key),
        )
    for chain in sorted(shared_before - shared_after):
        batch.drop_chains += [batch.chain("flush", chain), batch.chain("delete", chain)]
    return batch.commands()


def _diff_service(
    b: _Batch, old: Rendered | None, new: Rendered | None, old_e: Entry | None, new_e: Entry | None
) -> None:
    add, delete = b.add_elems, b.del_elems
    old_dests = old.dests if old else {}
    new_dests = new.dests if new else {}
    added = [m for m in new_dests if m not in old_dests]
    removed = [m for m in old_dests if m not in new_dests]
    if added:  # per virtual server, not per element: a full program adds 50,000
        add.setdefault(new_dests[added[0]][0], []).extend(
            f'[{m},"{new_dests[m][1]}"]' for m in added
        )
    if removed:  # its counters go too (the packet path created them, or not)
        texts = [str(m) for m in removed]
        delete.setdefault(old_dests[removed[0]][0], []).extend(texts)
        for name in ("rs_in", "rs_out", "rs_conn"):
            b.clear.setdefault(name, []).extend(texts)
    old_sched = old.sched if old else {}
    new_sched = new.sched if new else {}
    if new is not None and old_sched != new_sched:  # a deleted map takes its entries along
        name = new.chain.replace("vs_", "sched_", 1)
        adds = add.setdefault(name, [])
        if not old_sched:
            adds.extend(f"[{bucket},{mark}]" for bucket, mark in new_sched.items())
        for bucket, mark in new_sched.items() if old_sched else ():
            was = old_sched.get(bucket)
            if was != mark:
                if was is not None:
                    delete.setdefault(name, []).append(str(bucket))
                adds.append(f"[{bucket},{mark}]")
        for bucket in old_sched.keys() - new_sched.keys():
            delete.setdefault(name, []).append(str(bucket))
    old_ports = dict(old.ports) if old else {}
    new_ports = dict(new.ports) if new else {}
    for mark, port in new_ports.items():
        if old_ports.get(mark) != port:
            if mark in old_ports:
                delete.setdefault("rsport", []).append(str(mark))
            add.setdefault("rsport", []).append(f"[{mark},{port}]")
    for mark in old_ports.keys() - new_ports.keys():
        delete.setdefault("rsport", []).append(str(mark))
    if new is not None and new_e is not None and old is None:
        b.chains.append(b.chain("add", new.chain))
        sched = new.chain.replace("vs_", "sched_", 1)
        b.sets.append(
            f'{{"add":{{"map":{{{b.base},"name":"{sched}","type":"mark","map":"mark"}}}}}}'
        )
        for name in ("vs_in", "vs_out"):
            add.setdefault(name, []).append(str(new_e.mark))
        b.dispatch_add.setdefault(new.dispatch[0], []).append(new.dispatch[1])
    if old is not None and old_e is not None and new is None:
        b.dispatch_del.setdefault(old.dispatch[0], []).append(old.dispatch[2])
        b.drop_chains += [b.chain("flush", old.chain), b.chain("delete", old.chain)]
        sched = old.chain.replace("vs_", "sched_", 1)
        b.drop_sets.append(f'{{"delete":{{"map":{{{b.base},"name":"{sched}"}}}}}}')
        for name in ("vs_in", "vs_out"):
            delete.setdefault(name, []).append(str(old_e.mark))
    if old is not None and new is not None and old.dispatch != new.dispatch:
        b.dispatch_del.setdefault(old.dispatch[0], []).append(old.dispatch[2])  # family moved
        b.dispatch_add.setdefault(new.dispatch[0], []).append(new.dispatch[1])
    old_persist = old.persist if old else None
    new_persist = new.persist if new else None
    if new_persist is not None and new_persist != old_persist:
        b.sets.append(f'{{"add":{{"set":{new_persist[1]}}}}}')
    if old_persist is not None and old_persist != new_persist:
        b.drop_sets.append(f'{{"delete":{{"set":{{{b.base},"name":"{old_persist[0]}"}}}}}}')
    if new is not None and (old is None or old.rules != new.rules or old_persist != new_persist):
        if old is not None:
            b.rules.append(b.chain("flush", new.chain))
        b.rules.extend(b.rule(new.chain, expr) for expr in new.rules)


def _generation(plan: Plan, *, first: bool = False) -> list[str]:
    base = {"family": "inet", "table": plan.settings.table, "name": "owner"}
    out = [] if first else [_cmd("delete", "element", {**base, "elem": [2]})]
    elems = [[1, LAYOUT], [2, plan.generation]] if first else [[2, plan.generation]]
    out.append(_cmd("add", "element", {**base, "elem": elems}))
    return out


def document(commands: Sequence[str]) -> str:
    """The transaction libnftables runs: `{"nftables": [...]}`."""
    return '{"nftables":[' + ",".join(commands) + "]}"


# --- the state file: the plan as JSON ------------------------------------------------


def dump_state(plan: Plan) -> dict[str, Any]:
    return {
        "layout": LAYOUT,
        "table": plan.settings.table,
        "generation": plan.generation,
        "next_vs": plan.next_vs,
        "counter_size": plan.counter_size,
        "services": [_dump_entry(e) for e in plan.entries.values()],
    }


def load_state(doc: Mapping[str, Any], settings: NftSettings) -> Plan:
    """A plan from `dump_state`'s output. KeyError/ValueError/TypeError when malformed."""
    if doc["layout"] != LAYOUT or doc["table"] != settings.table:
        raise ValueError("another layout or table")
    entries = {}
    for item in doc["services"]:
        entry = _load_entry(item)
        entries[entry.service.key] = entry
    generation, next_vs, size = int(doc["generation"]), int(doc["next_vs"]), doc["counter_size"]
    return Plan(settings, entries, generation, next_vs, counter_size=int(size))


def _dump_entry(e: Entry) -> dict[str, Any]:
    vs = e.service
    return {
        "slot": e.slot,
        "next_rs": e.next_rs,
        "name": vs.name,
        "address": str(vs.address) if vs.address is not None else None,
        "port": vs.port,
        "protocol": vs.protocol.value,
        "fwmark": vs.fwmark,
        "scheduler": vs.scheduler,
        "flags": sorted(vs.scheduler_flags),
        "persistence_timeout": vs.persistence_timeout,
        "persistence_netmask": vs.persistence_netmask,
        "quiesce": vs.quiesce,
        "sorry_server": str(vs.sorry_server) if vs.sorry_server else None,
        "real_servers": [
            [m.key.address, m.server.port, m.server.weight, m.mark, m.last_weight]
            for m in e.members
        ],
    }


def _load_entry(d: Mapping[str, Any]) -> Entry:
    reals, marks, last = [], {}, {}
    for host, port, weight, mark, last_weight in d["real_servers"]:
        rs = RealServer(ipaddress.ip_address(host), int(port), int(weight), Forwarding.NAT)
        reals.append(rs)
        marks[rs.key] = int(mark)
        last[rs.key] = int(last_weight)
    sorry = None
    if d["sorry_server"]:
        host, _, port = str(d["sorry_server"]).rpartition(":")
        sorry = Endpoint(ipaddress.ip_address(host.strip("[]")), int(port))
    address: IPAddress | None = ipaddress.ip_address(d["address"]) if d["address"] else None
    vs = VirtualServer(
        name=str(d["name"]),
        address=address,
        port=int(d["port"]),
        protocol=Protocol(d["protocol"]),
        fwmark=int(d["fwmark"]),
        scheduler=str(d["scheduler"]),
        scheduler_flags=frozenset(d["flags"]),
        persistence_timeout=float(d["persistence_timeout"]),
        persistence_netmask=int(d["persistence_netmask"]),
        quiesce=bool(d["quiesce"]),
        sorry_server=sorry,
        real_servers=tuple(reals),
    )
    return make_entry(vs, int(d["slot"]), marks, last, int(d["next_rs"]))
