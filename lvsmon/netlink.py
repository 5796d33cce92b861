"""Netlink: one socket wrapper and one request/ack loop for every netlink user.

The IPVS data plane (generic netlink, lvsmon.dataplane.ipvs_netlink) and the VRRP
address changes (rtnetlink, lvsmon.ha.links) frame their own messages; sending,
receiving, matching acks to sequence numbers and turning failures into errnos is
done here, once.

The kernel handles a request inside sendmsg: when `send` returns the work is done
and its ack is queued, so an exchange is one syscall plus the reads of its answer.
A batch (several requests in one datagram) is answered request by request, in
order, and a failing request does not stop the ones after it.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from collections.abc import Iterator

NETLINK_ROUTE = 0
NETLINK_NETFILTER = 12
NETLINK_GENERIC = 16
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x1
NLM_F_MULTI = 0x2
NLM_F_ACK = 0x4
NLM_F_DUMP = 0x300
NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
SOL_NETLINK = 270
NETLINK_CAP_ACK = 10  # acks carry only the request's header, not a copy of it
SO_RCVBUFFORCE = 33
RECV_SIZE = 1 << 16
_ERR = struct.Struct("=i")
NLAHDR = struct.Struct("=HH")  # attribute: len, type
NLA_TYPE_MASK = 0x3FFF  # the type without NLA_F_NESTED / NLA_F_NET_BYTEORDER


class NetlinkError(Exception):
    """A request the kernel refused (errno > 0) or a broken exchange."""

    def __init__(self, code: int, what: str):
        self.errno = code
        self.what = what
        super().__init__(f"{what}: {errno_name(code)} ({os.strerror(code)})")


def errno_name(code: int) -> str:
    return errno.errorcode.get(code, f"errno {code}")


def iter_messages(buf: bytes) -> Iterator[tuple[int, int, int, int, int]]:
    """(type, flags, seq, start, end) of each netlink message in a datagram."""
    pos, size = 0, len(buf)
    while pos + NLMSGHDR.size <= size:
        length, kind, flags, seq, _pid = NLMSGHDR.unpack_from(buf, pos)
        if length < NLMSGHDR.size or pos + length > size:
            raise ValueError(f"truncated netlink message at offset {pos}")
        yield kind, flags, seq, pos, pos + length
        pos += (length + 3) & ~3


def error_code(buf: bytes, start: int, end: int) -> int:
    """The errno an NLMSG_ERROR (or NLMSG_DONE) message carries; 0: success."""
    if end - start < NLMSGHDR.size + _ERR.size:
        return 0
    return -int(_ERR.unpack_from(buf, start + NLMSGHDR.size)[0])


def attrs(buf: bytes, start: int, end: int) -> dict[int, tuple[int, int]]:
    """type -> (payload start, payload end) for the attributes in buf[start:end]."""
    out: dict[int, tuple[int, int]] = {}
    while start + 4 <= end:
        length, kind = NLAHDR.unpack_from(buf, start)
        if length < 4:
            break
        out[kind & NLA_TYPE_MASK] = (start + 4, start + length)
        start += (length + 3) & ~3
    return out


def attr_list(buf: bytes, start: int, end: int) -> list[tuple[int, int, int]]:
    """(type, payload start, payload end) of each attribute in buf[start:end], in order
    (a nest may repeat a type: one NFTA_LIST_ELEM per set element)."""
    out = []
    while start + 4 <= end:
        length, kind = NLAHDR.unpack_from(buf, start)
        if length < 4:
            break
        out.append((kind & NLA_TYPE_MASK, start + 4, start + length))
        start += (length + 3) & ~3
    return out


class NetlinkSocket:
    """A netlink socket in the caller's network namespace, with sequence numbers."""

    def __init__(
        self,
        protocol: int,
        *,
        timeout: float,
        recv_buffer: int = 0,
        cap_ack: bool = False,
    ) -> None:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, protocol)
        try:
            if cap_ack:
                sock.setsockopt(SOL_NETLINK, NETLINK_CAP_ACK, 1)
            if recv_buffer:
                try:
                    sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, recv_buffer)
                except PermissionError:  # not root: the capped buffer; batches still fit
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, recv_buffer)
            sock.bind((0, 0))
            sock.settimeout(timeout)
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        self._seq = 0

    def close(self) -> None:
        self._sock.close()

    def next_seq(self, n: int = 1) -> int:
        """The first of `n` fresh sequence numbers."""
        first = self._seq + 1
        self._seq += n
        return first

    def send(self, data: bytes, what: str) -> None:
        try:
            self._sock.send(data)
        except OSError as exc:
            raise NetlinkError(exc.errno or errno.EIO, what) from None

    def recv(self, what: str) -> bytes:
        try:
            return self._sock.recv(RECV_SIZE)
        except TimeoutError:
            raise NetlinkError(errno.ETIMEDOUT, what) from None
        except OSError as exc:
            raise NetlinkError(exc.errno or errno.EIO, what) from None

    def exchange(self, data: bytes, seq: int, what: str) -> list[tuple[bytes, int, int]]:
        """Send one request (flagged NLM_F_ACK) and return the messages answering it, up
        to its ack. Raises NetlinkError with the errno the kernel answered."""
        self.send(data, what)
        out: list[tuple[bytes, int, int]] = []
        while True:
            buf = self.recv(what)
            for kind, _flags, mseq, start, end in iter_messages(buf):
                if mseq != seq:
                    continue  # a late answer to an exchange that timed out
                if kind == NLMSG_ERROR:
                    code = error_code(buf, start, end)
                    if code:
                        raise NetlinkError(code, what)
                    return out
                out.append((buf, start, end))

    def dump(self, data: bytes, seq: int, what: str) -> list[bytes]:
        """Send a dump request; return the datagrams holding its messages, up to DONE."""
        self.send(data, what)
        out: list[bytes] = []
        while True:
            buf = self.recv(what)
            done = False
            for kind, _flags, mseq, start, end in iter_messages(buf):
                if mseq != seq:
                    continue
                if kind in (NLMSG_DONE, NLMSG_ERROR):
                    code = error_code(buf, start, end)
                    if code:
                        raise NetlinkError(code, what)
                    done = True
            out.append(buf)
            if done:
                return out

    def acks(self, data: bytes, first: int, count: int, what: str) -> list[int]:
        """Send `count` requests (sequence numbers first..first+count-1, each flagged
        NLM_F_ACK) in one datagram; return each one's errno, 0 = done. When the kernel
        dropped acks (ENOBUFS), the unanswered requests report ENOBUFS: unknown."""
        self.send(data, what)
        results = [-1] * count
        pending = count
        while pending:
            try:
                buf = self.recv(what)
            except NetlinkError as exc:
                if exc.errno != errno.ENOBUFS:
                    raise
                return [errno.ENOBUFS if r < 0 else r for r in results]
            for kind, _flags, seq, start, end in iter_messages(buf):
                index = seq - first
                if kind == NLMSG_ERROR and 0 <= index < count and results[index] < 0:
                    results[index] = error_code(buf, start, end)
                    pending -= 1
        return results
