"""A graceful handover or a preemption on the proxy plane loses no established
connection when failover_group.handover_forward is set (lvsmon.ha.handover).

Two `lvsmon run` directors (proxy plane, 100 ms adverts, shutdown_grace 2 s) in
front of two echo servers; the client cycles 8 connections that echo every 100 ms
and close cleanly after 1.2 s. The VIP moves while they run (SIGTERM of the
master; a better director preempting): the new master forwards the segments of
the old one's connections back to it, which keeps the VIP on lo while its proxy
finishes them. Every connection must end cleanly.
"""

from __future__ import annotations

import signal
import subprocess
import time

from tests.netns.test_daemon_failover import daemon_config, role, status
from tests.netns.topology import (
    HERE,
    PORT,
    PUBLIC,
    PYTHON,
    VIP,
    Director,
    Proc,
    Topology,
    run,
    wait_for,
)

FORWARD = 4.0
TABLE = "lvsmon_handover_51_eth0"


def start(topo: Topology, host: str, priority: int) -> Director:
    text = daemon_config(topo, host, priority).replace(
        'garp_interval = "5ms"\n', f'garp_interval = "5ms"\nhandover_forward = "{FORWARD:g}s"\n'
    )
    assert "handover_forward" in text
    path = topo.workdir / f"{host}.daemon.toml"
    path.write_text(text)
    proc = topo.spawn(host, "lvsmon-run", [PYTHON, "-m", "lvsmon.cli", "run", "-c", str(path)])
    wait_for(f"{host} daemon", lambda: role(topo, host) != "", 20, every=0.1)
    return Director(topo, host, proc)


def echo(topo: Topology, host: str) -> Proc:
    proc = topo.spawn(host, "echo", [PYTHON, str(HERE / "echo_server.py"), host, str(PORT)])
    wait_for(f"echo on {host}", lambda: "listening" in proc.output(), 10)
    return proc


def events(proc: Proc) -> list[tuple[float, str, str]]:
    out = []
    for line in proc.output().splitlines():
        parts = line.split()
        if len(parts) == 3:
            out.append((float(parts[0]), parts[1], parts[2]))
    return out


def handover_table(topo: Topology, host: str) -> str:
    """The group's nftables table on `host` ("" when there is none)."""
    argv = ["nft", "list", "table", "ip", TABLE]
    try:
        return run(*topo.exec_argv(host, argv))
    except RuntimeError:
        return ""


def forwarded_flows(topo: Topology, host: str = "dir2") -> int:
    """Connections `host` forwards now (0: tracking only, or no table)."""
    table = handover_table(topo, host)
    return table.count(f" . {VIP} . ") if "dup to" in table else 0


def arp_settings(topo: Topology, host: str) -> list[str]:
    names = ("arp_ignore", "arp_announce")
    argv = ["sysctl", "-n", *(f"net.ipv4.conf.eth0.{n}" for n in names)]
    return run(*topo.exec_argv(host, argv)).split()


def cycling_clients(topo: Topology) -> Proc:
    """8 connections through the VIP, echoing every 100 ms, closed cleanly after 1.2 s."""
    return topo.spawn(
        "client",
        "holder",
        [PYTHON, str(HERE / "holder.py"), VIP, str(PORT), "8", "0.1", "1.2"],
        stdin=subprocess.PIPE,
    )


def stop_clients(holder: Proc, moved: float) -> tuple[list[str], list[str]]:
    """Connections broken, and those open when the VIP moved that did not end cleanly."""
    assert holder.popen.stdin is not None
    holder.popen.stdin.close()
    holder.popen.wait(5)
    seen = events(holder)
    lost = [n for t, what, n in seen if what == "lost"]
    opened = {n for t, what, n in seen if what == "open" and t < moved}
    ended = {n for t, what, n in seen if what == "done" and t > moved}
    return lost, sorted(opened - ended)


