"""Flood a link with protocol-112 packets from inside a namespace (a hostile host).

    python flood.py IFACE RATE SECONDS < packets.json    (inject.py's packet format)

Cycles through the packets at RATE per second for SECONDS (paced in 1 ms
slices, so the rate holds on a busy machine as long as one core can send it),
then prints `sent=N seconds=S`. Bounded in count and time; it stops by itself.
"""

from __future__ import annotations

import itertools
import json
import sys
import time

from tests.netns.inject import frames, raw_socket


def main() -> None:
    iface, rate, seconds = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
    templates = json.load(sys.stdin)
    wire = [(f, p["dst"]) for n, p in enumerate(templates) for f in frames(p, 0x6000 + n)]
    s = raw_socket(iface)
    sent, start = 0, time.monotonic()
    cycle = itertools.cycle(wire)
    while (elapsed := time.monotonic() - start) < seconds:
        due = int(elapsed * rate) - sent
        for _ in range(due):
            frame, dst = next(cycle)
            try:
                s.sendto(frame, (dst, 0))
            except OSError:  # ENOBUFS: the link is full; that counts as not sent
                continue
            sent += 1
        time.sleep(0.001)
    print(f"sent={sent} seconds={time.monotonic() - start:.3f}", flush=True)


if __name__ == "__main__":
    main()
