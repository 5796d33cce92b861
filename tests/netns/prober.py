"""Client connection attempts against a VIP, one line per attempt on stdout.

    python prober.py ADDRESS PORT INTERVAL TIMEOUT
    -> "<monotonic seconds> ok <banner>" | "<monotonic seconds> fail <reason>"

Run inside the client's namespace (`ip netns exec`). CLOCK_MONOTONIC is
system-wide, so the times compare with the test's own time.monotonic().
An attempt is a TCP connect plus reading the listener's banner (the name of
the director that answered); one starts every INTERVAL, or right after the
previous one when it took longer. Stops on stdin EOF or SIGTERM.
"""

from __future__ import annotations

import socket
import sys
import threading
import time


def attempt(address: str, port: int, timeout: float) -> str:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        try:
            s.connect((address, port))
            banner = s.recv(64).decode(errors="replace").strip()
        except OSError as exc:
            return f"fail {type(exc).__name__}"
    return f"ok {banner}" if banner else "fail empty"


def main() -> None:
    address, port = sys.argv[1], int(sys.argv[2])
    interval, timeout = float(sys.argv[3]), float(sys.argv[4])
    stop = threading.Event()

    def stop_at_eof() -> None:
        sys.stdin.read()
        stop.set()

    threading.Thread(target=stop_at_eof, daemon=True).start()
    next_at = time.monotonic()
    while not stop.is_set():
        started = time.monotonic()
        result = attempt(address, port, timeout)
        print(f"{started:.6f} {result}", flush=True)
        next_at = max(next_at + interval, time.monotonic())
        time.sleep(max(0.0, next_at - time.monotonic()))


if __name__ == "__main__":
    main()
