"""The IPVS wire codec, checked against pyroute2's own IPVS message definitions.

The real kernel is exercised in tests/vm/guest/test_ipvs_*.py; here every message
lvsmon builds is decoded by pyroute2 (the reference netlink implementation) and
every dump lvsmon parses is laid out the way the kernel's ip_vs_genl_fill_*
write it.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from typing import Any

import pytest
from pyroute2.netlink.generic.ipvs import ipvsmsg

from lvsmon import netlink
from lvsmon.dataplane import ipvs_codec as c
from lvsmon.dataplane.base import Counters, DestStats
from lvsmon.dataplane.ipvs import _dest_stats, _real_server
from lvsmon.model import DestKey, Forwarding, Protocol, RealServer, ServiceKey, VirtualServer

ip = ipaddress.ip_address


def decoded(data: bytes) -> Any:
    msg = ipvsmsg(data)
    msg.decode()
    return msg


def svc_attrs(data: bytes) -> dict[str, Any]:
    return dict(decoded(data).get_attr("IPVS_CMD_ATTR_SERVICE")["attrs"])


def test_a_persistent_ipv4_service_as_pyroute2_reads_it() -> None:
    vs = VirtualServer(
        "web",
        ip("192.0.2.10"),
        80,
        scheduler="wlc",
        persistence_timeout=300,
        persistence_netmask=24,
    )
    attrs = svc_attrs(c.message(0x1F, c.CMD_NEW_SERVICE, 5, 1, c.service_attrs(vs)))
    assert attrs["IPVS_SVC_ATTR_AF"] == socket.AF_INET
    assert attrs["IPVS_SVC_ATTR_PROTOCOL"] == socket.IPPROTO_TCP
    assert attrs["IPVS_SVC_ATTR_ADDR"] == "192.0.2.10"
    assert attrs["IPVS_SVC_ATTR_PORT"] == 80
    assert attrs["IPVS_SVC_ATTR_SCHED_NAME"] == "wlc"
    assert attrs["IPVS_SVC_ATTR_TIMEOUT"] == 300
    assert attrs["IPVS_SVC_ATTR_NETMASK"] == "255.255.255.0"
    assert attrs["IPVS_SVC_ATTR_FLAGS"] == {"flags": c.F_PERSISTENT, "mask": 0xFFFFFFFF}


def test_ipv6_netmask_is_the_prefix_length_in_host_order() -> None:
    """pyroute2 needs netmask="128.0.0.0" for /128: the same four bytes."""
    vs = VirtualServer(
        "v6",
        ip("2001:db8::1"),
        443,
        scheduler="sh",
        scheduler_flags=frozenset({"sh-port", "sh-fallback"}),
        persistence_timeout=60,
        persistence_netmask=64,
    )
    attrs = svc_attrs(c.message(0x1F, c.CMD_SET_SERVICE, 5, 1, c.service_attrs(vs)))
    assert attrs["IPVS_SVC_ATTR_NETMASK"] == "64.0.0.0"
    assert attrs["IPVS_SVC_ATTR_AF"] == socket.AF_INET6
    assert attrs["IPVS_SVC_ATTR_FLAGS"]["flags"] == c.F_PERSISTENT | c.F_SCHED1 | c.F_SCHED2
    assert c.netmask_prefix(6, c.netmask_value(6, 64)) == 64
    assert c.netmask_prefix(4, c.netmask_value(4, 22)) == 22


def test_fwmark_services_carry_a_netmask_and_no_address() -> None:
    vs = VirtualServer("mark", None, 0, fwmark=42, scheduler="rr")
    attrs = svc_attrs(c.message(0x1F, c.CMD_NEW_SERVICE, 5, 1, c.service_attrs(vs)))
    assert attrs["IPVS_SVC_ATTR_FWMARK"] == 42
    assert "IPVS_SVC_ATTR_ADDR" not in attrs and "IPVS_SVC_ATTR_PORT" not in attrs
    assert attrs["IPVS_SVC_ATTR_NETMASK"] == "255.255.255.255"  # EINVAL without it
    six = VirtualServer("mark6", ip("2001:db8::1"), 0, fwmark=42, persistence_netmask=128)
    attrs = svc_attrs(c.message(0x1F, c.CMD_NEW_SERVICE, 5, 1, c.service_attrs(six)))
    assert attrs["IPVS_SVC_ATTR_AF"] == socket.AF_INET6
    assert attrs["IPVS_SVC_ATTR_NETMASK"] == "128.0.0.0"


@pytest.mark.parametrize(
    "forwarding,code", [(Forwarding.NAT, 0), (Forwarding.TUNNEL, 2), (Forwarding.DR, 3)]
)
def test_a_real_server_always_carries_its_forwarding_method(
    forwarding: Forwarding, code: int
) -> None:
    rs = RealServer(ip("10.0.0.2"), 8080, 7, forwarding, 100, 10)
    key = ServiceKey("udp", "192.0.2.10", 53)
    attrs = c.identity_attrs(key, 4) + c.dest_attrs(rs)
    msg = decoded(c.message(0x1F, c.CMD_SET_DEST, 5, 1, attrs))
    svc = dict(msg.get_attr("IPVS_CMD_ATTR_SERVICE")["attrs"])
    assert svc == {
        "IPVS_SVC_ATTR_AF": socket.AF_INET,
        "IPVS_SVC_ATTR_PROTOCOL": 17,
        "IPVS_SVC_ATTR_ADDR": "192.0.2.10",
        "IPVS_SVC_ATTR_PORT": 53,
    }
    dest = dict(msg.get_attr("IPVS_CMD_ATTR_DEST")["attrs"])
    assert dest == {
        "IPVS_DEST_ATTR_ADDR": "10.0.0.2",
        "IPVS_DEST_ATTR_PORT": 8080,
        "IPVS_DEST_ATTR_ADDR_FAMILY": socket.AF_INET,
        "IPVS_DEST_ATTR_FWD_METHOD": code,
        "IPVS_DEST_ATTR_WEIGHT": 7,
        "IPVS_DEST_ATTR_U_THRESH": 100,
        "IPVS_DEST_ATTR_L_THRESH": 10,
    }


def test_deletes_name_the_entry_only() -> None:
    key = ServiceKey("tcp", "", 0, 9)
    attrs = c.identity_attrs(key, 4) + c.dest_key_attrs("10.0.0.2", 0)
    msg = decoded(c.message(0x1F, c.CMD_DEL_DEST, 5, 1, attrs))
    assert dict(msg.get_attr("IPVS_CMD_ATTR_SERVICE")["attrs"]) == {
        "IPVS_SVC_ATTR_AF": socket.AF_INET,
        "IPVS_SVC_ATTR_FWMARK": 9,
    }
    dest = dict(msg.get_attr("IPVS_CMD_ATTR_DEST")["attrs"])
    assert set(dest) == {"IPVS_DEST_ATTR_ADDR", "IPVS_DEST_ATTR_PORT"}


def test_scheduler_flag_names_round_trip() -> None:
    for sched in ("sh", "mh"):
        names = frozenset({f"{sched}-port", f"{sched}-fallback"})
        bits = c.scheduler_flag_bits(sched, names)
        assert bits == c.F_SCHED1 | c.F_SCHED2
        assert c.scheduler_flag_names(sched, bits) == names
    # on a scheduler without named flags the bits keep ipvsadm's neutral spelling
    assert c.scheduler_flag_names("wlc", c.F_SCHED3) == {"flag-3"}
    with pytest.raises(ValueError):
        c.scheduler_flag_bits("wlc", frozenset({"sh-port"}))


def test_persistence_rounds_up_to_whole_seconds() -> None:
    assert [c.persistence_seconds(t) for t in (0, 0.2, 1.0, 1.5, 300)] == [0, 1, 1, 2, 300]


# --- dumps, laid out as the kernel writes them (net/netfilter/ipvs/ip_vs_ctl.c) ---


def _stats(kind: int, wide: bool, values: tuple[int, ...]) -> bytes:
    fmt = ["=Q"] * 10 if wide else ["=I", "=I", "=I", "=Q", "=Q", "=I", "=I", "=I", "=I", "=I"]
    pairs = enumerate(zip(fmt, values, strict=True))
    body = b"".join(c.nla(i + 1, struct.pack(f, v)) for i, (f, v) in pairs)
    return c.nla(kind, body)


def kernel_dest(
    addr: str, port: int, weight: int, fwd: int = 0, conns: int = 0, seq: int = 9
) -> bytes:
    a = ip(addr)
    raw = a.packed.ljust(16, b"\0")
    stats = (conns, conns * 5, conns * 4, conns * 300, conns * 900, 0, 0, 0, 0, 0)
    inner = (
        c.nla(c.DEST_ADDR, raw)
        + c.be16(c.DEST_PORT, port)
        + c.u32(c.DEST_FWD_METHOD, fwd)
        + c.u32(c.DEST_WEIGHT, weight)
        + c.nla(13, b"\0")
        + c.be16(14, 0)
        + c.u16(15, 0)
        + c.u32(c.DEST_U_THRESH, 50)
        + c.u32(c.DEST_L_THRESH, 5)
        + c.u32(c.DEST_ACTIVE_CONNS, 2)
        + c.u32(c.DEST_INACT_CONNS, 3)
        + c.u32(c.DEST_PERSIST_CONNS, 1)
        + c.u16(c.DEST_ADDR_FAMILY, socket.AF_INET6 if a.version == 6 else socket.AF_INET)
        + _stats(c.DEST_STATS, False, stats)
        + _stats(c.DEST_STATS64, True, stats)
    )
    return c.message(0x1F, c.CMD_NEW_DEST, netlink.NLM_F_MULTI, seq, c.nla(c.ATTR_DEST, inner))


DONE = struct.pack("=IHHIIi", 20, netlink.NLMSG_DONE, netlink.NLM_F_MULTI, 9, 0, 0)


def test_dest_dump_rows_generic_then_fast() -> None:
    decoder = c.DestDecoder()
    first = b"".join(kernel_dest(f"10.0.0.{i}", 80, i, conns=i) for i in range(1, 4)) + DONE
    rows = decoder.decode(first)  # generic walk (a DONE trails), learns the layout
    assert len(rows) == 3
    assert decoder._layouts, "the kernel layout was not learned"
    again = b"".join(kernel_dest(f"10.0.0.{i}", 80, i, conns=i) for i in range(1, 4))
    assert decoder.decode(again) == rows  # fast path: whole datagram at once
    row = rows[1]
    assert row[0][:4] == ip("10.0.0.2").packed and row[2] == struct.pack("!H", 80)
    assert row[3:10] == (0, 2, 50, 5, 2, 3, 1)
    assert row[10:] == (2, 10, 8, 600, 1800)


def test_a_record_that_differs_takes_the_generic_walk() -> None:
    decoder = c.DestDecoder()
    decoder.decode(kernel_dest("10.0.0.1", 80, 1))
    odd = bytearray(kernel_dest("10.0.0.2", 81, 2, conns=4))
    # same length, but the weight attribute now claims to be another type
    pos = odd.index(c.NLAHDR.pack(8, c.DEST_WEIGHT))
    odd[pos : pos + 4] = c.NLAHDR.pack(8, 30)
    (row,) = decoder.decode(bytes(odd))
    assert row[4] == 0  # no weight attribute any more: the fast path was not fooled
    assert row[10] == 4


def test_ipv6_real_servers_decode() -> None:
    (row,) = c.DestDecoder().decode(kernel_dest("2001:db8::7", 443, 9, fwd=3))
    rs, key = _real_server(row, 6)
    assert rs == RealServer(ip("2001:db8::7"), 443, 9, Forwarding.DR, 50, 5)
    assert key == DestKey("2001:db8::7", 443)


def test_fast_snapshot_objects_equal_the_constructed_ones() -> None:
    (row,) = c.DestDecoder().decode(kernel_dest("10.0.0.5", 80, 3, conns=7))
    key = DestKey("10.0.0.5", 80)
    fast = _dest_stats(key, row)
    assert fast == DestStats(key, 3, 2, 3, 1, Counters(7, 2100, 6300, 35, 28))
    assert hash(fast.counters) == hash(Counters(7, 2100, 6300, 35, 28))


def kernel_service(
    key: ServiceKey, family: int, sched: str, flags: int, timeout: int, netmask: bytes
) -> bytes:
    af = socket.AF_INET6 if family == 6 else socket.AF_INET
    ident = c.u16(c.SVC_AF, af)
    if key.fwmark:
        ident += c.u32(c.SVC_FWMARK, key.fwmark)
    else:
        raw = ip(key.address).packed.ljust(16, b"\0")
        ident += (
            c.u16(c.SVC_PROTOCOL, c.PROTO_NUMBER[key.protocol])
            + c.nla(c.SVC_ADDR, raw)
            + c.be16(c.SVC_PORT, key.port)
        )
    stats = (5, 10, 9, 1000, 2000, 0, 0, 0, 0, 0)
    inner = (
        ident
        + c.asciiz(c.SVC_SCHED_NAME, sched)
        + c.nla(c.SVC_FLAGS, struct.pack("=II", flags | c.F_HASHED, 0xFFFFFFFF))
        + c.u32(c.SVC_TIMEOUT, timeout)
        + c.nla(c.SVC_NETMASK, netmask)
        + _stats(c.SVC_STATS, False, stats)
        + _stats(c.SVC_STATS64, True, stats)
    )
    return c.message(0x1F, c.CMD_NEW_SERVICE, netlink.NLM_F_MULTI, 3, c.nla(c.ATTR_SERVICE, inner))


def test_service_dump_parses_to_the_model_identity() -> None:
    key = ServiceKey("sctp", "192.0.2.10", 3868)
    data = kernel_service(key, 4, "mh", c.F_SCHED2 | c.F_PERSISTENT, 60, c.netmask_value(4, 24))
    ks = c.parse_service(data, c.HEADERS, len(data))
    assert ks is not None
    assert ks.key() == key and ks.scheduler == "mh" and ks.timeout == 60 and ks.netmask == 24
    assert ks.flags & c.F_SCHED2 and ks.stats == c.Stats(5, 10, 9, 1000, 2000)
    # the identity it carries names the same service for dest dumps and deletes
    assert ks.identity == c.identity_attrs(key, 4)
    mark = ServiceKey("udp", "", 0, 77)
    data = kernel_service(mark, 6, "rr", 0, 0, c.netmask_value(6, 128))
    ks = c.parse_service(data, c.HEADERS, len(data))
    assert ks is not None and ks.fwmark == 77 and ks.family == 6 and ks.netmask == 128
    assert ks.key("udp") == mark and ks.identity == c.identity_attrs(mark, 6)


def test_vs_protocols_are_the_kernel_numbers() -> None:
    assert {p.value: c.PROTO_NUMBER[p.value] for p in Protocol} == {
        "tcp": 6,
        "udp": 17,
        "sctp": 132,
    }
