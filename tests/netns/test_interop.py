"""Interoperability with keepalived (Debian 2.2.7, `vrrp_version 3`), both ways.

Same VRID, same addresses, 100 ms adverts. keepalived is killed the way a
crash kills it: SIGKILL to its whole process group (killing only the parent
makes its VRRP child leave gracefully). Each side runs listener.py as its
stand-in data plane.
"""

from __future__ import annotations

import time

from tests.netns.topology import (
    MACS,
    NAT_GW,
    Topology,
    failures,
    first_success_after,
    keepalived_config,
    lvsmon_config,
    wait_for,
)


def test_lvsmon_backup_follows_keepalived_master_and_takes_over(topo: Topology) -> None:
    ka = topo.keepalived("dir1", keepalived_config(priority=150))
    wait_for("keepalived master", ka.holds_vip, 5)
    lv = topo.lvsmon("dir2", lvsmon_config(priority=100))
    lv.wait_state("backup")
    # lvsmon decodes keepalived's adverts: checksum, address list, interval all accepted
    wait_for("adverts from keepalived", lambda: lv.group().get("adverts_received", 0) >= 5, 3)
    status = lv.group()
    assert status["rejected"] == {} and status["peer"] == "192.0.2.2"
    assert status["peer_priority"] == 150 and not lv.holds_vip()
    time.sleep(0.5)
    assert lv.state() == "backup"

    assert topo.ping("client", "192.0.2.100")
    prober = topo.prober()
    time.sleep(0.2)
    killed = time.monotonic()
    ka.kill9()
    lv.wait_state("master", 3)
    wait_for(
        "client -> dir2", lambda: topo.neigh("client", "192.0.2.100") == MACS[("dir2", "eth0")], 3
    )
    time.sleep(0.2)
    took = first_success_after(prober.stop(), killed, by="dir2")
    print(f"\nkeepalived -> lvsmon: first connection via dir2 after {took and took * 1000:.0f} ms")
    assert took is not None and took < 1.5
    assert topo.holds("dir2", NAT_GW, "eth1")

    # failback: keepalived comes back with the higher priority and preempts lvsmon
    ka2 = topo.keepalived("dir1", keepalived_config(priority=150), listener=False)
    lv.wait_state("backup", 5)
    wait_for("keepalived holds the VIP again", ka2.holds_vip, 3)
    wait_for("lvsmon released it", lambda: not lv.holds_vip(), 2)


def test_keepalived_backup_follows_lvsmon_master_and_takes_over(topo: Topology) -> None:
    lv = topo.lvsmon("dir1", lvsmon_config(priority=150))
    lv.wait_state("master")
    ka = topo.keepalived("dir2", keepalived_config(priority=100))
    wait_for("keepalived backup", lambda: "Entering BACKUP STATE" in ka.proc.output(), 5)
    time.sleep(1.0)  # 3 master down intervals: keepalived accepts lvsmon's adverts
    assert "Entering MASTER STATE" not in ka.proc.output(), ka.proc.output()
    assert not ka.holds_vip() and lv.holds_vip()
    assert "bogus" not in ka.proc.output().lower()

    # graceful: lvsmon's priority 0 makes keepalived take over; no attempt is lost
    prober = topo.prober()
    time.sleep(0.2)
    stopped = time.monotonic()
    lv.terminate()
    wait_for("keepalived master", ka.holds_vip, 3)
    time.sleep(0.3)
    attempts = prober.stop()
    print(f"\nlvsmon -> keepalived graceful: {failures(attempts, stopped - 0.2)} failed attempts")
    assert failures(attempts, stopped - 0.2) == 0
    assert any(ok and who == "dir2" for _, ok, who in attempts)

    # lvsmon comes back (higher priority, preempt) and takes over from keepalived
    lv2 = topo.lvsmon("dir1", lvsmon_config(priority=150))
    lv2.wait_state("master", 5)
    wait_for("keepalived released the VIP", lambda: not ka.holds_vip(), 3)
    assert lv2.group()["rejected"] == {}

    # crash: kill -9 of lvsmon, keepalived takes over again
    prober = topo.prober()
    time.sleep(0.2)
    killed = time.monotonic()
    lv2.kill9()
    wait_for("keepalived master again", ka.holds_vip, 3)
    time.sleep(0.3)
    took = first_success_after(prober.stop(), killed, by="dir2")
    print(
        f"lvsmon -> keepalived kill -9: first connection via dir2 after "
        f"{took and took * 1000:.0f} ms"
    )
    assert took is not None and took < 1.5
