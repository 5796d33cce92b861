"""In the guest: the BGP fleet of tests/netns/fleet.py with real IPVS directors.

Three directors, each lvsmon (`dataplane = "ipvs"`, direct routing, `mh` with
mh-port and mh-fallback, `sloppy_tcp`) + BIRD, behind the BIRD router's ECMP
route; no flow pinning: the router re-hashes freely. Real servers hold the VIP
on lo (LVS-DR) and answer clients through the router. Long-lived connections
(greeting, then echo) are opened from the client; one director dies (lvsmon
and BIRD killed, its uplink cut); after the router has converged every
connection must still echo. Flows that were on the dead director, and those
ECMP re-hashed between the survivors, reach a director that never saw their
SYN: sloppy_tcp lets IPVS take them mid-stream, mh sends them to the same real
server, which still holds the TCP connection.

`python -m tests.vm.guest.bgp_fleet` prints `flows_survived_fraction=` (bench/scaleout.py).
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial

from tests.netns.fleet import (
    HERE,
    PORT,
    REAL_SERVERS,
    VIP,
    Fleet,
)
from tests.netns.topology import PYTHON, Proc, wait_for
from tests.vm.guest.ipvs_topology import greeting, in_netns, rst_close, sh

CONNECTIONS = 200
IPVS_DAEMON = """\
dataplane = "ipvs"
[daemon.ipvs]
state_file = "{state}"
flush_on_stop = false
[daemon.ipvs.sysctl]
sloppy_tcp = true
"""


@dataclass
class Outcome:
    connections: int
    on_dead: int  # established through the director that died
    survived: int
    survived_on_dead: int

    @property
    def fraction(self) -> float:
        return self.survived / self.connections


def _real_servers(fleet: Fleet) -> None:
    for rs in REAL_SERVERS:
        fleet.ip(rs, "addr", "add", f"{VIP}/32", "dev", "lo")
        for key, value in (("all.arp_ignore", 1), ("all.arp_announce", 2)):
            fleet.sysctl(rs, f"net.ipv4.conf.{key}={value}")
        argv = [PYTHON, str(HERE / "fleet_apps.py"), "echo", rs, str(PORT)]
        proc = fleet.spawn(rs, "echo", argv)
        wait_for(f"{rs} listening", partial(_listening, proc), 60)


def _listening(proc: Proc) -> bool:
    return "listening" in proc.output()


def _connect(fleet: Fleet, sport: int) -> tuple[str, socket.socket]:
    def make() -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("0.0.0.0", sport))
        return s

    sock = in_netns(fleet.ns("client"), make)
    sock.settimeout(30)
    sock.connect((VIP, PORT))
    return greeting(sock, f"source port {sport}"), sock


def _echoes(sock: socket.socket, payload: bytes, timeout: float) -> bool:
    sock.settimeout(timeout)
    try:
        sock.sendall(payload)
        got = b""
        while len(got) < len(payload):
            chunk = sock.recv(4096)
            if not chunk:
                return False
            got += chunk
    except OSError:
        return False
    return got == payload


def _ipvs_clients(fleet: Fleet, director: str) -> set[int]:
    """Client source ports in the director's IPVS connection table."""
    table = _run_in(fleet, director, ["ipvsadm", "-Lnc"])
    ports = set()
    for line in table.splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[0] == "TCP" and parts[2].startswith("ESTABLISHED"):
            ports.add(int(parts[3].rsplit(":", 1)[1]))
    return ports


def _run_in(fleet: Fleet, host: str, argv: list[str]) -> str:
    from tests.netns.topology import run

    return run(*fleet.exec_argv(host, argv), check=False)


@contextlib.contextmanager
def ipvs_fleet() -> Iterator[Fleet]:
    sh("modprobe", "tun")  # built into the host's kernel, a module in Debian's
    # TCG emulation on one CPU: BFD at 100 ms would flap while three daemons start
    with Fleet(pin_flows=False, router_on_lan=True, bfd_interval_ms=1000, hold_time=9) as fleet:
        _real_servers(fleet)
        for d in fleet.directors:
            daemon = IPVS_DAEMON.format(state=fleet.workdir / f"{d.name}.ipvs.json")
            fleet.lvsmon(d, fleet.director_config(d, daemon=daemon, forwarding="dr"))
        fleet.wait_next_hops({d.name for d in fleet.directors}, timeout=300)
        yield fleet


def kill_a_director(fleet: Fleet, connections: int = CONNECTIONS) -> Outcome:
    socks: dict[int, tuple[str, socket.socket]] = {}
    try:
        for i in range(connections):
            sport = 40000 + i
            socks[sport] = _connect(fleet, sport)
        for sport, (_, sock) in socks.items():  # every connection works before the kill
            assert _echoes(sock, b"before %d\n" % sport, 30), f"source port {sport} before"
        dead = fleet.directors[1]
        on_dead = _ipvs_clients(fleet, dead.name) & socks.keys()
        dead.kill9()
        assert dead.bird is not None
        dead.bird.popen.kill()
        fleet.ip("router", "link", "set", f"r{dead.name}", "down")  # its cable cut
        survivors = {d.name for d in fleet.directors if d is not dead}
        fleet.wait_next_hops(survivors, timeout=120)
        survived = {
            sport for sport, (_, sock) in socks.items() if _echoes(sock, b"after %d\n" % sport, 30)
        }
        return Outcome(len(socks), len(on_dead), len(survived), len(on_dead & survived))
    finally:
        for _, sock in socks.values():
            rst_close(sock)


def main() -> int:
    started = time.monotonic()
    with ipvs_fleet() as fleet:
        up = time.monotonic() - started
        outcome = kill_a_director(fleet)
    print(
        f"fleet up in {up:.0f}s; {outcome.connections} connections, {outcome.on_dead} through "
        f"the director that died; {outcome.survived} survived ({outcome.survived_on_dead} of "
        f"those {outcome.on_dead})"
    )
    print(f"flows_survived_fraction={outcome.fraction:.4f}")
    return 0


if __name__ == "__main__":
    if os.environ.get("LVSMON_VM") != "1":
        raise SystemExit("runs inside the VM tier's guest (real IPVS): see bench/scaleout.py")
    sys.exit(main())
