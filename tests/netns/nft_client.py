"""The nft tier's client: makes the connections it is told to, says who answered.

    python nft_client.py < jobs.json > results.json

Each job is {"dst", "port", "proto": "tcp"|"udp", "src": optional source address,
"send": optional byte count}; each result is {"server": NAME, "sport": source
port used} or {"error": reason}. A TCP job connects, reads the real server's
banner, sends `send` bytes and reads their echo, and closes; a UDP job sends one
datagram from a fresh socket and reads the answer.
"""

from __future__ import annotations

import json
import socket
import sys
from typing import Any


def run(job: dict[str, Any], timeout: float = 2.0) -> dict[str, Any]:
    dst, port = job["dst"], int(job["port"])
    family = socket.AF_INET6 if ":" in dst else socket.AF_INET
    kind = socket.SOCK_DGRAM if job.get("proto") == "udp" else socket.SOCK_STREAM
    with socket.socket(family, kind) as s:
        s.settimeout(timeout)
        try:
            if job.get("src"):
                s.bind((job["src"], 0))
            if kind == socket.SOCK_DGRAM:
                s.sendto(b"x", (dst, port))
                data = s.recv(64)
            else:
                s.connect((dst, port))
                data = s.recv(64)
                _echo(s, int(job.get("send", 0)))
            sport = s.getsockname()[1]
        except OSError as exc:
            return {"error": type(exc).__name__}
    name = data.decode(errors="replace").strip()
    return {"server": name, "sport": sport} if name else {"error": "empty"}


def _echo(s: socket.socket, size: int) -> None:
    if not size:
        return
    s.sendall(b"x" * size)
    got = 0
    while got < size:
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionResetError("echo cut short")
        got += len(chunk)


def main() -> None:
    jobs = json.load(sys.stdin)
    json.dump([run(job) for job in jobs], sys.stdout)


if __name__ == "__main__":
    main()
