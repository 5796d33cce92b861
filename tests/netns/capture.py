"""Record VRRP adverts seen on an interface: kernel receive timestamps, source, priority.

    python capture.py IFACE SECONDS          -> JSON [[unix time, source, vrid, priority], ...]
    python capture.py IFACE SECONDS --stream -> one "unix time source vrid priority" line each

Run inside a namespace (`ip netns exec`). SO_TIMESTAMPNS: the kernel's arrival
time, so the capture's own scheduling does not add jitter.
"""

from __future__ import annotations

import ipaddress
import json
import select
import socket
import struct
import sys
import time

SO_TIMESTAMPNS = 35


def main() -> None:
    iface, seconds = sys.argv[1], float(sys.argv[2])
    stream = "--stream" in sys.argv[3:]
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, 112)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, iface.encode())
    mreq = struct.pack(
        "4s4si", ipaddress.IPv4Address("224.0.0.18").packed, b"\0" * 4, socket.if_nametoindex(iface)
    )
    s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
    s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    print("capturing", file=sys.stderr, flush=True)
    seen = []
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        if not select.select([s], [], [], left)[0]:
            continue
        data, anc, _, _ = s.recvmsg(2048, 64)
        stamp = time.time()
        for level, kind, value in anc:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                sec, nsec = struct.unpack("qq", value[:16])
                stamp = sec + nsec / 1e9
        ihl = (data[0] & 0xF) * 4
        src = str(ipaddress.IPv4Address(data[12:16]))
        seen.append([stamp, src, data[ihl + 1], data[ihl + 2]])
        if stream:
            print(*seen[-1], flush=True)
    if not stream:
        print(json.dumps(seen))


if __name__ == "__main__":
    main()
