"""The nft plane's counters, read straight from nf_tables over netlink at scrape time.

libnftables turns every listed element into nft's expression objects and then
into JSON: ~1 s per 50,000 elements, several seconds per scrape at 1,000 x 50.
The counters need four attributes per element, so this dumps a set's elements
(NFT_MSG_GETSETELEM) and reads just those: element key, map data, and the
packets and bytes of its counter. Keys are returned as raw bytes; the caller knows each
set's key type (a mark is in host byte order, addresses and ports in network
order, each concatenated field padded to 32 bits).
"""

from __future__ import annotations

import struct

from lvsmon.netlink import (
    NETLINK_NETFILTER,
    NLA_TYPE_MASK,
    NLAHDR,
    NLM_F_DUMP,
    NLM_F_REQUEST,
    NLMSGHDR,
    NetlinkSocket,
    attr_list,
)

_GETSETELEM = (10 << 8) | 13  # NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_GETSETELEM
_NFPROTO_INET = 1
_LIST_TABLE, _LIST_SET, _LIST_ELEMENTS = 1, 2, 3  # NFTA_SET_ELEM_LIST_*
_LIST_ELEM = 1  # NFTA_LIST_ELEM
_ELEM_KEY, _ELEM_DATA, _ELEM_EXPR, _ELEM_EXPRESSIONS = 1, 2, 7, 11  # NFTA_SET_ELEM_*
_DATA_VALUE = 1  # NFTA_DATA_VALUE
_EXPR_NAME, _EXPR_DATA = 1, 2  # NFTA_EXPR_*
_COUNTER_BYTES, _COUNTER_PACKETS = 1, 2  # NFTA_COUNTER_*
_U64 = struct.Struct(">Q")
_COUNTER_NAME = NLAHDR.pack(12, _EXPR_NAME) + b"counter\0"  # an NFTA_EXPR_NAME attribute
_BYTES_ATTR = NLAHDR.pack(12, _COUNTER_BYTES)  # the layout every kernel writes: bytes first
_PACKETS_ATTR = NLAHDR.pack(12, _COUNTER_PACKETS)
Elements = dict[bytes, tuple[int, int, bytes]]  # key -> (packets, bytes, map data value)


def _attr(kind: int, payload: bytes) -> bytes:
    head = NLAHDR.pack(4 + len(payload), kind)
    return head + payload + b"\0" * (-len(payload) % 4)


def request(table: str, name: str, seq: int) -> bytes:
    body = struct.pack("=BBH", _NFPROTO_INET, 0, 0)
    body += _attr(_LIST_TABLE, table.encode() + b"\0") + _attr(_LIST_SET, name.encode() + b"\0")
    flags = NLM_F_REQUEST | NLM_F_DUMP
    return NLMSGHDR.pack(NLMSGHDR.size + len(body), _GETSETELEM, flags, seq, 0) + body


def _counter(buf: bytes, start: int, end: int) -> tuple[int, int] | None:
    """(packets, bytes) of an NFTA_EXPR nest when it is a counter."""
    name, data = b"", None
    for kind, s, e in attr_list(buf, start, end):
        if kind == _EXPR_NAME:
            name = buf[s:e].rstrip(b"\0")
        elif kind == _EXPR_DATA:
            data = (s, e)
    if name != b"counter" or data is None:
        return None
    return _counter_data(buf, data[0] - 4, data[1])


def parse(datagrams: list[bytes], out: Elements) -> None:
    """Add every element of NEWSETELEM messages to `out` (elements without a counter
    count as zero; elements of a set, or with a verdict, have no data value)."""
    for buf in datagrams:
        pos = 0
        while pos + NLMSGHDR.size <= len(buf):
            length, kind = NLMSGHDR.unpack_from(buf, pos)[:2]
            if length < NLMSGHDR.size:
                break
            if kind == (10 << 8) | 12:  # NFT_MSG_NEWSETELEM
                _message(buf, pos + NLMSGHDR.size + 4, pos + length, out)
            pos += (length + 3) & ~3


def _message(buf: bytes, start: int, end: int, out: Elements) -> None:
    """One NEWSETELEM message. Walked by hand, not with _attrs: at 150,000 elements
    per scrape every allocation shows."""
    unpack = NLAHDR.unpack_from
    for kind, s, e in attr_list(buf, start, end):
        if kind != _LIST_ELEMENTS:
            continue
        pos = s
        while pos + 4 <= e:  # one NFTA_LIST_ELEM per element
            length = unpack(buf, pos)[0]
            if length < 4:
                break
            key, data, packets, octets = b"", b"", 0, 0
            at, stop = pos + 4, pos + length
            while at + 4 <= stop:
                alen, akind = unpack(buf, at)
                akind &= NLA_TYPE_MASK
                if alen < 4:
                    break
                if akind in (_ELEM_KEY, _ELEM_DATA):  # { NFTA_DATA_VALUE: bytes }
                    vlen, vkind = unpack(buf, at + 4)
                    if vkind & NLA_TYPE_MASK == _DATA_VALUE:
                        if akind == _ELEM_KEY:
                            key = buf[at + 8 : at + 4 + vlen]
                        else:
                            data = buf[at + 8 : at + 4 + vlen]
                elif akind == _ELEM_EXPR and buf[at + 4 : at + 16] == _COUNTER_NAME:
                    # { NAME "counter", DATA { BYTES u64, PACKETS u64 } }
                    packets, octets = _counter_data(buf, at + 16, at + alen)
                elif akind == _ELEM_EXPRESSIONS:
                    for _k, xs, xe in attr_list(buf, at + 4, at + alen):
                        counter = _counter(buf, xs, xe)
                        if counter is not None:
                            packets, octets = counter
                at += (alen + 3) & ~3
            out[key] = (packets, octets, data)
            pos += (length + 3) & ~3


def _counter_data(buf: bytes, start: int, end: int) -> tuple[int, int]:
    """(packets, bytes) from an expression's NFTA_EXPR_DATA nest of a counter."""
    if buf[start + 4 : start + 8] == _BYTES_ATTR and buf[start + 16 : start + 20] == _PACKETS_ATTR:
        return _U64.unpack_from(buf, start + 20)[0], _U64.unpack_from(buf, start + 8)[0]
    packets = octets = 0
    for kind, s, _e in attr_list(buf, start + 4, end):
        if kind == _COUNTER_PACKETS:
            packets = _U64.unpack_from(buf, s)[0]
        elif kind == _COUNTER_BYTES:
            octets = _U64.unpack_from(buf, s)[0]
    return packets, octets


class CounterReader:
    """One netfilter netlink socket reading element counters of one table."""

    def __init__(self, table: str, *, timeout: float = 10.0) -> None:
        self.table = table
        self._sock = NetlinkSocket(NETLINK_NETFILTER, timeout=timeout, recv_buffer=4 << 20)

    def close(self) -> None:
        self._sock.close()

    def read(self, name: str) -> Elements:
        """key -> (packets, bytes, data) of every element of set/map `name`.
        NetlinkError (ENOENT) when the table or the set is not there."""
        seq = self._sock.next_seq()
        datagrams = self._sock.dump(
            request(self.table, name, seq), seq, f"list set inet {self.table} {name}"
        )
        out: Elements = {}
        parse(datagrams, out)
        return out
