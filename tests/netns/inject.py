"""Send hand-made IPv4 packets (protocol 112) from inside a namespace: a rogue peer.

    python inject.py IFACE GAP < packets.json     [{"src", "dst", "ttl", "payload": hex}]

IP_HDRINCL, so the test controls the TTL and the source; the kernel fills in
the IP checksum and total length. Packets go out GAP seconds apart. A payload
larger than one frame goes out as IP fragments (the receiver reassembles it:
an oversized advert). `flood.py` sends the same packets at a rate.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import struct
import sys
import time
from typing import Any

FRAGMENT = 1400  # payload bytes per fragment (a multiple of 8), under the veth MTU


def frames(p: dict[str, Any], ident: int) -> list[bytes]:
    """One packet as IPv4 frames: whole, or fragments sharing `ident`."""
    payload = bytes.fromhex(p["payload"])
    src, dst = ipaddress.IPv4Address(p["src"]), ipaddress.IPv4Address(p["dst"])
    out = []
    for at in range(0, max(len(payload), 1), FRAGMENT):
        chunk = payload[at : at + FRAGMENT]
        more = at + FRAGMENT < len(payload)
        flags = (0x2000 if more else 0) | (at // 8)
        header = struct.pack(
            "!BBHHHBBH4s4s",
            0x45,
            0,
            20 + len(chunk),
            ident,
            flags,
            p["ttl"],
            112,
            0,
            src.packed,
            dst.packed,
        )
        out.append(header + chunk)
    return out


def raw_socket(iface: str) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, iface.encode())
    return s


def main() -> None:
    iface, gap = sys.argv[1], float(sys.argv[2])
    packets = json.load(sys.stdin)
    s = raw_socket(iface)
    for n, p in enumerate(packets):
        for frame in frames(p, 0x4000 + n):
            s.sendto(frame, (p["dst"], 0))
        time.sleep(gap)


if __name__ == "__main__":
    main()
