"""A real server for the nft tier: TCP and UDP on every address, several ports.

    python nft_server.py NAME PORT [PORT ...]

TCP: writes "NAME\\n" on accept, then echoes whatever the client sends until it
closes (long-lived connections, byte counts). UDP: answers every datagram with
"NAME\\n". Prints "listening" once every socket is bound.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import sys


def main() -> None:
    banner, ports = sys.argv[1].encode() + b"\n", [int(p) for p in sys.argv[2:]]
    sel = selectors.DefaultSelector()
    for port in ports:
        for family, host in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
            for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
                s = socket.socket(family, kind)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                s.bind((host, port))
                if kind == socket.SOCK_STREAM:
                    s.listen(1024)
                s.setblocking(False)
                sel.register(
                    s, selectors.EVENT_READ, "listen" if kind == socket.SOCK_STREAM else "udp"
                )
    print("listening", flush=True)
    while True:
        for key, _ in sel.select():
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            with contextlib.suppress(OSError):
                if key.data == "listen":
                    conn, _ = sock.accept()
                    conn.setblocking(False)
                    conn.sendall(banner)
                    sel.register(conn, selectors.EVENT_READ, "conn")
                elif key.data == "udp":
                    _, peer = sock.recvfrom(2048)
                    sock.sendto(banner, peer)
                else:
                    data = b""
                    with contextlib.suppress(BlockingIOError):
                        data = sock.recv(65536)
                    if data:
                        sock.sendall(data)
                        continue
                    sel.unregister(sock)
                    sock.close()


if __name__ == "__main__":
    main()
