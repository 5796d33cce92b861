"""Generic netlink bound to the kernel's IPVS family: requests, dumps, batches.

Batching is what makes a 50,000-rule sync cheap: the kernel processes every
message of one `send` in order, acknowledging each, so hundreds of requests
cost one syscall plus a few `recv`s. A failing request does not stop the ones
after it; the caller gets one errno per request and decides what that means.
The socket, the sequence numbers and the ack loop are lvsmon.netlink's; this
module frames generic netlink messages for the IPVS family.
"""

from __future__ import annotations

import errno
from collections.abc import Sequence

from lvsmon import netlink
from lvsmon.dataplane import ipvs_codec as c
from lvsmon.netlink import NetlinkError, errno_name

__all__ = ["IpvsSocket", "NetlinkError", "errno_name"]

RECV_BUFFER = 16 << 20  # every ack of a batch is queued before we read any
TIMEOUT = 30.0


class IpvsSocket:
    """One netlink socket in the caller's network namespace, talking to IPVS."""

    def __init__(self) -> None:
        self._nl = netlink.NetlinkSocket(
            netlink.NETLINK_GENERIC, timeout=TIMEOUT, recv_buffer=RECV_BUFFER, cap_ack=True
        )
        try:
            # the kernel answers GETFAMILY for IPVS by loading ip_vs (module alias) if needed
            self.family = self._resolve(c.IPVS_GENL_NAME)
        except BaseException:
            self._nl.close()
            raise

    def close(self) -> None:
        self._nl.close()

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
        seq = self._nl.next_seq()
        flags = netlink.NLM_F_REQUEST | netlink.NLM_F_ACK
        return self._nl.exchange(c.message(family, cmd, flags, seq, attrs), seq, what)

    def dump(self, cmd: int, attrs: bytes = b"", what: str = "") -> list[bytes]:
        """A dump request: the datagrams holding its messages (parse with iter_messages)."""
        seq = self._nl.next_seq()
        flags = netlink.NLM_F_REQUEST | netlink.NLM_F_DUMP
        data = c.message(self.family, cmd, flags, seq, attrs)
        return self._nl.dump(data, seq, what or f"IPVS dump {cmd}")

    def batch(self, requests: Sequence[tuple[int, bytes]], what: str = "apply") -> list[int]:
        """Send (cmd, attrs) requests in one datagram; return each one's errno (0 = done).

        The kernel handles them in order and keeps going after a failure."""
        if not requests:
            return []
        first = self._nl.next_seq(len(requests))
        flags = netlink.NLM_F_REQUEST | netlink.NLM_F_ACK
        family = self.family
        pack_nl, pack_genl = netlink.NLMSGHDR.pack, c.GENLHDR.pack
        parts = []
        for i, (cmd, attrs) in enumerate(requests):
            parts.append(pack_nl(c.HEADERS + len(attrs), family, flags, first + i, 0))
            parts.append(pack_genl(cmd, c.IPVS_GENL_VERSION, 0))
            parts.append(attrs)
        return self._nl.acks(b"".join(parts), first, len(requests), what)
