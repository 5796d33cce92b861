"""A stand-in for the director's data plane: accept on every address, port PORT,
write NAME and close. (The full daemon + data plane integration is the lead's;
failover only needs "a connection to the VIP is answered by this director".)

    python listener.py NAME PORT
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import sys


def main() -> None:
    name, port = sys.argv[1].encode() + b"\n", int(sys.argv[2])
    sel = selectors.DefaultSelector()
    for family, host in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
        s = socket.socket(family, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        s.bind((host, port))
        s.listen(512)
        sel.register(s, selectors.EVENT_READ)
    print("listening", flush=True)
    while True:
        for key, _ in sel.select():
            listener = key.fileobj
            assert isinstance(listener, socket.socket)
            with contextlib.suppress(OSError):
                conn, _ = listener.accept()
                with conn:
                    conn.sendall(name)


if __name__ == "__main__":
    main()
