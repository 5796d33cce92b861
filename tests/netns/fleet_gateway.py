"""VRRP next to BGP in the fleet (tests/netns/fleet.py): two directors also run a failover
group that moves the real servers' NAT gateway on the back LAN, while every director
announces the VIPs over BGP (README "Scaling out", config/bgp-vrrp-gateway.toml).

    d1 ─┐  gateway_pair[0]: priority 150
    d2 ─┼─ back LAN ── rs1, rs2   default via 198.51.100.254
    d3 ─┘  gateway_pair[1]: 100; a director not in the pair: no group

`Fleet(gateway_pair=("d2", "d1"))` adds the group to those directors' configs and
the default route to the real servers; the helpers here read who holds it.
"""

from __future__ import annotations

import json
import subprocess
import textwrap
from collections.abc import Sequence
from typing import TYPE_CHECKING

from tests.netns.topology import HERE, PYTHON, Proc, run, wait_for

if TYPE_CHECKING:
    from tests.netns.fleet import Fleet

GATEWAY = "198.51.100.254"  # on the fleet's back LAN (fleet.BACK)
GROUP = "gateway"
VRID = 52
BACK_IF = "dn0"  # each director's port on the back LAN


def failover_group(pair: Sequence[str], director: str) -> str:
    """The `[[failover_group]]` of `director` if it is one of `pair` (the first preferred)."""
    if director not in pair:
        return ""
    priority = 150 if director == pair[0] else 100
    return textwrap.dedent(f"""
        [[failover_group]]
        name = "{GROUP}"
        vrid = {VRID}
        interface = "{BACK_IF}"
        priority = {priority}
        advert_interval = "100ms"
        garp_interval = "5ms"

        [[failover_group.address]]
        address = "{GATEWAY}/24"
        """)


def holders(fleet: Fleet) -> set[str]:
    """The directors whose back port carries the gateway address."""
    found = set()
    for d in fleet.directors:
        links = json.loads(fleet.ip(d.name, "-j", "addr", "show", "dev", BACK_IF))
        if any(a.get("local") == GATEWAY for link in links for a in link.get("addr_info", [])):
            found.add(d.name)
    return found


def mac(fleet: Fleet, host: str, ifname: str = BACK_IF) -> str:
    (link,) = json.loads(fleet.ip(host, "-j", "link", "show", "dev", ifname))
    return str(link["address"])


def neighbour(fleet: Fleet, host: str, address: str = GATEWAY) -> str | None:
    """The MAC `host` has for `address` (None: no entry)."""
    out = fleet.ip(host, "-j", "neigh", "show", address, check=False)
    for entry in json.loads(out) if out.strip() else []:
        if entry.get("dst") == address and "lladdr" in entry:
            return str(entry["lladdr"])
    return None


def resolve(fleet: Fleet, host: str, address: str = GATEWAY) -> str | None:
    """Ask afresh (ARP request from `host`): the MAC that answered."""
    fleet.ip(host, "neigh", "flush", "to", address, check=False)
    run(*fleet.exec_argv(host, ["ping", "-c1", "-W1", "-q", address]), check=False)
    return neighbour(fleet, host, address)


class ArpWatch:
    """ARP frames arriving at a real server (tests/netns/arp_watch.py)."""

    def __init__(self, fleet: Fleet, host: str, ifname: str = "eth0"):
        argv = [PYTHON, str(HERE / "arp_watch.py"), ifname]
        self.proc: Proc = fleet.spawn(host, "arp-watch", argv, stdin=subprocess.PIPE)
        wait_for(f"{host} watching ARP", lambda: "watching" in self.proc.output(), 10, 0.02)

    def frames(self, sender_mac: str, target: str = GATEWAY) -> list[tuple[float, str]]:
        """(when, sender IP) of the frames `sender_mac` sent about `target`."""
        seen = []
        for line in self.proc.output().splitlines():
            parts = line.split()
            if len(parts) == 5 and parts[2] == sender_mac and parts[4] == target:
                seen.append((float(parts[0]), parts[3]))
        return seen

    def gratuitous(self, sender_mac: str, address: str = GATEWAY) -> list[float]:
        """When `sender_mac` announced `address` (sender IP == target IP)."""
        return [t for t, sender in self.frames(sender_mac, address) if sender == address]

    def stop(self) -> None:
        assert self.proc.popen.stdin is not None
        self.proc.popen.stdin.close()
        self.proc.popen.wait(5)
