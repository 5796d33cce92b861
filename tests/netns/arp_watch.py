"""Print every ARP frame an interface receives, until stdin closes (root, in a namespace).

    python arp_watch.py IFACE   -> "watching", then per frame:
                                   "<monotonic> <op> <sender MAC> <sender IP> <target IP>"

A gratuitous ARP has sender IP == target IP. Seen from a real server's
namespace, it proves that a VRRP takeover told the LAN, rather than the
real server asking again (tests/netns/test_bgp_fleet.py).
"""

from __future__ import annotations

import select
import socket
import sys
import time

ETH_P_ARP = 0x0806


def _mac(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


def main() -> None:
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP))
    s.bind((sys.argv[1], ETH_P_ARP))
    print("watching", flush=True)
    while True:
        ready = select.select([s, sys.stdin], [], [])[0]
        if sys.stdin in ready and not sys.stdin.readline():
            return  # the test closed our stdin
        if s not in ready:
            continue
        frame = s.recv(128)
        arp = frame[14:]
        if len(arp) < 28:
            continue
        op = int.from_bytes(arp[6:8], "big")
        sender, target = socket.inet_ntoa(arp[14:18]), socket.inet_ntoa(arp[24:28])
        print(f"{time.monotonic():.6f} {op} {_mac(arp[8:14])} {sender} {target}", flush=True)


if __name__ == "__main__":
    main()
