"""A small LVS network inside the guest: the guest's root namespace is the director.

    client ns  (10.N.0.2) --veth-- director (10.N.0.1, VIPs on a dummy) --bridge 10.N.1.1--
        real server ns r1 (10.N.1.11), r2 (.12), r3 (.13), default route via the director
        DR client ns (10.N.1.2): on the real servers' wire, so DR replies bypass the director

Real servers are threads of the test process with sockets opened inside their
namespace (setns on a helper thread: Python 3.11 has no os.setns); each answers
a TCP connection with its name, then echoes until the peer closes. Clients are
sockets opened the same way; they close with RST so IPVS forgets the connection
10 s later (CLOSE) instead of 2 minutes (TIME_WAIT), which keeps drains short.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import socket
import struct
import subprocess
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from typing import TypeVar

T = TypeVar("T")
CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def sh(*argv: str, check: bool = True, data: str | None = None) -> str:
    proc = subprocess.run(argv, input=data, capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr}")
    return proc.stdout


def saved(service: str) -> str:
    """`ipvsadm -Sn` lines of one TCP virtual server (ipvsadm -S takes no service filter)."""
    return "".join(
        line + "\n" for line in sh("ipvsadm", "-Sn").splitlines() if f" -t {service} " in line + " "
    )


def in_netns(ns: str | None, fn: Callable[[], T]) -> T:
    """Run fn on a thread that joined network namespace `ns` (None: the director's)."""
    if ns is None:
        return fn()
    box: list[T] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            fd = os.open(f"/run/netns/{ns}", os.O_RDONLY)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), f"setns {ns}")
            finally:
                os.close(fd)
            box.append(fn())
        except BaseException as exc:  # re-raised on the caller's thread
            errors.append(exc)

    t = threading.Thread(target=run)
    t.start()
    t.join()
    if errors:
        raise errors[0]
    return box[0]


def greeting(sock: socket.socket, what: str) -> str:
    """The real server's first line: its name."""
    line = b""
    while not line.endswith(b"\n"):
        chunk = sock.recv(64)
        if not chunk:
            raise AssertionError(f"{what} closed before greeting")
        line += chunk
    return line.decode().strip()


