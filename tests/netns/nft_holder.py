"""Long-lived connections for the nft tier: open them, then talk through them on demand.

    python nft_holder.py ADDRESS PORT COUNT

Opens COUNT TCP connections and prints one JSON line: the real server behind each
(its banner). Then, per stdin line: "ping" sends a line through every connection
and prints a JSON line of which ones echoed it back; EOF closes them all.
"""

from __future__ import annotations

import contextlib
import json
import socket
import sys


def main() -> None:
    address, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    conns = []
    names = []
    for _ in range(count):
        s = socket.create_connection((address, port), timeout=3)
        names.append(s.recv(64).decode().strip())
        conns.append(s)
    print(json.dumps(names), flush=True)
    for line in sys.stdin:
        if line.strip() != "ping":
            continue
        ok = []
        for i, s in enumerate(conns):
            with contextlib.suppress(OSError):
                s.sendall(f"ping {i}\n".encode())
                ok.append(s.recv(64) == f"ping {i}\n".encode())
                continue
            ok.append(False)
        print(json.dumps(ok), flush=True)
    for s in conns:
        s.close()


if __name__ == "__main__":
    main()
