"""The IPVS connection-sync daemon follows the failover role, in real IPVS.

Two `lvsmon run` directors, each in its own network namespace (each has its
own IPVS table and sync daemons), on one bridge with a client and a direct-
routing real server:

    client 10.34.0.2 --+-- d1 10.34.0.11 (priority 200)   VIP 10.34.0.100 moves
                       +-- d2 10.34.0.12 (priority 100)   between d1 and d2
                       +-- r1 10.34.0.21 (VIP on lo: LVS-DR)

`[daemon.ipvs.sync_daemon] follow = "vip"`: the master's kernel sends its
connection table, the backup's receives it. The test holds connections
through d1, sees them arrive in d2's table, stops d1 (graceful handover) and
keeps using the same connections through d2: they survive because d2's sync
daemon had them, and d2's now sends. d1 comes back, preempts, and the roles
of both sync daemons swap back.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.vm.guest.ipvs_topology import RealServer, in_netns, rst_close, sh

LVSMON = str(Path(sys.executable).with_name("lvsmon"))
P = "lv34"
VIP, CLIENT, REAL = "10.34.0.100", "10.34.0.2", "10.34.0.21"
DIRECTORS = {"d1": ("10.34.0.11", 200), "d2": ("10.34.0.12", 100)}


def config(tmp: Path, name: str) -> str:
    _address, priority = DIRECTORS[name]
    return f"""
[daemon]
dataplane = "ipvs"
metrics_listen = "127.0.0.1:19134"
pid_file = "{tmp}/{name}.pid"
log_level = "info"
shutdown_grace = "1s"

[daemon.ipvs]
state_file = "{tmp}/{name}-owned.json"

[daemon.ipvs.sync_daemon]
follow = "vip"
interface = "eth0"
syncid = 34

[[virtual_server]]
name = "web"
address = "{VIP}"
port = 80
scheduler = "rr"
forwarding = "dr"

[[virtual_server.real_server]]
address = "{REAL}"

[[failover_group]]
name = "vip"
vrid = 34
interface = "eth0"
priority = {priority}
advert_interval = "500ms"

[[failover_group.address]]
address = "{VIP}/24"
"""


def wait_for(what: str, predicate: Callable[[], bool], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.3)


def ns(name: str) -> str:
    return f"{P}{name}"


def sync_daemons(name: str) -> str:
    return sh("ip", "netns", "exec", ns(name), "ipvsadm", "-L", "--daemon")


def runs(name: str, role: str) -> bool:
    """Exactly this sync daemon runs in director `name`'s namespace."""
    text = sync_daemons(name)
    other = "backup" if role == "master" else "master"
    return f"{role} sync daemon (mcast=eth0, syncid=34" in text and other not in text


def owns_vip(name: str) -> bool:
    return f"{VIP}/24" in sh("ip", "-n", ns(name), "addr", "show", "dev", "eth0")


def synced_connections(name: str) -> int:
    table = sh("ip", "netns", "exec", ns(name), "ipvsadm", "-Lnc")
    return sum(1 for line in table.splitlines() if "ESTABLISHED" in line and CLIENT in line)


def attach(name: str, address: str) -> None:
    sh("ip", "netns", "add", ns(name))
    sh(
        "ip",
        "link",
        "add",
        f"{P}{name}h",
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        ns(name),
    )
    sh("ip", "link", "set", f"{P}{name}h", "master", f"{P}br")
    sh("ip", "link", "set", f"{P}{name}h", "up")
    sh("ip", "-n", ns(name), "link", "set", "lo", "up")
    sh("ip", "-n", ns(name), "addr", "add", f"{address}/24", "dev", "eth0")
    sh("ip", "-n", ns(name), "link", "set", "eth0", "up")


def teardown() -> None:
    for name in ("c", "r1", *DIRECTORS):
        sh("ip", "netns", "del", ns(name), check=False)
        sh("ip", "link", "del", f"{P}{name}h", check=False)
    sh("ip", "link", "del", f"{P}br", check=False)


