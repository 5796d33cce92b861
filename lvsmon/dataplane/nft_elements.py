"""Element-only nft transactions straight over netlink: the common small change.

A weight change of a hashing scheduler, a real server added to or removed from
one, a quiesce: Plan.apply turns these into element adds and deletes only. Run
through libnftables, each costs a fetch of the whole table's set list first
(~3-15 ms at 1,000 virtual servers on a busy 2-core machine); the kernel itself
needs well under a millisecond. This sends the same elements as one nfnetlink
batch (BEGIN, NEWSETELEM/DELSETELEM..., END): still one atomic transaction.

Only the element types the nft plane's own sets and maps hold are encoded:
keys are marks (host byte order); data are marks, IPv4/IPv6 addresses or ports
(network order). `encode` returns None for anything else, and the caller uses
libnftables.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import struct
import sys
from typing import Any

from lvsmon.netlink import (
    NETLINK_NETFILTER,
    NLAHDR,
    NLM_F_ACK,
    NLM_F_REQUEST,
    NLMSGHDR,
    NetlinkSocket,
)

_SUBSYS = 10  # NFNL_SUBSYS_NFTABLES
_NEWSETELEM, _DELSETELEM = (_SUBSYS << 8) | 12, (_SUBSYS << 8) | 14
_BATCH_BEGIN, _BATCH_END = 0x10, 0x11  # NFNL_MSG_BATCH_*
_NLM_F_CREATE = 0x400
_NESTED = 0x8000
_NFPROTO_INET = 1
_LIST_TABLE, _LIST_SET, _LIST_ELEMENTS, _LIST_ELEM = 1, 2, 3, 1
_ELEM_KEY, _ELEM_DATA, _DATA_VALUE = 1, 2, 1
Element = tuple[bytes, bytes | None]  # key, map data


def _attr(kind: int, payload: bytes) -> bytes:
    return NLAHDR.pack(4 + len(payload), kind) + payload + b"\0" * (-len(payload) % 4)


def _value(value: Any, map_name: str) -> bytes:
    """A map's data value as the kernel stores it, by what lvsmon keeps in that map."""
    if map_name in ("dest4", "dest6"):
        return ipaddress.ip_address(value).packed
    if map_name == "rsport":
        return int(value).to_bytes(2, "big")
    return int(value).to_bytes(4, sys.byteorder)  # a mark: sched_<slot>, owner


def elements_of(command: dict[str, Any]) -> tuple[str, str, list[Element]] | None:
    """(verb, set name, elements) of an `add/delete element` command lvsmon wrote, or
    None for anything this module does not encode."""
    ((verb, body),) = command.items()
    element = body.get("element") if verb in ("add", "delete") else None
    if not isinstance(element, dict) or len(body) != 1:
        return None
    name = element["name"]
    if not (name in _SETS or name in _MAPS or name.startswith("sched_")):
        return None
    out: list[Element] = []
    for item in element["elem"]:
        if isinstance(item, list):
            key, data = item
            out.append((int(key).to_bytes(4, sys.byteorder), _value(data, name)))
        elif isinstance(item, int):
            out.append((item.to_bytes(4, sys.byteorder), None))
        else:
            return None
    return verb, name, out


_SETS = frozenset({"rs_in", "rs_out", "rs_conn", "vs_in", "vs_out"})
_MAPS = frozenset({"dest4", "dest6", "rsport", "owner"})


def encode(document: str) -> list[tuple[str, str, list[Element]]] | None:
    """The element operations of a transaction document, or None when it holds more
    (chains, rules, sets, verdict maps): then libnftables runs it."""
    ops = []
    for command in json.loads(document)["nftables"]:
        op = elements_of(command)
        if op is None:
            return None
        ops.append(op)
    return ops


def batch(table: str, ops: list[tuple[str, str, list[Element]]], first: int) -> bytes:
    """BEGIN, one NEWSETELEM/DELSETELEM per op (sequence numbers first, first + 1, ...,
    each acknowledged), END."""
    nfgen = struct.pack("=BBH", _NFPROTO_INET, 0, 0)
    parts = [
        NLMSGHDR.pack(NLMSGHDR.size + 4, _BATCH_BEGIN, NLM_F_REQUEST, first - 1, 0)
        + struct.pack("=BBH", socket.AF_UNSPEC, 0, socket.htons(_SUBSYS))
    ]
    for seq, (verb, name, elements) in enumerate(ops, start=first):
        items = b""
        for key, data in elements:
            body = _attr(_ELEM_KEY | _NESTED, _attr(_DATA_VALUE, key))
            if data is not None and verb == "add":
                body += _attr(_ELEM_DATA | _NESTED, _attr(_DATA_VALUE, data))
            items += _attr(_LIST_ELEM | _NESTED, body)
        payload = (
            nfgen
            + _attr(_LIST_TABLE, table.encode() + b"\0")
            + _attr(_LIST_SET, name.encode() + b"\0")
            + _attr(_LIST_ELEMENTS | _NESTED, items)
        )
        kind = _NEWSETELEM if verb == "add" else _DELSETELEM
        flags = NLM_F_REQUEST | NLM_F_ACK | (_NLM_F_CREATE if verb == "add" else 0)
        parts.append(NLMSGHDR.pack(NLMSGHDR.size + len(payload), kind, flags, seq, 0) + payload)
    end = first + len(ops)
    parts.append(
        NLMSGHDR.pack(NLMSGHDR.size + 4, _BATCH_END, NLM_F_REQUEST, end, 0)
        + struct.pack("=BBH", socket.AF_UNSPEC, 0, socket.htons(_SUBSYS))
    )
    return b"".join(parts)


class ElementWriter:
    """One netfilter netlink socket for element-only transactions."""

    def __init__(self, *, timeout: float = 5.0) -> None:
        self._sock = NetlinkSocket(NETLINK_NETFILTER, timeout=timeout, cap_ack=True)

    def close(self) -> None:
        self._sock.close()

    def run(self, table: str, ops: list[tuple[str, str, list[Element]]]) -> list[int]:
        """Send the batch; each op's errno (0: done). The kernel applies all or none."""
        first = self._sock.next_seq(len(ops) + 2) + 1
        data = batch(table, ops, first)
        return self._sock.acks(data, first, len(ops), f"update the elements of table {table}")
