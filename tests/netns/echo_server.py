"""A real server for long-lived connections: greets with NAME, then echoes until EOF.

    python echo_server.py NAME PORT

bench/chaos.py holds connections through the director to servers like this one, so
a connection that a fault breaks is seen (its echo stops)."""

from __future__ import annotations

import socket
import sys
import threading


def serve(conn: socket.socket, name: bytes) -> None:
    with conn:
        try:
            conn.sendall(name)
            while data := conn.recv(4096):
                conn.sendall(data)
        except OSError:
            pass


def main() -> None:
    name, port = sys.argv[1].encode() + b"\n", int(sys.argv[2])
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port))
    s.listen(512)
    print("listening", flush=True)
    while True:
        conn, _ = s.accept()
        threading.Thread(target=serve, args=(conn, name), daemon=True).start()


if __name__ == "__main__":
    main()
