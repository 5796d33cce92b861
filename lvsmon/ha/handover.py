"""Connections that outlive a move of the VIP (failover_group.handover_forward).

A proxy plane terminates TCP on the director, so when the VIP moves, the new
master has no socket for the connections the old master still serves: the
client's next segment would get a reset. While the old master lives (it handed
over, or was preempted) both ends cooperate (GLB's "second chance", at L2):

- the new master, having taken over from a live peer (its last advert had
  priority 0, or its adverts still came: we preempted it), sends every TCP
  segment for a VIP that is not a SYN and belongs to no connection its conntrack
  has seen (picked up as new, or a first FIN/RST it cannot track) to that peer's
  MAC, unchanged (`dup to PEER device IF`, then drop), for handover_forward
  seconds: one nftables table of its own, `lvsmon_handover_<vrid>_<interface>` (family
  ip or ip6), back to tracking only when the period ends or the director stops
  being master. The table exists from the VRRP process's start: its `ct`
  expression keeps conntrack on, so a director knows its own connections when
  it takes over and never sends them away;
- the old master keeps the VIP on `lo` (/32, /128), so the kernel still delivers
  those segments to the proxy's sockets, and on the group's interface sets
  arp_ignore = 1 and arp_announce = 2 (the LVS-DR real server settings) so it
  neither answers ARP for the VIP nor uses it as an ARP source: the daemon while
  its data plane drains on a stop (daemon.shutdown_grace), the VRRP process for
  handover_forward when demoted to backup. Both are undone after, and the lo
  copies at the next start after a crash.

Only the VIPs on the group's interface and of the adverts' family are forwarded
(the peer is a neighbour there, known by an address of that family). Set
handover_forward to at least the peers' shutdown_grace, on both directors.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lvsmon.ha.links import Links, NetlinkLinks
from lvsmon.logs import fields
from lvsmon.model import IPAddress
from lvsmon.model.failover import FailoverGroup, GroupAddress

log = logging.getLogger("lvsmon.ha")

SYSCTL = Path("/proc/sys/net/ipv4/conf")
ARP_HOLD = {"arp_ignore": 1, "arp_announce": 2}  # the least that keeps the VIP quiet
MAX_FLOWS = 1 << 20  # connections forwarded at once (nft's default is 65,535)
PRIORITY = -150  # after conntrack (-200): `ct state` is known


def table_name(cfg: FailoverGroup) -> str:
    """Unique per group: a VRID is unique per interface and family (the table's)."""
    interface = "".join(c if c.isalnum() else "_" for c in cfg.interface)
    return f"lvsmon_handover_{cfg.vrid}_{interface}"


def handover_identity(cfg: FailoverGroup) -> tuple[object, ...]:
    """What the group's table is built from: a reload that changes it rebuilds it."""
    return (table_name(cfg), cfg.handover_forward, tuple(forwarded(cfg)))


def forwarded(cfg: FailoverGroup) -> list[GroupAddress]:
    """The VIPs whose connections move: on the group's interface (where the peer is a
    neighbour) and of the adverts' family (the peer is known by an address of it)."""
    if cfg.handover_forward <= 0:
        return []
    return [
        a for a in cfg.addresses if a.interface == cfg.interface and a.address.version == cfg.family
    ]


def forwarding(cfg: FailoverGroup, peer: IPAddress | None) -> str:
    """The transaction that (re)creates the group's table. Pure. Without a peer it
    only counts the connections that start here: its `ct` expression keeps
    conntrack on from the VRRP process's start, so that this director's own
    connections are known when it takes over, and never taken for the old
    master's. With a peer it also forwards the connections it never saw."""
    proto = "ip" if cfg.family == 4 else "ip6"
    table = {"family": proto, "name": table_name(cfg)}  # `dup` needs one family
    addr_type = "ipv4_addr" if cfg.family == 4 else "ipv6_addr"
    vips = [str(a.address) for a in forwarded(cfg)]

    def payload(field_: str, protocol: str = proto) -> dict[str, Any]:
        return {"payload": {"protocol": protocol, "field": field_}}

    flow = {
        "concat": [
            payload("saddr"),
            payload("sport", "tcp"),
            payload("daddr"),
            payload("dport", "tcp"),
        ]
    }
    not_syn = {
        "match": {
            "op": "==",
            "left": {"&": [payload("flags", "tcp"), "syn"]},
            "right": 0,
        }
    }
    to_vip = {"match": {"op": "==", "left": payload("daddr"), "right": {"set": vips}}}
    seen = {"set": {"op": "update", "elem": flow, "set": "@flows"}}

    def ct_state(state: str) -> dict[str, Any]:
        return {"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": state}}

    closing = {
        "match": {
            "op": "!=",
            "left": {"&": [payload("flags", "tcp"), ["fin", "rst"]]},
            "right": 0,
        }
    }
    syn = {"match": {"op": "==", "left": {"&": [payload("flags", "tcp"), "syn"]}, "right": "syn"}}
    rules: list[list[dict[str, Any]]] = [[to_vip, syn, ct_state("new"), {"counter": None}]]
    if peer is not None:
        forward: list[dict[str, Any]] = [
            {"dup": {"addr": str(peer), "dev": cfg.interface}},
            {"drop": None},
        ]
        rules += [
            # a segment of a connection this director never saw: conntrack picks it up
            [to_vip, not_syn, ct_state("new"), seen],
            # ... or, when it is the connection's FIN or RST, cannot track it at all
            [to_vip, not_syn, closing, ct_state("invalid"), seen],
            [{"match": {"op": "==", "left": flow, "right": "@flows"}}, not_syn, seen, *forward],
        ]
    commands: list[dict[str, Any]] = [
        {"add": {"table": table}},
        {"delete": {"table": table}},
        {"add": {"table": table}},
        {
            "add": {
                "set": {
                    **table_ref(table),
                    "name": "flows",
                    "type": [addr_type, "inet_service", addr_type, "inet_service"],
                    "flags": ["timeout"],
                    "size": MAX_FLOWS,
                    "timeout": max(1, round(cfg.handover_forward)),
                }
            }
        },
        {
            "add": {
                "chain": {
                    **table_ref(table),
                    "name": "prerouting",
                    "type": "filter",
                    "hook": "prerouting",
                    "prio": PRIORITY,
                    "policy": "accept",
                }
            }
        },
    ]
    for expr in rules:
        rule = {
            **table_ref(table),
            "chain": "prerouting",
            "expr": [
                {"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": "tcp"}},
                *expr,
            ],
        }
        commands.append({"add": {"rule": rule}})
    return json.dumps({"nftables": commands})


