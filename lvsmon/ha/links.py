"""The kernel seam for addresses and interface facts.

Address changes are rtnetlink requests encoded by pyroute2 (`ifaddrmsg`) and
sent on lvsmon.netlink's socket (the IPVS plane's request/ack loop). The kernel
handles an rtnetlink request inside sendmsg, so the change is done (and its ack
queued) when send returns: ~0.1 ms, synchronous, no event loop round trip.
(pyroute2's `IPRoute` runs its own event loop and cannot be used inside ours;
`AsyncIPRoute` took ~0.3 ms a request plus loop hops, measurable in the
failover time.) The process runs in the director's own namespace, so no netns
is involved. Facts needed (MAC, source address) come from ioctls and /proc/net,
per namespace too.
"""

from __future__ import annotations

import errno
import fcntl
import ipaddress
import logging
import os
import socket
import struct
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

from lvsmon import netlink
from lvsmon.logs import fields
from lvsmon.model import IPAddress
from lvsmon.model.failover import GroupAddress

log = logging.getLogger("lvsmon.ha")

IFA_F_NODAD = 0x02  # a VIP must be usable at once: no duplicate address detection
IFA_F_TENTATIVE = 0x40
SCOPE_LINK = 0x20
SIOCGIFADDR = 0x8915
SIOCGIFHWADDR = 0x8927
IF_INET6 = Path("/proc/net/if_inet6")
RTM_NEWADDR, RTM_DELADDR = 20, 21
NLM_F_EXCL, NLM_F_CREATE = 0x200, 0x400


class Links(Protocol):
    def add(self, addresses: Iterable[GroupAddress]) -> None: ...
    def remove(self, addresses: Iterable[GroupAddress]) -> None: ...
    def mac(self, interface: str) -> str: ...
    def primary(self, interface: str, family: int, exclude: Iterable[IPAddress]) -> IPAddress: ...


class NoAddress(Exception):
    """The interface has no usable source address for adverts (yet)."""


class NetlinkLinks:
    def __init__(self) -> None:
        from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg

        self._msg = ifaddrmsg
        # the ack is immediate; the timeout never lets a surprise hang the VRRP loop
        self._nl = netlink.NetlinkSocket(netlink.NETLINK_ROUTE, timeout=1.0)
        self._ioctl = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)

    def close(self) -> None:
        self._nl.close()
        self._ioctl.close()

    def add(self, addresses: Iterable[GroupAddress]) -> None:
        for a in addresses:
            code = self._request(RTM_NEWADDR, a, NLM_F_CREATE | NLM_F_EXCL)
            if code not in (0, errno.EEXIST):
                log.error(
                    "cannot add address", extra=fields(address=str(a), error=os.strerror(code))
                )

    def remove(self, addresses: Iterable[GroupAddress]) -> None:
        for a in addresses:
            code = self._request(RTM_DELADDR, a, 0)
            if code not in (0, errno.EADDRNOTAVAIL, errno.ENODEV):
                log.error(
                    "cannot remove address", extra=fields(address=str(a), error=os.strerror(code))
                )

    def _request(self, kind: int, a: GroupAddress, flags: int) -> int:
        """One rtnetlink address request; 0 or the errno the kernel answered."""
        try:
            index = socket.if_nametoindex(a.interface)
        except OSError:
            return errno.ENODEV
        msg = self._msg()
        msg["family"] = socket.AF_INET if a.address.version == 4 else socket.AF_INET6
        msg["prefixlen"] = a.prefixlen
        msg["index"] = index
        msg["flags"] = IFA_F_NODAD if a.address.version == 6 else 0
        attrs = [("IFA_ADDRESS", str(a.address))]
        if a.address.version == 4:
            attrs.insert(0, ("IFA_LOCAL", str(a.address)))
        msg["attrs"] = attrs
        seq = self._nl.next_seq()
        msg["header"] = {
            "type": kind,
            "flags": netlink.NLM_F_REQUEST | netlink.NLM_F_ACK | flags,
            "sequence_number": seq,
        }
        msg.encode()
        try:  # the ack is already queued when send returns: the kernel acted inside it
            (code,) = self._nl.acks(msg.data, seq, 1, f"address {a}")
        except netlink.NetlinkError as exc:
            return exc.errno
        return code

    def mac(self, interface: str) -> str:
        reply = fcntl.ioctl(self._ioctl.fileno(), SIOCGIFHWADDR, _ifreq(interface))
        return ":".join(f"{b:02x}" for b in reply[18:24])

    def primary(self, interface: str, family: int, exclude: Iterable[IPAddress]) -> IPAddress:
        """IPv4: the interface's primary address, unless it is a VIP; IPv6: its link-local."""
        skip = set(exclude)
        if family == 4:
            try:
                reply = fcntl.ioctl(self._ioctl.fileno(), SIOCGIFADDR, _ifreq(interface))
            except OSError as exc:
                raise NoAddress(f"{interface} has no IPv4 address: {exc.strerror}") from None
            address: IPAddress = ipaddress.IPv4Address(reply[20:24])
            if address in skip:
                raise NoAddress(f"{interface}'s primary IPv4 address {address} is a VIP")
            return address
        for line in IF_INET6.read_text().splitlines():
            hexaddr, _index, _plen, scope, flags, name = line.split()
            usable = int(scope, 16) == SCOPE_LINK and not int(flags, 16) & IFA_F_TENTATIVE
            if name == interface and usable:
                return ipaddress.IPv6Address(bytes.fromhex(hexaddr))
        raise NoAddress(f"{interface} has no usable IPv6 link-local address")


def _ifreq(interface: str) -> bytes:
    return struct.pack("16s16x", interface.encode())
