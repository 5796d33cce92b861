"""Ports for test listeners, picked below the kernel's ephemeral range.

A port the kernel just handed out as free (`bind(0)`) is itself ephemeral: the
next socket that binds port 0 (a test backend, a proxy's upstream connection,
a probe) may get the very same port before the test's listener binds it. CI
lost a run to that (the VIP and a backend on one port). Ports below
`ip_local_port_range` are never handed out by the kernel, so a listener that
picks one there only races other explicit picks, and this module never returns
the same port twice in one process.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

_given: set[int] = set()
_rng = random.Random()


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port(kind: int = socket.SOCK_STREAM, host: str = "127.0.0.1") -> int:
    """A port nothing listens on now, below the ephemeral range."""
    return free_port_on(host, kind=kind)


def free_port_on(*hosts: str, kind: int = socket.SOCK_STREAM) -> int:
    """A port free on every one of `hosts` (default loopback), below the ephemeral range."""
    low = _ephemeral_low()
    for _ in range(2000):
        port = _rng.randrange(10000, low)
        if port in _given:
            continue
        try:
            for host in hosts or ("127.0.0.1",):
                family = socket.AF_INET6 if ":" in host else socket.AF_INET
                with socket.socket(family, kind) as s:
                    s.bind((host, port))
        except OSError:
            continue
        _given.add(port)
        return port
    raise AssertionError("no free port below the ephemeral range")
