"""The whole daemon fails over: `lvsmon run` on two directors (proxy data plane +
failover group), real servers behind them, a client probing the VIP.

Unlike test_failover.py (VRRP alone, with a stand-in listener), here the
connections the client makes are balanced by the real data plane to the real
servers rs1/rs2, so a takeover is proven end to end: addresses, ARP, VRRP
process, data plane, metrics.
"""

from __future__ import annotations

import json
import time

from tests.netns.topology import (
    MACS,
    PORT,
    PRIVATE,
    PYTHON,
    VIP,
    Director,
    Topology,
    failures,
    lvsmon_config,
    wait_for,
)


def daemon_config(topo: Topology, host: str, priority: int) -> str:
    reals = "".join(
        f'\n[[virtual_server.real_server]]\naddress = "{PRIVATE[rs]}"\nport = {PORT}\n'
        for rs in ("rs1", "rs2")
    )
    return (
        f'[daemon]\ndataplane = "proxy"\nmetrics_listen = "127.0.0.1:9108"\n'
        f'pid_file = "{topo.workdir / host}.pid"\nlog_level = "info"\nshutdown_grace = "2s"\n\n'
        f'[[virtual_server]]\nname = "web"\naddress = "{VIP}"\nport = {PORT}\nscheduler = "rr"\n'
        + reals
        + "\n"
        + lvsmon_config(priority=priority, ipv6=False)
    )


def start(topo: Topology, host: str, priority: int) -> Director:
    path = topo.workdir / f"{host}.daemon.toml"
    path.write_text(daemon_config(topo, host, priority))
    proc = topo.spawn(host, "lvsmon-run", [PYTHON, "-m", "lvsmon.cli", "run", "-c", str(path)])
    director = Director(topo, host, proc)
    wait_for(f"{host} daemon", lambda: status(topo, host), 20)
    return director


def status(topo: Topology, host: str) -> dict[str, object]:
    code = (
        "import sys, urllib.request as u; sys.stdout.write(u.urlopen("
        "'http://127.0.0.1:9108/status', timeout=2).read().decode())"
    )
    try:
        return dict(json.loads(topo.in_ns(host, code)))
    except RuntimeError:  # not listening yet, or gone
        return {}


def role(topo: Topology, host: str) -> str:
    groups = status(topo, host).get("failover_groups", [])
    assert isinstance(groups, list)
    return str(groups[0]["state"]) if groups else ""


def vs_connections(topo: Topology, host: str) -> int:
    services = status(topo, host)["virtual_servers"]
    assert isinstance(services, list)
    return int(services[0]["connections"])


def pair(topo: Topology) -> tuple[Director, Director]:
    topo.listener("rs1")
    topo.listener("rs2")
    d1 = start(topo, "dir1", 150)
    wait_for("dir1 master", lambda: role(topo, "dir1") == "master", 10)
    d2 = start(topo, "dir2", 100)
    wait_for("dir2 backup", lambda: role(topo, "dir2") == "backup", 10)
    return d1, d2


def test_sigkill_of_the_master_daemon_moves_balancing_to_the_backup(topo: Topology) -> None:
    d1, _ = pair(topo)
    assert topo.holds("dir1") and not topo.holds("dir2")
    prober = topo.prober()
    time.sleep(0.5)
    before = vs_connections(topo, "dir2")
    killed = time.monotonic()
    d1.kill9()  # the daemon, its VRRP child and its data plane: the whole process group
    wait_for("dir2 master", lambda: role(topo, "dir2") == "master", 5)
    dir2_mac = MACS[("dir2", "eth0")]
    wait_for("client neighbour -> dir2", lambda: topo.neigh("client", VIP) == dir2_mac, 3)
    time.sleep(0.5)
    attempts = prober.stop()
    resumed = [t for t, ok, _ in attempts if ok and t > killed]
    assert resumed, "no connection succeeded after the takeover"
    took = resumed[0] - killed
    print(f"\ndaemon failover (kill -9, 100 ms adverts): first success after {took * 1000:.0f} ms")
    assert took < 1.5
    # every attempt after the first success went through dir2 and got a real server's banner
    late = [(ok, who) for t, ok, who in attempts if t > resumed[0]]
    assert late and all(ok and who in ("rs1", "rs2") for ok, who in late)
    assert {who for _, who in late} == {"rs1", "rs2"}  # rr over both real servers
    assert vs_connections(topo, "dir2") - before >= len(late)


def test_graceful_sigterm_of_the_master_daemon_loses_no_connection(topo: Topology) -> None:
    d1, _ = pair(topo)
    prober = topo.prober()
    time.sleep(0.5)
    started = time.monotonic()
    took = d1.terminate()
    wait_for("dir2 master", lambda: role(topo, "dir2") == "master", 2)
    time.sleep(0.5)
    attempts = prober.stop()
    lost = failures(attempts, started - 0.5)
    print(
        f"\ndaemon graceful handover: dir1 exited after {took * 1000:.0f} ms, "
        f"{lost} failed attempts of {len(attempts)}"
    )
    assert lost == 0
    assert topo.holds("dir2") and not topo.holds("dir1")
    assert d1.proc.popen.returncode == 0