def test_sigterm_of_the_master_hands_over_its_established_connections(topo: Topology) -> None:
    echo(topo, "rs1")
    echo(topo, "rs2")
    d1 = start(topo, "dir1", 150)
    wait_for("dir1 master", lambda: role(topo, "dir1") == "master", 10)
    start(topo, "dir2", 100)
    wait_for("dir2 backup", lambda: role(topo, "dir2") == "backup", 10)
    holder = cycling_clients(topo)
    time.sleep(2.0)
    sent = time.monotonic()
    d1.proc.popen.send_signal(signal.SIGTERM)
    wait_for("dir2 master", lambda: role(topo, "dir2") == "master", 5, every=0.05)
    flows = wait_for("forwarded flows", lambda: forwarded_flows(topo), 2, every=0.05)
    groups = status(topo, "dir2")["failover_groups"]
    assert isinstance(groups, list)
    assert groups[0]["forwarding_to"] == PUBLIC["dir1"]  # what `lvsmon status` shows
    during = topo.addresses("dir1", "lo")
    d1.proc.popen.wait(10)
    drained = time.monotonic() - sent
    time.sleep(2.0)  # longer than a connection's life: new ones open, through dir2
    lost, unfinished = stop_clients(holder, sent)
    opened_after = [n for t, what, n in events(holder) if what == "open" and t > sent + drained]
    print(
        f"\nhandover with forwarding: dir1 drained and exited in {drained:.2f}s, "
        f"{flows} flows forwarded, {len(lost)} lost"
    )
    assert not lost, f"connections broken by the handover: {lost}"
    assert not unfinished  # each one open at the SIGTERM ended cleanly
    assert opened_after, "no new connection through dir2 after the handover"
    assert VIP in during  # dir1 kept the VIP on lo while it drained ...
    assert not topo.holds("dir1") and VIP not in topo.addresses("dir1", "lo")
    assert arp_settings(topo, "dir1") == ["0", "0"]  # ... and put ARP back as it found it
    assert d1.proc.popen.returncode == 0
    assert handover_table(topo, "dir1") == ""  # removed when its VRRP process stopped
    wait_for("forwarding ended", lambda: forwarded_flows(topo) == 0, FORWARD + 3, every=0.2)
    assert "ct state new counter" in handover_table(topo, "dir2")  # tracking goes on
    assert role(topo, "dir2") == "master" and topo.holds("dir2")


def dir1_preempts_dir2(topo: Topology) -> tuple[Proc, Director, float]:
    """dir2 serves the cycling clients alone; then dir1 (priority 150) starts and
    preempts it. The clients, dir1, and when it became master."""
    echo(topo, "rs1")
    echo(topo, "rs2")
    start(topo, "dir2", 100)
    wait_for("dir2 master", lambda: role(topo, "dir2") == "master", 10)
    holder = cycling_clients(topo)
    time.sleep(2.0)
    d1 = start(topo, "dir1", 150)
    wait_for("dir1 preempts", lambda: role(topo, "dir1") == "master", 10, every=0.02)
    return holder, d1, time.monotonic()


def test_a_preempting_master_forwards_the_connections_of_the_one_it_demotes(
    topo: Topology,
) -> None:
    """dir2 is master alone; dir1 (higher priority, preempt) starts and takes over.
    dir1 forwards dir2's connections back; dir2, now backup, keeps the VIP on lo for
    handover_forward while its proxy finishes them."""
    holder, _, moved = dir1_preempts_dir2(topo)
    wait_for("dir2 backup", lambda: role(topo, "dir2") == "backup", 5, every=0.05)
    flows = wait_for("forwarded flows", lambda: forwarded_flows(topo, "dir1"), 2, every=0.05)
    assert VIP in topo.addresses("dir2", "lo") and not topo.holds("dir2")
    assert arp_settings(topo, "dir2") == ["1", "2"]
    time.sleep(2.0)
    lost, unfinished = stop_clients(holder, moved)
    print(f"\npreempt with forwarding: {flows} flows forwarded, {len(lost)} lost")
    assert not lost and not unfinished
    wait_for("dir2's hold ended", lambda: VIP not in topo.addresses("dir2", "lo"), FORWARD + 3)
    assert arp_settings(topo, "dir2") == ["0", "0"]
    wait_for("dir1's forwarding ended", lambda: forwarded_flows(topo, "dir1") == 0, 5)
    assert role(topo, "dir1") == "master" and topo.holds("dir1")


def test_a_director_taking_back_over_keeps_its_own_connections(topo: Topology) -> None:
    """dir2 serves; dir1 preempts and at once hands back (SIGTERM). dir2 masters
    again while connections it accepted itself are still open: it must keep them
    (conntrack has known them since its VRRP process started) and forward only
    dir1's, while dir1 drains. Before the group's table tracked from the start,
    dir2 took its own connections for dir1's and sent them away: 8 of 8 reset."""
    holder, d1, moved = dir1_preempts_dir2(topo)
    time.sleep(0.3)
    d1.proc.popen.send_signal(signal.SIGTERM)
    wait_for("dir2 master again", lambda: role(topo, "dir2") == "master", 5, every=0.05)
    d1.proc.popen.wait(10)
    time.sleep(2.0)
    lost, unfinished = stop_clients(holder, moved)
    print(f"\npreempt, then handed back at once: {len(lost)} lost")
    assert not lost and not unfinished
    assert VIP not in topo.addresses("dir2", "lo") and topo.holds("dir2")
    assert arp_settings(topo, "dir2") == ["0", "0"]
