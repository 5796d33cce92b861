"""Send hand-made IPv4 packets (protocol 112) from inside a namespace: a rogue peer.

    python inject.py IFACE GAP < packets.json     [{"src", "dst", "ttl", "payload": hex}]

IP_HDRINCL, so the test controls the TTL and the source; the kernel fills in
the IP checksum and total length. Packets go out GAP seconds apart.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import struct
import sys
import time


def main() -> None:
    iface, gap = sys.argv[1], float(sys.argv[2])
    packets = json.load(sys.stdin)
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, iface.encode())
    for p in packets:
        payload = bytes.fromhex(p["payload"])
        src, dst = ipaddress.IPv4Address(p["src"]), ipaddress.IPv4Address(p["dst"])
        header = struct.pack(
            "!BBHHHBBH4s4s",
            0x45,
            0,
            20 + len(payload),
            0,
            0,
            p["ttl"],
            112,
            0,
            src.packed,
            dst.packed,
        )
        s.sendto(header + payload, (str(dst), 0))
        time.sleep(gap)


if __name__ == "__main__":
    main()
