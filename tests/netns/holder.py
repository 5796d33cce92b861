"""Long-lived client connections through a VIP, each echoing a line every PERIOD.

    python holder.py ADDRESS PORT COUNT PERIOD [LIFETIME]
    -> "<monotonic seconds> lost <n>"     connection n broke (then it is reopened)
       "<monotonic seconds> open <n>"     connection n is (re)established
       "<monotonic seconds> done <n>"     connection n lived LIFETIME seconds and was
                                          closed by us, cleanly (then it is reopened)

Run in the client's namespace. Stops on stdin EOF. bench/chaos.py counts the
`lost` lines inside each fault's window: connections established before a fault
and broken by it.
"""

from __future__ import annotations

import socket
import sys
import threading
import time


def main() -> None:
    address, port = sys.argv[1], int(sys.argv[2])
    count, period = int(sys.argv[3]), float(sys.argv[4])
    lifetime = float(sys.argv[5]) if len(sys.argv) > 5 else float("inf")
    stop = threading.Event()

    def stop_at_eof() -> None:
        sys.stdin.read()
        stop.set()

    threading.Thread(target=stop_at_eof, daemon=True).start()
    conns: list[socket.socket | None] = [None] * count
    opened = [0.0] * count
    while not stop.is_set():
        for n in range(count):
            s = conns[n]
            if s is None:
                try:
                    s = socket.create_connection((address, port), timeout=0.5)
                    if not s.recv(64):
                        raise ConnectionError("no greeting")
                except OSError:
                    continue
                conns[n], opened[n] = s, time.monotonic()
                print(f"{opened[n]:.6f} open {n}", flush=True)
                continue
            if time.monotonic() - opened[n] >= lifetime:
                try:  # a clean close: the server's EOF, then ours
                    s.shutdown(socket.SHUT_WR)
                    clean = s.recv(16) == b""
                except OSError:
                    clean = False
                s.close()
                conns[n] = None
                print(f"{time.monotonic():.6f} {'done' if clean else 'lost'} {n}", flush=True)
                continue
            try:
                s.sendall(b"ping\n")
                if s.recv(16) != b"ping\n":
                    raise ConnectionError("no echo")
            except OSError:
                s.close()
                conns[n] = None
                print(f"{time.monotonic():.6f} lost {n}", flush=True)
        time.sleep(period)


if __name__ == "__main__":
    main()
