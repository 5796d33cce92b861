"""Raw IP protocol 112 sockets for VRRP adverts, one per (interface, family).

Sending: the kernel builds the IP header; TTL/hop limit 255, the source is
pinned with IP_PKTINFO/IPV6_PKTINFO (the interface's primary IPv4 address or
its IPv6 link-local address, per RFC 5798), multicast loopback is off.
Receiving: IPv4 raw sockets deliver the IP header, so TTL, source and
destination come from it; IPv6 ones do not, so the hop limit and destination
come from IPV6_RECVHOPLIMIT / IPV6_RECVPKTINFO ancillary data. The checksum
is never offloaded to the kernel, so bad ones can be counted, not dropped
silently. Each datagram carries the kernel's arrival time (SO_TIMESTAMPNS):
the backup's master-down timer runs from when the advert arrived, not from
when Python got to it.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import socket
import struct
import time

from lvsmon.ha import codec
from lvsmon.ha.receive import Datagram
from lvsmon.model import IPAddress

SOL_IP = socket.IPPROTO_IP
SOL_IPV6 = socket.IPPROTO_IPV6
IP_PKTINFO = 8
IPV6_PKTINFO = 50
IPV6_RECVPKTINFO = 49
IPV6_HOPLIMIT = 52
IPV6_RECVHOPLIMIT = 51
MAX_PACKET = 2048  # a VRRP advert is at most 1,068 bytes (255 IPv4 addresses + IP header)
# Room for a burst of ~10^4 small datagrams: a flood of junk must not crowd out the
# peer's adverts while the loop works through it (the kernel doubles the value).
RCVBUF = 1 << 20
SO_TIMESTAMPNS = 35  # also the cmsg type (SCM_TIMESTAMPNS)
SO_RXQ_OVFL = 40  # each datagram carries the socket's count of drops on a full queue


class AdvertSocket:
    def __init__(self, interface: str, family: int, source: IPAddress):
        self.interface = interface
        self.family = family
        self.source = source  # what our adverts carry as the IP source
        self.ifindex = socket.if_nametoindex(interface)
        self.overflows = 0  # datagrams the kernel dropped on a full receive queue, so far
        af = socket.AF_INET if family == 4 else socket.AF_INET6
        self.sock = socket.socket(af, socket.SOCK_RAW, codec.PROTO)
        try:
            self._setup()
        except OSError:
            self.sock.close()
            raise

    def _setup(self) -> None:
        s = self.sock
        s.setblocking(False)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, self.interface.encode())
        s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
        s.setsockopt(socket.SOL_SOCKET, SO_RXQ_OVFL, 1)
        if self.family == 4:
            mreqn = struct.pack("4s4si", codec.GROUP_V4.packed, b"\0" * 4, self.ifindex)
            s.setsockopt(SOL_IP, socket.IP_ADD_MEMBERSHIP, mreqn)
            s.setsockopt(SOL_IP, socket.IP_MULTICAST_IF, mreqn)
            s.setsockopt(SOL_IP, socket.IP_MULTICAST_TTL, codec.TTL)
            s.setsockopt(SOL_IP, socket.IP_TTL, codec.TTL)
            s.setsockopt(SOL_IP, socket.IP_MULTICAST_LOOP, 0)
        else:
            mreq = codec.GROUP_V6.packed + struct.pack("@I", self.ifindex)
            s.setsockopt(SOL_IPV6, socket.IPV6_JOIN_GROUP, mreq)
            s.setsockopt(SOL_IPV6, socket.IPV6_MULTICAST_IF, self.ifindex)
            s.setsockopt(SOL_IPV6, socket.IPV6_MULTICAST_HOPS, codec.TTL)
            s.setsockopt(SOL_IPV6, socket.IPV6_UNICAST_HOPS, codec.TTL)
            s.setsockopt(SOL_IPV6, socket.IPV6_MULTICAST_LOOP, 0)
            s.setsockopt(SOL_IPV6, IPV6_RECVHOPLIMIT, 1)
            s.setsockopt(SOL_IPV6, IPV6_RECVPKTINFO, 1)

    def fileno(self) -> int:
        return self.sock.fileno()

    def send(self, payload: bytes, destination: IPAddress) -> None:
        if self.family == 4:
            info = struct.pack("@i4s4s", self.ifindex, self.source.packed, b"\0" * 4)
            cmsg = [(SOL_IP, IP_PKTINFO, info)]
            self.sock.sendmsg([payload], cmsg, 0, (str(destination), 0))
        else:
            info = self.source.packed + struct.pack("@I", self.ifindex)
            cmsg = [(SOL_IPV6, IPV6_PKTINFO, info)]
            self.sock.sendmsg([payload], cmsg, 0, (str(destination), 0, 0, self.ifindex))

    def receive(self, most: int) -> tuple[list[Datagram], bool]:
        """Up to `most` queued datagrams (non-blocking), and whether more may be queued;
        malformed IP framing is dropped. Oversized ones come back `clipped`."""
        out: list[Datagram] = []
        for _ in range(most):
            try:
                data, ancdata, flags, addr = self.sock.recvmsg(MAX_PACKET, 256)
            except (BlockingIOError, InterruptedError):
                return out, False
            arrived = _arrival(ancdata)
            self.overflows = max(self.overflows, _overflows(ancdata))
            if self.family == 4:
                gram = self._parse_v4(data, arrived)
            else:
                gram = self._parse_v6(data, ancdata, addr, arrived)
            if gram is not None:
                if flags & socket.MSG_TRUNC:
                    gram = dataclasses.replace(gram, clipped=True)
                out.append(gram)
        return out, True

    @staticmethod
    def _parse_v4(data: bytes, arrived: float) -> Datagram | None:
        if len(data) < 20 or data[0] >> 4 != 4:
            return None
        ihl = (data[0] & 0xF) * 4
        if len(data) < ihl:
            return None
        src = ipaddress.IPv4Address(data[12:16])
        dst = ipaddress.IPv4Address(data[16:20])
        return Datagram(data[ihl:], src, dst, data[8], arrived)

    @staticmethod
    def _parse_v6(
        data: bytes, ancdata: list[tuple[int, int, bytes]], addr: tuple[str, ...], arrived: float
    ) -> Datagram | None:
        hops, dst = -1, None
        for level, kind, value in ancdata:
            if level == SOL_IPV6 and kind == IPV6_HOPLIMIT and len(value) >= 4:
                hops = struct.unpack("@i", value[:4])[0]
            elif level == SOL_IPV6 and kind == IPV6_PKTINFO and len(value) >= 16:
                dst = ipaddress.IPv6Address(value[:16])
        if dst is None:
            return None
        src = ipaddress.IPv6Address(addr[0].split("%")[0])
        return Datagram(data, src, dst, hops, arrived)

    def close(self) -> None:
        self.sock.close()


def _overflows(ancdata: list[tuple[int, int, bytes]]) -> int:
    for level, kind, value in ancdata:
        if level == socket.SOL_SOCKET and kind == SO_RXQ_OVFL and len(value) >= 4:
            return int(struct.unpack_from("@I", value)[0])
    return 0


def _arrival(ancdata: list[tuple[int, int, bytes]]) -> float:
    """The kernel's (wall clock) receive time as time.monotonic(); now if absent or odd."""
    now = time.monotonic()
    for level, kind, value in ancdata:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(value) >= 16:
            sec, nsec = struct.unpack_from("@qq", value)
            age = time.time() - (int(sec) + int(nsec) / 1e9)
            if 0 <= age < 1:  # a wall clock step must not move timers
                return now - age
    return now