def table_ref(table: dict[str, str]) -> dict[str, str]:
    return {"family": table["family"], "table": table["name"]}


def removal(cfg: FailoverGroup) -> str:
    table = {"family": "ip" if cfg.family == 4 else "ip6", "name": table_name(cfg)}
    return json.dumps({"nftables": [{"add": {"table": table}}, {"delete": {"table": table}}]})


class Forwarder:
    """The group's table, from the VRRP process's start to its end: tracking only,
    or forwarding to the old master while a period lasts."""

    def __init__(self) -> None:
        self._nft: Any = None

    def _run(self, document: str) -> None:
        from lvsmon.dataplane.libnftables import Nft

        if self._nft is None:
            self._nft = Nft()
        self._nft.transaction(document)

    def track(self, cfg: FailoverGroup) -> None:
        """Tracking only (at start, and when a forwarding period ends)."""
        try:
            self._run(forwarding(cfg, None))
        except Exception as exc:  # NftError, or no libnftables
            log.error(
                "cannot track connections for handover_forward: they will reset on a move",
                extra=fields(group=cfg.name, table=table_name(cfg), error=str(exc)),
            )

    def start(self, cfg: FailoverGroup, peer: IPAddress) -> bool:
        try:
            self._run(forwarding(cfg, peer))
        except Exception as exc:  # NftError, or no libnftables: handover as before
            log.error(
                "cannot forward the old master's connections",
                extra=fields(group=cfg.name, peer=str(peer), error=str(exc)),
            )
            return False
        log.warning(
            "forwarding the old master's connections",
            extra=fields(group=cfg.name, peer=str(peer), seconds=cfg.handover_forward),
        )
        return True

    def remove(self, cfg: FailoverGroup, *, quiet: bool = False) -> None:
        """Delete the group's table (`quiet`: none may exist, nftables may be missing)."""
        try:
            self._run(removal(cfg))
        except Exception as exc:
            if not quiet:
                log.error(
                    "cannot remove the handover table",
                    extra=fields(group=cfg.name, table=table_name(cfg), error=str(exc)),
                )

    def close(self) -> None:
        if self._nft is not None:
            self._nft.close()
            self._nft = None


# --- the old master's side ---------------------------------------------------------


def held_addresses(groups: Sequence[FailoverGroup]) -> list[GroupAddress]:
    """The copies on `lo` that keep the VIPs local while the data plane drains."""
    return [
        GroupAddress(a.address, 32 if a.address.version == 4 else 128, "lo")
        for g in groups
        for a in forwarded(g)
    ]


@dataclass
class Hold:
    """VIPs kept on `lo` and ARP kept quiet, from before the handover to after the drain."""

    addresses: list[GroupAddress]
    links: Links  # the VRRP process's own, or `opened` for this hold's life
    opened: NetlinkLinks | None = None
    restore: dict[Path, str] = field(default_factory=dict)

    @classmethod
    def start(cls, groups: Sequence[FailoverGroup], links: Links | None = None) -> Hold | None:
        """`links`: the caller's address channel (the VRRP process has one); None
        opens a netlink socket for the hold's life (the daemon, at its stop)."""
        addresses = held_addresses(groups)
        if not addresses:
            return None
        try:
            opened = None
            if links is None:
                links = opened = NetlinkLinks()
            hold = cls(addresses, links, opened)
        except OSError as exc:
            log.error(
                "cannot keep the VIPs for the drain: established connections will be reset",
                extra=fields(error=str(exc)),
            )
            return None
        try:
            for group in groups:
                if group.handover_forward > 0 and group.family == 4:
                    hold._quiet_arp(group.interface)
        except OSError as exc:
            log.error(
                "cannot keep the VIPs for the drain: established connections will be reset",
                extra=fields(error=str(exc)),
            )
            hold.release()
            return None
        hold.links.add(addresses)  # logs its own failures
        return hold

    def _quiet_arp(self, interface: str) -> None:
        for name, least in ARP_HOLD.items():
            path = SYSCTL / interface / name
            old = path.read_text().strip()
            if int(old) < least:
                path.write_text(f"{least}\n")
                self.restore.setdefault(path, old)

    def release(self) -> None:
        self.links.remove(self.addresses)  # logs its own failures
        if self.opened is not None:
            self.opened.close()
        for path, old in self.restore.items():
            try:
                path.write_text(f"{old}\n")
            except OSError as exc:
                log.error("cannot restore a sysctl", extra=fields(path=str(path), error=str(exc)))
        self.restore.clear()
