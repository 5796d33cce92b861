"""Gratuitous ARP (IPv4) and unsolicited neighbour advertisements (IPv6).

scapy builds the frames; they go out on our own AF_PACKET socket bound to the
interface, with the MAC read from netlink at send time. So scapy's import-time
snapshot of interfaces and routes (see the netns reference) is never used,
and scapy is imported once, in the VRRP process, before the first takeover
(importing it takes ~0.4 s: not something to do while taking over).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Iterable
from typing import Any

from lvsmon.ha.links import Links
from lvsmon.logs import fields
from lvsmon.model import IPAddress
from lvsmon.model.failover import GroupAddress

log = logging.getLogger("lvsmon.ha")

BROADCAST = "ff:ff:ff:ff:ff:ff"
ALL_NODES_V6 = "ff02::1"
ALL_NODES_MAC = "33:33:00:00:00:01"


def _scapy() -> Any:
    logging.getLogger("scapy.runtime").setLevel(logging.ERROR)
    from scapy.layers import inet6, l2

    return l2, inet6


def garp_frame(mac: str, address: IPAddress) -> bytes:
    """ARP request for our own address (sender = target = VIP), as keepalived sends."""
    l2, _ = _scapy()
    frame = l2.Ether(src=mac, dst=BROADCAST) / l2.ARP(
        op=1, hwsrc=mac, psrc=str(address), hwdst="00:00:00:00:00:00", pdst=str(address)
    )
    return bytes(frame)


def na_frame(mac: str, address: IPAddress) -> bytes:
    """Unsolicited NA to all nodes, Override set: updates existing neighbour entries."""
    _, inet6 = _scapy()
    frame = (
        inet6.Ether(src=mac, dst=ALL_NODES_MAC)
        / inet6.IPv6(src=str(address), dst=ALL_NODES_V6, hlim=255)
        / inet6.ICMPv6ND_NA(tgt=str(address), R=0, S=0, O=1)
        / inet6.ICMPv6NDOptDstLLAddr(lladdr=mac)
    )
    return bytes(frame)


class Announcer:
    def __init__(self, links: Links):
        _scapy()  # import now, not during a takeover
        self._links = links
        self._socks: dict[str, socket.socket] = {}
        self._built: dict[tuple[str, str, IPAddress], bytes] = {}
        self.sent = 0

    def _sock(self, interface: str) -> socket.socket:
        sock = self._socks.get(interface)
        if sock is None:
            # Protocol 0: send-only. A receiving packet socket costs the kernel an RCU
            # grace period to hook in: ~10 ms measured, per interface, at takeover.
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
            sock.bind((interface, 0))
            sock.setblocking(False)
            self._socks[interface] = sock
        return sock

    def frames(self, addresses: Iterable[GroupAddress]) -> list[tuple[str, bytes]]:
        """The frames for these addresses; built once per MAC (scapy takes ~1 ms a frame),
        so a group calls this when it starts and a takeover finds them ready."""
        macs: dict[str, str] = {}
        out = []
        for a in addresses:
            if a.interface not in macs:
                macs[a.interface] = self._links.mac(a.interface)
            self._sock(a.interface)  # ready before a takeover needs it
            key = (a.interface, macs[a.interface], a.address)
            frame = self._built.get(key)
            if frame is None:
                build = garp_frame if a.address.version == 4 else na_frame
                frame = self._built[key] = build(key[1], a.address)
            out.append((a.interface, frame))
        return out

    def send(self, frames: list[tuple[str, bytes]]) -> None:
        for interface, frame in frames:
            try:
                self._sock(interface).send(frame)
                self.sent += 1
            except OSError as exc:
                self._socks.pop(interface, None)
                log.warning("cannot announce", extra=fields(interface=interface, error=str(exc)))

    def burst(self, addresses: Iterable[GroupAddress], repeat: int, interval: float) -> None:
        """Send now, then `repeat - 1` more times `interval` apart (timers, no sleeping)."""
        if repeat <= 0:
            return
        try:
            frames = self.frames(addresses)
        except OSError as exc:
            log.warning("cannot build announcements", extra=fields(error=str(exc)))
            return
        self.send(frames)
        loop = asyncio.get_running_loop()
        for n in range(1, repeat):
            loop.call_later(n * interval, self.send, frames)

    def close(self) -> None:
        for sock in self._socks.values():
            sock.close()
        self._socks.clear()
