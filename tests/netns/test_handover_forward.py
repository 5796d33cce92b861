"""A graceful handover on the proxy plane loses no established connection when
failover_group.handover_forward is set (lvsmon.ha.handover).

Two `lvsmon run` directors (proxy plane, 100 ms adverts, shutdown_grace 2 s) in
front of two echo servers; the client cycles 8 connections that echo every 100 ms
and close cleanly after 1.2 s. dir1 gets SIGTERM while they run: dir2 takes the
VIP and forwards the segments of dir1's connections back to dir1, which keeps the
VIP on lo until its proxy has drained. Every connection must end cleanly.
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


def forwarded_flows(topo: Topology) -> int | None:
    """Elements in dir2's forwarding set; None when the table does not exist."""
    try:
        out = run(
            *topo.exec_argv("dir2", ["nft", "list", "set", "ip", "lvsmon_handover_51", "flows"])
        )
    except RuntimeError:
        return None
    return out.count(f" . {VIP} . ")


def test_sigterm_of_the_master_hands_over_its_established_connections(topo: Topology) -> None:
    echo(topo, "rs1")
    echo(topo, "rs2")
    d1 = start(topo, "dir1", 150)
    wait_for("dir1 master", lambda: role(topo, "dir1") == "master", 10)
    start(topo, "dir2", 100)
    wait_for("dir2 backup", lambda: role(topo, "dir2") == "backup", 10)
    holder = topo.spawn(
        "client",
        "holder",
        [PYTHON, str(HERE / "holder.py"), VIP, str(PORT), "8", "0.1", "1.2"],
        stdin=subprocess.PIPE,
    )
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
    assert holder.popen.stdin is not None
    holder.popen.stdin.close()
    holder.popen.wait(5)
    seen = events(holder)
    lost = [(t, n) for t, what, n in seen if what == "lost"]
    opened = {n: t for t, what, n in seen if what == "open" and t < sent}  # last open each
    done_late = [n for t, what, n in seen if what == "done" and t > sent and n in opened]
    opened_after = [n for t, what, n in seen if what == "open" and t > sent + drained]
    print(
        f"\nhandover with forwarding: dir1 drained and exited in {drained:.2f}s, "
        f"{flows} flows forwarded, {len(done_late)} connections closed cleanly after "
        f"the SIGTERM, {len(lost)} lost"
    )
    assert not lost, f"connections broken by the handover: {lost}"
    assert sorted(set(done_late)) == sorted(opened)  # each one open at the SIGTERM ended cleanly
    assert opened_after, "no new connection through dir2 after the handover"
    assert VIP in during  # dir1 kept the VIP on lo while it drained ...
    assert not topo.holds("dir1") and VIP not in topo.addresses("dir1", "lo")
    # ... and put ARP back as it found it
    for name in ("arp_ignore", "arp_announce"):
        value = run(*topo.exec_argv("dir1", ["sysctl", "-n", f"net.ipv4.conf.eth0.{name}"]))
        value = value.strip()
        assert value == "0", name
    assert d1.proc.popen.returncode == 0
    wait_for("forwarding ended", lambda: forwarded_flows(topo) is None, FORWARD + 3, every=0.2)
    assert role(topo, "dir2") == "master" and topo.holds("dir2")