def rst_close(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


class RealServer:
    """TCP listeners in one namespace: greet with the name, then echo."""

    def __init__(self, name: str, ns: str):
        self.name = name
        self.ns = ns
        self.accepted: Counter[int] = Counter()  # by local port
        self.local_addresses: set[str] = set()
        self._listeners: list[socket.socket] = []

    def listen(self, port: int, family: int = socket.AF_INET) -> None:
        def make() -> socket.socket:
            s = socket.socket(family, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", port))
            s.listen(128)
            return s

        lsock = in_netns(self.ns, make)
        self._listeners.append(lsock)
        threading.Thread(target=self._accept, args=(lsock, port), daemon=True).start()

    def _accept(self, lsock: socket.socket, port: int) -> None:
        while True:
            try:
                conn, _peer = lsock.accept()
            except OSError:
                return
            self.accepted[port] += 1
            self.local_addresses.add(conn.getsockname()[0])
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError), conn:
            conn.sendall(f"{self.name}\n".encode())
            while data := conn.recv(4096):
                conn.sendall(data)

    def close(self) -> None:
        for s in self._listeners:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()


class Topology:
    def __init__(self, net: int, reals: int = 3):
        self.net = net  # second octet: one network per test module
        self.prefix = f"lv{net}"
        self.client_ns = f"{self.prefix}c"
        self.dr_client_ns = f"{self.prefix}d"
        self.director = f"10.{net}.0.1"
        self.client = f"10.{net}.0.2"
        self.dr_client = f"10.{net}.1.2"
        self.gateway = f"10.{net}.1.1"
        self.servers = [RealServer(f"r{i}", f"{self.prefix}r{i}") for i in range(1, reals + 1)]
        self.vips: list[str] = []

    def real_address(self, i: int) -> str:  # 1-based, like the names
        return f"10.{self.net}.1.{10 + i}"

    def vip(self, n: int) -> str:
        return f"10.{self.net}.9.{n}"

    def up(self) -> None:
        p = self.prefix
        self.down()
        sh("sysctl", "-qw", "net.ipv4.ip_forward=1")
        sh("sysctl", "-qw", "net.ipv4.conf.all.rp_filter=0")
        sh("ip", "link", "add", f"{p}vip", "type", "dummy")
        sh("ip", "link", "set", f"{p}vip", "up")
        sh("ip", "link", "add", f"{p}br", "type", "bridge")
        sh("ip", "addr", "add", f"{self.gateway}/24", "dev", f"{p}br")
        sh("ip", "link", "set", f"{p}br", "up")
        self._ns(self.client_ns, f"{p}c0", f"{self.client}/24", self.director, bridge=None)
        sh("ip", "addr", "add", f"{self.director}/24", "dev", f"{p}c0")
        sh("ip", "link", "set", f"{p}c0", "up")
        self._ns(self.dr_client_ns, f"{p}d0", f"{self.dr_client}/24", self.gateway, f"{p}br")
        sh(
            "ip",
            "-n",
            self.dr_client_ns,
            "route",
            "add",
            f"10.{self.net}.9.0/24",
            "via",
            self.gateway,
        )
        for i, rs in enumerate(self.servers, start=1):
            self._ns(rs.ns, f"{p}r{i}", f"{self.real_address(i)}/24", self.gateway, f"{p}br")

    def _ns(self, ns: str, host_if: str, address: str, gateway: str, bridge: str | None) -> None:
        sh("ip", "netns", "add", ns)
        sh("ip", "link", "add", host_if, "type", "veth", "peer", "name", "eth0", "netns", ns)
        if bridge:
            sh("ip", "link", "set", host_if, "master", bridge)
        sh("ip", "link", "set", host_if, "up")
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "-n", ns, "addr", "add", address, "dev", "eth0")
        sh("ip", "-n", ns, "link", "set", "eth0", "up")
        sh("ip", "-n", ns, "route", "add", "default", "via", gateway)

    def add_vip(self, address: str) -> None:
        sh("ip", "addr", "add", f"{address}/32", "dev", f"{self.prefix}vip")
        self.vips.append(address)

    def direct_routing_vip(self, address: str, servers: list[RealServer]) -> None:
        """The classic LVS-DR real server setup: the VIP on lo, no ARP for it on eth0."""
        for rs in servers:
            sh("ip", "-n", rs.ns, "addr", "add", f"{address}/32", "dev", "lo")
            for key, value in (
                ("all.arp_ignore", 1),
                ("all.arp_announce", 2),
                ("eth0.arp_ignore", 1),
                ("eth0.arp_announce", 2),
            ):
                sh("ip", "netns", "exec", rs.ns, "sysctl", "-qw", f"net.ipv4.conf.{key}={value}")

    def down(self) -> None:
        for rs in self.servers:
            rs.close()
        for ns in [self.client_ns, self.dr_client_ns, *(rs.ns for rs in self.servers)]:
            sh("ip", "netns", "del", ns, check=False)
        for link in ("vip", "br", "c0", "d0", *(f"r{i}" for i in range(1, 10))):
            sh("ip", "link", "del", f"{self.prefix}{link}", check=False)

    def server(self, name: str) -> RealServer:
        return next(rs for rs in self.servers if rs.name == name)

    # -- clients --------------------------------------------------------------------

    def connect(
        self, address: str, port: int, *, dr: bool = False, timeout: float = 10.0
    ) -> tuple[str, socket.socket]:
        """Open a connection from the client namespace: (serving real server, socket)."""
        ns = self.dr_client_ns if dr else self.client_ns

        def make() -> socket.socket:
            return socket.socket(socket.AF_INET, socket.SOCK_STREAM)

        sock = in_netns(ns, make)
        sock.settimeout(timeout)
        sock.connect((address, port))
        return greeting(sock, f"{address}:{port}"), sock

    def request(self, address: str, port: int, payload: bytes = b"", *, dr: bool = False) -> str:
        """One short connection: greeting, optional echo of `payload`, RST close."""
        name, sock = self.connect(address, port, dr=dr)
        try:
            if payload:
                sock.sendall(payload)
                got = b""
                while len(got) < len(payload):
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    got += chunk
                assert got == payload, f"echo mismatch from {name}"
        finally:
            rst_close(sock)
        return name


@contextlib.contextmanager
def topology(net: int, reals: int = 3) -> Iterator[Topology]:
    topo = Topology(net, reals)
    topo.up()
    try:
        yield topo
    finally:
        topo.down()