@pytest.fixture
def lan() -> Iterator[RealServer]:
    teardown()
    sh("ip", "link", "add", f"{P}br", "type", "bridge")
    sh("ip", "link", "set", f"{P}br", "up")
    attach("c", CLIENT)
    for name, (address, _priority) in DIRECTORS.items():
        attach(name, address)
    attach("r1", REAL)
    sh("ip", "-n", ns("r1"), "addr", "add", f"{VIP}/32", "dev", "lo")
    for key, value in (
        ("all.arp_ignore", 1),
        ("all.arp_announce", 2),
        ("eth0.arp_ignore", 1),
        ("eth0.arp_announce", 2),
    ):
        sh("ip", "netns", "exec", ns("r1"), "sysctl", "-qw", f"net.ipv4.conf.{key}={value}")
    server = RealServer("r1", ns("r1"))
    server.listen(80)
    try:
        yield server
    finally:
        server.close()
        teardown()


class Director:
    def __init__(self, tmp: Path, name: str):
        self.name = name
        self.path = tmp / f"{name}.toml"
        self.path.write_text(config(tmp, name))
        self.log = tmp / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Director:
        with open(self.log, "wb") as log:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(
                ["ip", "netns", "exec", ns(self.name), LVSMON, "run", "-c", str(self.path)],
                stdout=subprocess.DEVNULL,
                stderr=log,
                start_new_session=True,
            )
        return self

    def stop(self) -> None:
        """SIGTERM: a master hands over (priority 0) before it exits."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(60)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def status(self) -> str:
        """`lvsmon status` in the director's namespace (its metrics_listen is there)."""
        return sh("ip", "netns", "exec", ns(self.name), LVSMON, "status", "-c", str(self.path))

    def logs(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else "(not started)"


def client_connection() -> socket.socket:
    sock = in_netns(ns("c"), lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM))
    sock.settimeout(15)
    sock.connect((VIP, 80))
    assert sock.recv(16) == b"r1\n"
    return sock


def echo(sock: socket.socket, payload: bytes) -> None:
    sock.sendall(payload)
    got = b""
    while len(got) < len(payload):
        chunk = sock.recv(4096)
        assert chunk, "the connection closed"
        got += chunk
    assert got == payload


def test_the_sync_daemon_follows_the_failover_role(lan: RealServer, tmp_path: Path) -> None:
    d1, d2 = Director(tmp_path, "d1"), Director(tmp_path, "d2")
    held: list[socket.socket] = []
    try:
        d1.start()
        wait_for(
            "d1 to be master with a master sync daemon",
            lambda: owns_vip("d1") and runs("d1", "master"),
        )
        d2.start()
        wait_for("d2 to follow as backup", lambda: runs("d2", "backup"))
        assert owns_vip("d1") and not owns_vip("d2")
        # what an operator sees: the running sync daemon and what it follows
        assert "master sync daemon (mcast=eth0, syncid=34)  (follows failover group vip)" in (
            d1.status().splitlines()
        )
        assert "backup sync daemon (mcast=eth0, syncid=34)  (follows failover group vip)" in (
            d2.status().splitlines()
        )

        # connections through d1 reach d2's table over the sync daemons
        held = [client_connection() for _ in range(3)]
        for sock in held:
            for _ in range(4):  # past the kernel's sync threshold (3 packets)
                echo(sock, b"ping")
        wait_for("d2 to hold d1's connections", lambda: synced_connections("d2") == 3, 30)

        # graceful handover: d2 takes the VIP and its sync daemon turns master, d1's backup
        d1.stop()
        wait_for(
            "d2 to be master with a master sync daemon",
            lambda: owns_vip("d2") and runs("d2", "master"),
        )
        assert runs("d1", "backup"), sync_daemons("d1")
        assert not owns_vip("d1")
        # the same connections carry on through d2: its table had them
        for sock in held:
            echo(sock, b"after the failover")
        assert lan.accepted[80] == 3  # no reconnects

        # d1 returns with the higher priority, preempts, and the roles swap back
        d1.start()
        wait_for(
            "d1 to preempt with a master sync daemon",
            lambda: owns_vip("d1") and runs("d1", "master"),
        )
        wait_for("d2's sync daemon back to backup", lambda: runs("d2", "backup"))
        assert not owns_vip("d2")
    except BaseException:
        print("--- d1 log ---\n" + d1.logs() + "\n--- d2 log ---\n" + d2.logs())
        raise
    finally:
        for sock in held:
            rst_close(sock)
        d1.kill()
        d2.kill()
