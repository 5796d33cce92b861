"""Failover between two lvsmon directors in namespaces (see topology.py for the wiring).

Each director runs `python -m lvsmon.ha` (the parent plus its VRRP child,
exactly the process layout the daemon uses) and, in the same process group,
listener.py: a trivial TCP listener standing in for the data plane, so
"the client's connection attempts succeed" means "a director that holds the
VIP answers". The full daemon + data plane integration is the lead's.
Adverts every 100 ms keep the tier fast.
"""

from __future__ import annotations

import json
import os
import signal
import time

from prometheus_client.parser import text_string_to_metric_families

from tests.netns.topology import (
    MACS,
    NAT_GW,
    PYTHON,
    VIP,
    VIP6,
    Topology,
    failures,
    first_success_after,
    lvsmon_config,
    wait_for,
)

MDI_100 = 3 * 0.1 + (256 - 100) / 256 * 0.1  # master down interval of priority 100 at 100 ms


def pair(topo: Topology, first: str = "", second: str = "", **kw: object) -> tuple:  # type: ignore[type-arg]
    """dir1 (priority 150) becomes master, then dir2 (100) joins as backup."""
    d1 = topo.lvsmon("dir1", first or lvsmon_config(priority=150, **kw))  # type: ignore[arg-type]
    d1.wait_state("master")
    d2 = topo.lvsmon("dir2", second or lvsmon_config(priority=100, **kw))  # type: ignore[arg-type]
    d2.wait_state("backup")
    wait_for("dir2 hears dir1", lambda: d2.group().get("adverts_received", 0) >= 2, 5)
    return d1, d2


