"""A generic netlink socket bound to the kernel's IPVS family: batches, dumps, errors.

Batching is what makes a 50,000-rule sync cheap: the kernel processes every
message of one `send` in order, acknowledging each, so hundreds of requests
cost one syscall plus a few `recv`s. A failing request does not stop the ones
after it; the caller gets one errno per request and decides what that means.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from collections.abc import Sequence

from lvsmon.dataplane import ipvs_codec as c

NETLINK_GENERIC = 16
SOL_NETLINK = 270
NETLINK_CAP_ACK = 10  # acks carry only the request's header, not a copy of it
SO_RCVBUFFORCE = 33
RECV_BUFFER = 16 << 20  # every ack of a batch is queued before we read any
RECV_SIZE = 1 << 16
TIMEOUT = 30.0
_ERR = struct.Struct("=i")


class NetlinkError(Exception):
    """A request the kernel refused (errno > 0) or a broken exchange."""

    def __init__(self, code: int, what: str):
        self.errno = code
        self.what = what
        super().__init__(f"{what}: {errno_name(code)} ({_strerror(code)})")


def errno_name(code: int) -> str:
    return errno.errorcode.get(code, f"errno {code}")


def _strerror(code: int) -> str:
    return os.strerror(code)


class IpvsSocket:
    """One netlink socket in the caller's network namespace, talking to IPVS."""

    def __init__(self) -> None:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_GENERIC)
        try:
            sock.setsockopt(SOL_NETLINK, NETLINK_CAP_ACK, 1)
            try:
                sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RECV_BUFFER)
            except PermissionError:  # not root: the capped buffer; batches still fit
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECV_BUFFER)
            sock.bind((0, 0))
            sock.settimeout(TIMEOUT)
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        self._seq = 0
        # the kernel answers GETFAMILY for IPVS by loading ip_vs (module alias) if needed
        self.family = self._resolve(c.IPVS_GENL_NAME)

    def close(self) -> None:
        self._sock.close()

    def _next_seq(self, n: int = 1) -> int:
        first = self._seq + 1
        self._seq += n
        return first

    def _resolve(self, name: str) -> int:
        attrs = c.asciiz(c.CTRL_ATTR_FAMILY_NAME, name)
        answer = self._request(c.GENL_ID_CTRL, c.CTRL_CMD_GETFAMILY, attrs, f"resolve {name}")
        for buf, start, end in answer:
            span = c.attrs(buf, start + c.HEADERS, end).get(c.CTRL_ATTR_FAMILY_ID)
            if span is not None:
                return c.get_u(buf, span)
        raise NetlinkError(errno.ENOENT, f"generic netlink family {name}")

    def request(self, cmd: int, attrs: bytes = b"", what: str = "") -> list[tuple[bytes, int, int]]:
        """One IPVS request that returns data (GET_CONFIG, GET_INFO): its messages."""
        return self._request(self.family, cmd, attrs, what or f"IPVS command {cmd}")

    def _request(
        self, family: int, cmd: int, attrs: bytes, what: str
    ) -> list[tuple[bytes, int, int]]:
        seq = self._next_seq()
        flags = c.NLM_F_REQUEST | c.NLM_F_ACK
        self._send(c.message(family, cmd, flags, seq, attrs), what)
        out: list[tuple[bytes, int, int]] = []
        while True:
            buf = self._recv(what)
            for kind, _flags, mseq, start, end in c.iter_messages(buf):
                if mseq != seq:
                    continue  # a late answer to an exchange that timed out
                if kind == c.NLMSG_ERROR:
                    code = -_ERR.unpack_from(buf, start + c.NLMSGHDR.size)[0]
                    if code:
                        raise NetlinkError(code, what)
                    return out
                out.append((buf, start, end))

    def dump(self, cmd: int, attrs: bytes = b"", what: str = "") -> list[bytes]:
        """A dump request: the datagrams holding its messages (parse with iter_messages)."""
        what = what or f"IPVS dump {cmd}"
        seq = self._next_seq()
        self._send(c.message(self.family, cmd, c.NLM_F_REQUEST | c.NLM_F_DUMP, seq, attrs), what)
        out: list[bytes] = []
        while True:
            buf = self._recv(what)
            done = False
            for kind, _flags, mseq, start, end in c.iter_messages(buf):
                if mseq != seq:
                    continue
                if kind in (c.NLMSG_DONE, c.NLMSG_ERROR):
                    code = (
                        -_ERR.unpack_from(buf, start + c.NLMSGHDR.size)[0]
                        if (end - start >= c.NLMSGHDR.size + 4)
                        else 0
                    )
                    if code:
                        raise NetlinkError(code, what)
                    done = True
            out.append(buf)
            if done:
                return out

    def batch(self, requests: Sequence[tuple[int, bytes]], what: str = "apply") -> list[int]:
        """Send (cmd, attrs) requests in one datagram; return each one's errno (0 = done).

        The kernel handles them in order and keeps going after a failure."""
        if not requests:
            return []
        first = self._next_seq(len(requests))
        flags = c.NLM_F_REQUEST | c.NLM_F_ACK
        family = self.family
        pack_nl, pack_genl = c.NLMSGHDR.pack, c.GENLHDR.pack
        parts = []
        for i, (cmd, attrs) in enumerate(requests):
            parts.append(pack_nl(c.HEADERS + len(attrs), family, flags, first + i, 0))
            parts.append(pack_genl(cmd, c.IPVS_GENL_VERSION, 0))
            parts.append(attrs)
        self._send(b"".join(parts), what)
        results = [-1] * len(requests)
        pending = len(requests)
        while pending:
            try:
                buf = self._recv(what)
            except NetlinkError as exc:
                if exc.errno != errno.ENOBUFS:
                    raise
                # acks were dropped: the outcome of the unanswered requests is unknown
                return [errno.ENOBUFS if r < 0 else r for r in results]
            for kind, _flags, seq, start, _end in c.iter_messages(buf):
                index = seq - first
                if kind == c.NLMSG_ERROR and 0 <= index < len(results) and results[index] < 0:
                    results[index] = -_ERR.unpack_from(buf, start + c.NLMSGHDR.size)[0]
                    pending -= 1
        return results

    def _send(self, data: bytes, what: str) -> None:
        try:
            self._sock.send(data)
        except OSError as exc:
            raise NetlinkError(exc.errno or errno.EIO, what) from None

    def _recv(self, what: str) -> bytes:
        try:
            return self._sock.recv(RECV_SIZE)
        except TimeoutError:
            raise NetlinkError(errno.ETIMEDOUT, what) from None
        except OSError as exc:
            raise NetlinkError(exc.errno or errno.EIO, what) from None
