"""Just enough of the DNS wire format (RFC 1035) for a health check. Pure.

Hand-written rather than dnspython: a query is 20 lines and reading the
answer section (with name compression) 60 more; it keeps the daemon's
dependencies as they are. The tests' DNS responder is dnspython, so this
codec is checked against an independent implementation.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

TYPES = {
    "A": 1,
    "NS": 2,
    "CNAME": 5,
    "SOA": 6,
    "PTR": 12,
    "MX": 15,
    "TXT": 16,
    "AAAA": 28,
    "SRV": 33,
    "ANY": 255,
}
RCODES = {"NOERROR": 0, "FORMERR": 1, "SERVFAIL": 2, "NXDOMAIN": 3, "NOTIMP": 4, "REFUSED": 5}
RCODE_NAMES = {v: k for k, v in RCODES.items()}
CLASS_IN = 1
_HEADER = struct.Struct("!HHHHHH")


def encode_name(name: str) -> bytes:
    """'www.example.com' (trailing dot optional) -> wire labels. Raises ValueError."""
    text = name.rstrip(".")
    if text == "":
        return b"\x00" if name == "." else _bad(name)
    out = bytearray()
    for label in text.split("."):
        raw = label.encode("ascii")
        if not 1 <= len(raw) <= 63 or any(c <= 32 or c == 127 for c in raw):
            _bad(name)
        out += bytes([len(raw)]) + raw
    if len(out) + 1 > 255:
        _bad(name)
    return bytes(out + b"\x00")


def _bad(name: str) -> bytes:
    raise ValueError(name)


def build_query(qid: int, name: str, qtype: str, recursion_desired: bool = False) -> bytes:
    flags = 0x0100 if recursion_desired else 0
    return (
        _HEADER.pack(qid, flags, 1, 0, 0, 0)
        + encode_name(name)
        + struct.pack("!HH", TYPES[qtype], CLASS_IN)
    )


@dataclass(frozen=True, slots=True)
class Response:
    rcode: int
    truncated: bool
    answers: tuple[str, ...]  # rdata as text, names lower-case with a trailing dot

    @property
    def rcode_name(self) -> str:
        return RCODE_NAMES.get(self.rcode, str(self.rcode))


def parse_response(data: bytes, qid: int) -> Response:
    """Raises ValueError for anything that is not a response to query `qid`."""
    if len(data) < _HEADER.size:
        raise ValueError("short message")
    rid, flags, qdcount, ancount, _, _ = _HEADER.unpack_from(data)
    if rid != qid or not flags & 0x8000:
        raise ValueError("not a response to our query")
    pos = _HEADER.size
    for _ in range(qdcount):
        _, pos = _read_name(data, pos)
        pos += 4
    answers = []
    for _ in range(ancount):
        _, pos = _read_name(data, pos)
        if pos + 10 > len(data):
            raise ValueError("truncated record")
        rtype, _, _, rdlen = struct.unpack_from("!HHIH", data, pos)
        pos += 10
        if pos + rdlen > len(data):
            raise ValueError("truncated record")
        answers.append(_rdata_text(data, pos, rtype, rdlen))
        pos += rdlen
    return Response(flags & 0xF, bool(flags & 0x0200), tuple(answers))


def _read_name(data: bytes, pos: int) -> tuple[str, int]:
    labels: list[str] = []
    end = -1
    for _ in range(128):  # bounds compression loops
        if pos >= len(data):
            raise ValueError("truncated name")
        length = data[pos]
        if length & 0xC0 == 0xC0:
            if pos + 1 >= len(data):
                raise ValueError("truncated pointer")
            if end < 0:
                end = pos + 2
            pos = ((length & 0x3F) << 8) | data[pos + 1]
            continue
        if length == 0:
            return ".".join(labels).lower() + ".", end if end >= 0 else pos + 1
        labels.append(data[pos + 1 : pos + 1 + length].decode("ascii", "replace"))
        pos += 1 + length
    raise ValueError("name compression loop")


def _rdata_text(data: bytes, pos: int, rtype: int, rdlen: int) -> str:
    rdata = data[pos : pos + rdlen]
    if rtype == 1 and rdlen == 4:
        return str(ipaddress.IPv4Address(rdata))
    if rtype == 28 and rdlen == 16:
        return str(ipaddress.IPv6Address(rdata))
    if rtype in (2, 5, 12):
        return _read_name(data, pos)[0]
    if rtype == 15 and rdlen >= 3:
        return f"{struct.unpack_from('!H', data, pos)[0]} {_read_name(data, pos + 2)[0]}"
    if rtype == 33 and rdlen >= 7:
        prio, weight, port = struct.unpack_from("!HHH", data, pos)
        return f"{prio} {weight} {port} {_read_name(data, pos + 6)[0]}"
    if rtype == 16:
        parts, i = [], 0
        while i < len(rdata):
            parts.append(rdata[i + 1 : i + 1 + rdata[i]].decode("utf-8", "replace"))
            i += 1 + rdata[i]
        return "".join(parts)
    return rdata.hex()


def normalize(value: str, qtype: str) -> str:
    """An expected answer as the parser renders one: addresses canonical, names
    lower-case with a trailing dot; TXT as written."""
    text = value.strip()
    if qtype == "TXT":
        return value
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        pass
    words = text.lower().split()
    if words and not words[-1].endswith("."):
        words[-1] += "."
    return " ".join(words)