def sample(text: str, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return None


def test_sigkill_of_the_master_moves_every_address_to_the_backup(topo: Topology) -> None:
    d1, d2 = pair(topo)
    assert d1.holds_vip() and topo.holds("dir1", NAT_GW, "eth1") and topo.holds("dir1", VIP6)
    assert not d2.holds_vip()
    # Prime the neighbour entries a takeover must move: client -> VIP, VIP6; rs1 -> gateway.
    assert topo.ping("client", VIP) and topo.ping("client", VIP6) and topo.ping("rs1", NAT_GW)
    assert topo.neigh("client", VIP) == MACS[("dir1", "eth0")]
    prober = topo.prober()
    time.sleep(0.3)
    killed = time.monotonic()
    d1.kill9()
    d2.wait_state("master", 5)
    wait_for(
        "client neighbour entry -> dir2",
        lambda: topo.neigh("client", VIP) == MACS[("dir2", "eth0")],
        3,
    )
    time.sleep(0.3)
    attempts = prober.stop()
    took = first_success_after(attempts, killed, by="dir2")
    print(
        f"\nfailover (kill -9, 100 ms adverts): first connection via dir2 after "
        f"{took and took * 1000:.0f} ms; {failures(attempts, killed)} failed attempts"
    )
    assert took is not None and took < 1.5
    assert all(ok for t, ok, _ in attempts if t > killed + took)  # no flapping back
    assert d2.holds_vip() and topo.holds("dir2", NAT_GW, "eth1") and topo.holds("dir2", VIP6)
    assert topo.neigh("client", VIP6) == MACS[("dir2", "eth0")]  # unsolicited NA
    assert topo.neigh("rs1", NAT_GW) == MACS[("dir2", "eth1")]  # GARP on the private side
    status = d2.group()
    assert status["transitions"] == {"backup": 1, "master": 1}
    assert status["peer"] == "192.0.2.2" and status["peer_priority"] == 150


def test_graceful_sigterm_handover_loses_no_connection_attempts(topo: Topology) -> None:
    d1, d2 = pair(topo, **{"advert": "200ms"})
    prober = topo.prober()
    time.sleep(0.3)
    started = time.monotonic()
    took = d1.terminate()
    d2.wait_state("master", 1)
    time.sleep(0.3)
    attempts = prober.stop()
    lost = failures(attempts, started - 0.3)
    print(
        f"\ngraceful handover: dir1 exited after {took * 1000:.0f} ms, "
        f"{lost} failed attempts of {len(attempts)}"
    )
    assert lost == 0
    assert any(ok and who == "dir2" for _, ok, who in attempts)
    assert not topo.holds("dir1") and d2.holds_vip()
    # Priority 0 lets the backup take over after its skew time, not the master down interval.
    since = d2.group()["since"]
    assert d2.state() == "master" and since > 0
    assert took < 0.2 * 3 + 1.0


def test_priority_zero_makes_the_backup_take_over_in_skew_time(topo: Topology) -> None:
    d1, d2 = pair(topo, **{"advert": "500ms"})  # MDI 1.8 s vs. skew 0.3 s
    d1.proc.popen.send_signal(15)
    started = time.monotonic()
    d2.wait_state("master", 3)
    took = time.monotonic() - started
    print(f"\npriority-0 takeover after {took * 1000:.0f} ms (skew 305 ms, MDI 1805 ms)")
    assert took < 1.0
    d1.proc.popen.wait(5)


def test_partition_gives_two_masters_metrics_show_it_and_healing_leaves_one(
    topo: Topology,
) -> None:
    extra = ["--metrics-listen", "127.0.0.1:9108"]
    d1 = topo.lvsmon("dir1", lvsmon_config(priority=150), extra=extra)
    d1.wait_state("master")
    d2 = topo.lvsmon("dir2", lvsmon_config(priority=100), extra=extra)
    d2.wait_state("backup")
    topo.partition()
    d2.wait_state("master", 3)
    assert d1.state() == "master"
    scrapes = [topo.metrics(h) for h in ("dir1", "dir2")]
    # The split-brain alert: sum by (group) (lvsmon_ha_state{state="master"}) > 1
    masters = sum(sample(t, "lvsmon_ha_state", group="edge", state="master") or 0 for t in scrapes)
    assert masters == 2
    before = [d1.group()["transitions"], d2.group()["transitions"]]
    topo.heal()
    d2.wait_state("backup", 3)
    time.sleep(2.0)  # 5+ master down intervals: any flapping would show
    assert d1.state() == "master" and d2.state() == "backup"
    assert d1.group()["transitions"] == before[0]  # the master never moved
    assert d2.group()["transitions"] == {**before[1], "backup": before[1]["backup"] + 1}
    scrapes = [topo.metrics(h) for h in ("dir1", "dir2")]
    assert (
        sum(sample(t, "lvsmon_ha_state", group="edge", state="master") or 0 for t in scrapes) == 1
    )
    assert d1.holds_vip() and not d2.holds_vip()


def test_preemption_on_the_higher_priority_takes_over_and_hooks_run(topo: Topology) -> None:
    events = topo.workdir / "hook-events"
    code = (
        "import os, sys\nwith open(sys.argv[1], 'a') as f: f.write(' '.join(os.environ[k] "
        "for k in ('LVSMON_HA_GROUP', 'LVSMON_HA_PREVIOUS_STATE', 'LVSMON_HA_STATE', "
        "'LVSMON_HA_PRIORITY')) + chr(10))"
    )
    argv = json.dumps([PYTHON, "-c", code, str(events)])
    hooks = [f"[failover_group.notify]\non_master = {argv}\non_backup = {argv}\non_stop = {argv}"]
    d2 = topo.lvsmon("dir2", lvsmon_config(priority=100, extra="\n".join(hooks)))
    d2.wait_state("master")
    d1 = topo.lvsmon("dir1", lvsmon_config(priority=150))
    d1.wait_state("master", 5)
    d2.wait_state("backup", 2)
    wait_for("VIP on dir1 only", lambda: d1.holds_vip() and not d2.holds_vip(), 2)
    d2.terminate()
    assert events.read_text().splitlines() == [
        "edge initialize backup 100",
        "edge backup master 100",
        "edge master backup 100",
        "edge backup stop 100",
    ]


def test_sighup_reload_lowers_the_priority_without_a_restart(topo: Topology) -> None:
    d1, d2 = pair(topo)
    (topo.workdir / "dir1.toml").write_text(lvsmon_config(priority=90))
    d1.proc.popen.send_signal(signal.SIGHUP)
    d2.wait_state("master", 3)
    d1.wait_state("backup", 2)
    status = d1.group()
    assert status["priority"] == 90 and status["configured_priority"] == 90
    assert status["transitions"] == {"backup": 2, "master": 1}  # state kept: no restart
    (topo.workdir / "dir1.toml").write_text(lvsmon_config(priority=90, vrid=300))
    d1.proc.popen.send_signal(signal.SIGHUP)  # invalid: ignored, still running
    time.sleep(0.5)
    assert d1.proc.alive() and d1.state() == "backup"
    assert "reload rejected" in d1.proc.output()


def test_preemption_off_the_running_master_stays(topo: Topology) -> None:
    d2 = topo.lvsmon("dir2", lvsmon_config(priority=100, preempt=False))
    d2.wait_state("master")
    d1 = topo.lvsmon("dir1", lvsmon_config(priority=150, preempt=False))
    d1.wait_state("backup", 5)
    time.sleep(1.5)  # four master down intervals
    assert d1.state() == "backup" and d2.state() == "master"
    assert d1.group()["transitions"] == {"backup": 1}


def test_preempt_delay_defers_the_takeover(topo: Topology) -> None:
    d2 = topo.lvsmon("dir2", lvsmon_config(priority=100))
    d2.wait_state("master")
    d1 = topo.lvsmon("dir1", lvsmon_config(priority=150, group_extra=['preempt_delay = "1.5s"']))
    d1.wait_state("backup", 5)
    backup_at = time.monotonic()
    time.sleep(0.8)
    assert d1.state() == "backup"  # 2 master down intervals in, still waiting
    d1.wait_state("master", 3)
    took = time.monotonic() - backup_at
    print(f"\npreempt_delay 1.5s: took over {took:.2f}s after entering backup")
    assert took >= 1.3
    d2.wait_state("backup", 2)


def test_tracked_interface_down_lowers_priority_and_the_peer_takes_over(
    topo: Topology,
) -> None:
    track = ['[[failover_group.track_interface]]\ninterface = "eth1"\nweight = -100']
    d1, d2 = pair(topo, first=lvsmon_config(priority=150, group_extra=track))
    topo.link("dir1", "eth1", up=False)
    d2.wait_state("master", 3)
    d1.wait_state("backup", 2)
    assert d1.group()["priority"] == 50
    topo.link("dir1", "eth1", up=True)
    d1.wait_state("master", 3)
    d2.wait_state("backup", 2)
    assert d1.group()["priority"] == 150


def test_advert_interface_down_is_a_fault(topo: Topology) -> None:
    d1, d2 = pair(topo)
    topo.link("dir1", "eth0", up=False)
    d1.wait_state("fault", 2)
    d2.wait_state("master", 3)
    assert not topo.holds("dir1", NAT_GW, "eth1")  # a faulty director gives up everything
    topo.link("dir1", "eth0", up=True)
    d1.wait_state("master", 5)  # back to backup, then preempts


def test_ipv6_adverts_and_unicast_peers_with_authentication(topo: Topology) -> None:
    v6 = ['family = "ipv6"']
    d1, d2 = pair(
        topo,
        first=lvsmon_config(priority=150, group_extra=v6),
        second=lvsmon_config(priority=100, group_extra=v6),
    )
    assert d2.group()["peer"].startswith("fe80::")
    d1.kill9()
    d2.wait_state("master", 3)
    d2.terminate()

    key = 'auth = "hmac-sha256"\nauth_key = "0123456789abcdef0123"'
    u1 = lvsmon_config(priority=150, vrid=52, group_extra=[key, 'unicast_peers = ["192.0.2.3"]'])
    u2 = lvsmon_config(priority=100, vrid=52, group_extra=[key, 'unicast_peers = ["192.0.2.2"]'])
    topo2 = Topology()
    with topo2:
        e1, e2 = pair(topo2, first=u1, second=u2)
        assert e2.group()["rejected"] == {}
        e1.kill9()
        e2.wait_state("master", 3)


def test_daemon_killed_alone_its_vrrp_process_hands_over_and_exits(topo: Topology) -> None:
    """E.g. the OOM killer takes the daemon (parent) only: the data plane is gone, so
    the orphaned VRRP child must not keep the VIP; it hands over (priority 0) and exits."""
    d1, d2 = pair(topo, **{"advert": "500ms"})  # MDI 1.8 s; skew 0.3 s
    child_pids = set(topo.run_ns_pids("dir1")) - {d1.proc.pid}
    os.kill(d1.proc.pid, signal.SIGKILL)
    started = time.monotonic()
    d2.wait_state("master", 1.5)
    took = time.monotonic() - started
    assert took < 1.0, took  # the priority-0 advert, not the master down interval
    wait_for("dir1 gave up the VIP", lambda: not topo.holds("dir1"), 3)
    assert d1.listener is not None
    wait_for(
        "the VRRP child exited",
        lambda: not (set(topo.run_ns_pids("dir1")) & child_pids - {d1.listener.pid}),
        5,
    )


def test_standalone_metrics_take_the_daemons_web_config(topo: Topology) -> None:
    """`python -m lvsmon.ha --metrics-listen` serves through lvsmon.httpd, so the web
    config's basic auth protects it exactly as it protects the daemon's /metrics."""
    import bcrypt

    web = topo.workdir / "ha-web.yml"
    hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(4)).decode()
    web.write_text(f"basic_auth_users:\n  prom: {hashed}\n")
    extra = ["--metrics-listen", "127.0.0.1:9109", "--web-config-file", str(web)]
    d1 = topo.lvsmon("dir1", lvsmon_config(priority=150), extra=extra)
    d1.wait_state("master")
    probe = (
        "import base64, sys, urllib.request as u, urllib.error as e\n"
        "r = u.Request('http://127.0.0.1:9109/metrics')\n"
        "if sys.argv[1:]: r.add_header('Authorization', 'Basic ' + "
        "base64.b64encode(sys.argv[1].encode()).decode())\n"
        "try:\n    body = u.urlopen(r, timeout=5).read().decode(); print('200'); print(body)\n"
        "except e.HTTPError as x:\n    print(x.code)\n"
    )
    assert topo.in_ns("dir1", probe).splitlines()[0] == "401"
    answer = topo.in_ns("dir1", probe, "prom:s3cret").splitlines()
    assert answer[0] == "200"
    assert sample("\n".join(answer[1:]), "lvsmon_ha_state", group="edge", state="master") == 1
