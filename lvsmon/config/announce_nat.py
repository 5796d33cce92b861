"""BGP for the VIPs, VRRP for the real servers' NAT gateway, NAT in the kernel: refused.

(The other contradiction, a VIP both announced and moved, is in lvsmon.config.bgp.)

Announced over BGP, a VIP draws connections to every director; a failover
group keeps the real servers' gateway on one of them. With NAT in the kernel
(IPVS, or nftables without SNAT) each reply must come back through the director
that translated its request, yet the real servers send every reply to that one
gateway: the other directors' connections break. It works where each director
receives its own replies: the proxy plane (a full proxy: real servers answer the
director's own address), nftables with `masquerade` or `snat_address`, or
direct routing / tunnel (replies go straight to the client).
"""

from __future__ import annotations

import ipaddress

from lvsmon.config.readout import Readout
from lvsmon.configkit import Problem
from lvsmon.model import DaemonSettings, Forwarding, VirtualServer
from lvsmon.model.failover import FailoverGroup

FIXES = {
    "ipvs": 'use forwarding = "dr" or "tunnel", or dataplane = "proxy"',
    "nft": 'set daemon.nft.masquerade = true (or snat_address), or use dataplane = "proxy"',
}


def kernel_nat_without_snat(daemon: DaemonSettings) -> bool:
    nft = daemon.nft
    if daemon.dataplane == "nft":
        return not (nft.masquerade or nft.snat_address)
    return daemon.dataplane == "ipvs"


def check(readout: Readout) -> None:
    daemon = readout.get("daemon", DaemonSettings)
    if not kernel_nat_without_snat(daemon):
        return
    groups = readout.failover_groups()
    for vs in readout.virtual_servers():
        if vs.announce:
            _check_one(vs, groups, daemon.dataplane, readout.problems)


def _check_one(
    vs: VirtualServer, groups: tuple[FailoverGroup, ...], plane: str, problems: list[Problem]
) -> None:
    for rs in vs.real_servers:
        if rs.forwarding is not Forwarding.NAT:
            continue
        for group in groups:
            for a in group.addresses:
                net = ipaddress.ip_network(f"{a.address}/{a.prefixlen}", strict=False)
                if a.address == rs.address or rs.address not in net:
                    continue
                fix = FIXES.get(plane, "")
                problems.append(
                    Problem(
                        f"virtual_server[{vs.name}].forwarding",
                        f'"nat" on the {plane} data plane with announce = true, but '
                        f"failover_group[{group.name}] moves {a.address}/{a.prefixlen}, "
                        f"on the network of real server {rs.label} (its NAT gateway), to one "
                        "director: BGP draws connections to every director, but the real "
                        "servers send every reply through that one, which cannot translate "
                        f"back what another director translated; {fix}",
                    )
                )
                return
