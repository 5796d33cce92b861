"""Active-active directors over BGP: three lvsmon directors, each with its own BIRD,
a BIRD router merging their routes into one ECMP route (tests/netns/fleet.py).
d1 and d2 also run a VRRP failover group for the real servers' NAT gateway
(tests/netns/fleet_gateway.py), so every test runs the combination.

One fleet for the module; the tests run in order and each leaves it healthy
(all three directors announcing, d2 holding the gateway).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

from tests.integration.test_prometheus_e2e import (
    EXEMPT,
    NEEDS_BGP,
    alert_names,
    panel_problems,
    template_values,
    until_clean,
    variable_settings,
)
from tests.netns import fleet_gateway as gw
from tests.netns import fleet_picture
from tests.netns.fleet import (
    BACK,
    TOOLS,
    VIP,
    VIP2,
    Fleet,
    FleetDirector,
    director_back,
    director_of,
    director_up,
    parse_flows,
)
from tests.netns.fleet_picture import DirectorFacts
from tests.netns.fleet_prometheus import FleetPrometheus
from tests.netns.topology import PYTHON, REPO, run, wait_for

ALL = {"d1", "d2", "d3"}
FETCH = "import sys, urllib.request as u; print(u.urlopen(sys.argv[1], timeout=5).read().decode())"


@pytest.fixture(scope="module")
def fleet() -> Iterator[Fleet]:
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if os.geteuid() != 0 or missing:
        pytest.fail(f"BGP fleet needs root and {missing} (scripts/install-test-deps)")
    with Fleet(gateway_pair=("d2", "d1")) as f:
        for d in f.directors:  # real servers not started yet: nothing may be announced
            f.lvsmon(d, f.director_config(d))
        yield f


@pytest.fixture(scope="module")
def prometheus(fleet: Fleet, tmp_path_factory: pytest.TempPathFactory) -> FleetPrometheus:
    return FleetPrometheus(fleet, tmp_path_factory.mktemp("prometheus"))


def healthy(fleet: Fleet) -> None:
    fleet.wait_next_hops(ALL)


def reason(d: FleetDirector, why: str, vip: str = VIP, vs: str = "vs1") -> bool:
    return d.sample("lvsmon_bgp_vip_reason", vip=vip, virtual_server=vs, reason=why) == 1


def established(d: FleetDirector) -> bool:
    return d.sample("lvsmon_bgp_session_up", peer="router") == 1


def status_text(fleet: Fleet, d: FleetDirector) -> str:
    """`lvsmon status -c` run on the director (its config names metrics_listen)."""
    assert d.config_path is not None
    argv = [PYTHON, "-m", "lvsmon.cli", "status", "-c", str(d.config_path)]
    return run(*fleet.exec_argv(d.name, argv), check=False)


def vrrp_master(d: FleetDirector) -> bool:
    return d.sample("lvsmon_ha_state", group=gw.GROUP, state="master") == 1


def test_routes_appear_only_when_healthy(
    fleet: Fleet, prometheus: FleetPrometheus, tmp_path: Path
) -> None:
    for d in fleet.directors:
        wait_for(f"{d.name} established", partial(established, d), 20, 0.2)
        wait_for(f"{d.name} judged", partial(reason, d, "too_few_real_servers"), 10, 0.2)
        assert d.sample("lvsmon_bgp_vip_announced", vip=VIP) == 0
    assert fleet.next_hops() == set(), "a VIP without a real server in service was announced"
    for rs in ("rs1", "rs2"):
        fleet.real_server(rs)
    healthy(fleet)
    for d in fleet.directors:
        assert reason(d, "serving")
        assert d.sample("lvsmon_bgp_vip_announced", vip=VIP) == 1
    # the status page's BGP section: /status.json "bgp"
    d1 = fleet.directors[0]
    doc = json.loads(fleet.in_ns("d1", FETCH, f"http://{d1.address}:{d1.metrics_port}/status.json"))
    (row,) = doc["bgp"]
    assert (row["prefix"], row["state"]) == (f"{VIP}/32", "announced"), row
    assert row["peers"][0]["state"] == "established" and row["why"].startswith("serving")
    # ... and `lvsmon status`, the ipvsadm-style text: phase, session, VIP and why
    text = status_text(fleet, d1)
    assert "BGP via bird (answering): ACTIVE since" in text, text
    assert f"  peer router {director_up(1)[0]}: established" in text, text
    assert f"  {VIP}/32 announced: serving: 2 of 2 in service (vs1)" in text, text
    assert f"Failover group {gw.GROUP} (vrid {gw.VRID} on {gw.BACK_IF}): BACKUP" in text, text
    # ECMP with L4 hashing spreads one client's connections over every director ...
    proc = fleet.flows(workers=8, count=600, hold_ms=0)
    results = fleet.results(proc)
    assert len(results) == 600 and all(ok for _, ok, _ in results), Counter(
        a for _, ok, a in results if not ok
    )
    share = Counter(director_of(a) for _, _, a in results)
    assert set(share) == ALL, share
    # ... and every director computed the same Maglev table from the same config
    prints = {
        d.name: d.sample("lvsmon_scheduling_table_fingerprint", virtual_server="vs1")
        for d in fleet.directors
    }
    assert len(set(prints.values())) == 1 and None not in prints.values(), prints
    # the README picture, from this run (make fleet-png keeps it: LVSMON_FLEET_PNG)
    out = Path(os.environ.get("LVSMON_FLEET_PNG") or tmp_path / "fleet.png")
    hops = fleet.next_hops()
    facts = [
        DirectorFacts(
            d.name,
            d.address,
            director_back(d.index),
            d.name in hops,
            established(d),
            share[d.name] / len(results),
            ("master" if vrrp_master(d) else "backup") if d.name in fleet.gateway_pair else "",
        )
        for d in fleet.directors
    ]
    fleet_picture.draw(
        fleet.layout(), facts, out, f"{len(results)} connections, 8 concurrent client loops"
    )
    assert out.stat().st_size > 10_000


def test_director_without_real_servers_withdraws(fleet: Fleet, prometheus: FleetPrometheus) -> None:
    healthy(fleet)
    d1 = fleet.directors[0]
    # d1 alone loses its real servers (its back link drops everything): only its route goes
    fleet.nft(
        "d1",
        "table ip cut {\n chain out { type filter hook output priority 0; "
        f"ip daddr {BACK}.0/24 drop; }}\n}}\n",
    )
    try:
        fleet.wait_next_hops({"d2", "d3"})
        wait_for("d1 says why", lambda: reason(d1, "too_few_real_servers"), 10, 0.2)
        assert d1.sample("lvsmon_bgp_vip_announced", vip=VIP) == 0
        assert d1.lvsmon is not None and d1.lvsmon.alive()
        # the Fleet row's panels that the integration tier cannot feed have data here
        held = 'lvsmon_bgp_vip_reason{reason="too_few_real_servers"} == 1'
        prometheus.wait(held, 30, "Prometheus sees d1 hold the VIP back")
        settings = variable_settings(template_values(prometheus))
        needs = lambda q: EXEMPT.get((q.board, q.panel)) == NEEDS_BGP  # noqa: E731
        left = until_clean(lambda: panel_problems(prometheus.query_all, settings, needs), 20)
        assert not left, "\n".join(left)
        rules = [r for g in prometheus.api("/api/v1/rules")["data"]["groups"] for r in g["rules"]]
        assert {r["name"] for r in rules} == alert_names()
        for rule, body in zip(
            rules, prometheus.query_all([r["query"] for r in rules]), strict=True
        ):
            assert body["status"] == "success", (rule["name"], body)
    finally:
        fleet.nft("d1", "delete table ip cut\n")
    healthy(fleet)


def test_sighup_adds_and_removes_a_vip_differentially(fleet: Fleet) -> None:
    healthy(fleet)
    d1 = fleet.directors[0]
    assert d1.config_path is not None and d1.lvsmon is not None
    since = fleet.session_since("d1")
    d1.config_path.write_text(fleet.director_config(d1, vips=(VIP, VIP2)))
    os.kill(d1.lvsmon.pid, signal.SIGHUP)
    fleet.wait_next_hops({"d1"}, prefix=VIP2)
    assert fleet.next_hops() == ALL
    d1.config_path.write_text(fleet.director_config(d1))
    os.kill(d1.lvsmon.pid, signal.SIGHUP)
    fleet.wait_next_hops(set(), prefix=VIP2)
    assert fleet.next_hops() == ALL
    # the BGP session to the router never restarted: only the static routes changed
    assert fleet.session_since("d1") == since


def test_graceful_drain_loses_no_connection(fleet: Fleet) -> None:
    healthy(fleet)
    d2 = fleet.directors[1]
    assert d2.config_path is not None and d2.lvsmon is not None
    flows = fleet.flows(workers=32, count=3000, hold_ms=50)
    wait_for("flows running", lambda: len(parse_flows(flows.output())) >= 300, 60, 0.05)
    drain = subprocess.Popen(
        [PYTHON, "-m", "lvsmon.cli", "drain", "-c", str(d2.config_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    wait_for("lvsmon status: d2 draining", lambda: "DRAINING since" in status_text(fleet, d2), 10)
    assert f"{VIP}/32 draining: serving" in status_text(fleet, d2)
    assert gw.holders(fleet) == {"d2"}  # the gateway's VRRP master: kept while it drains
    # first less preferred: the router still has d2's route (MED 1000, AS path prepended)
    # but leaves it out of the ECMP set, while d2 keeps serving what it holds
    fleet.wait_next_hops({"d1", "d3"})
    assert d2.lvsmon.alive()
    assert "BGP.med: 1000" in fleet.routerc("show", "route", "all", f"{VIP}/32", "protocol", "d2")
    said, _ = drain.communicate(timeout=60)
    assert drain.returncode == 0 and "drained and stopped" in said, said
    # drained, then stopped: handed the gateway over (priority 0) before exiting
    assert gw.holders(fleet) == {"d1"} and vrrp_master(fleet.directors[0])
    results = fleet.results(flows)
    failed = [a for _, ok, a in results if not ok]
    assert len(results) == 3000 and not failed, Counter(failed)
    assert d2.lvsmon.popen.wait(5) == 0
    log = d2.lvsmon.output()
    assert log.index("draining") < log.index("drain complete"), log
    assert Counter(director_of(a) for _, _, a in results)["d2"] > 0
    assert "192.0.2.100" not in fleet.routerc("show", "route", "protocol", "d2")  # withdrawn
    fleet.lvsmon(d2, d2.config_path.read_text())
    healthy(fleet)
    wait_for("d2 VRRP master again (preempts)", lambda: vrrp_master(d2), 10, 0.1)


def test_kill9_withdraws_and_a_routing_daemon_restart_announces_nothing(fleet: Fleet) -> None:
    healthy(fleet)
    d3 = fleet.directors[2]
    killed = time.monotonic()
    d3.kill9()  # lvsmon only: d3's BIRD keeps running and keeps its session
    fleet.wait_next_hops({"d1", "d2"})
    print(f"route withdrawn {time.monotonic() - killed:.3f}s after kill -9")
    assert d3.bird is not None and d3.bird.alive()
    assert "route 192.0.2.100/32" in d3.include_file.read_text(), "the fragment still lists it"
    # BIRD restarts and reads that fragment, but lvsmon's device is gone: nothing announced
    fleet.stop_bird(d3)
    fleet.start_bird(d3)
    wait_for(
        "d3 BIRD re-established",
        lambda: "Established" in fleet.routerc("show", "protocols", "d3"),
        30,
        0.1,
    )
    time.sleep(1.0)
    assert fleet.next_hops() == {"d1", "d2"}
    assert "lvsmon_router" in d3.birdc("show", "protocols")
    # lvsmon back: it withdraws the stale fragment before its device exists, then announces
    assert d3.config_path is not None
    fleet.lvsmon(d3, d3.config_path.read_text())
    healthy(fleet)


def test_vrrp_moves_the_gateway_while_bgp_announces_the_vips(fleet: Fleet) -> None:
    """Issue 13, item 4: d2 (VRRP master of the gateway) killed: the gateway moves to d1
    by VRRP, d2's route is withdrawn, clients keep connecting through d1 and d3."""
    healthy(fleet)
    d1, d2, _ = fleet.directors
    for d in fleet.directors:
        assert d.sample("lvsmon_bgp_vip_announced", vip=VIP) == 1, d.name
    wait_for("d2 VRRP master", lambda: vrrp_master(d2), 10, 0.1)
    assert not vrrp_master(d1) and gw.holders(fleet) == {"d2"}
    mac2, mac1, rs1 = gw.mac(fleet, "d2"), gw.mac(fleet, "d1"), gw.mac(fleet, "rs1", "eth0")
    assert gw.resolve(fleet, "rs1") == mac2, "rs1's ARP request for its gateway: d2 answers"
    watch = gw.ArpWatch(fleet, "rs1")
    try:
        flows = fleet.flows(workers=8, count=1_000_000, hold_ms=20, seconds=120)
        wait_for("flows running", lambda: len(parse_flows(flows.output())) >= 100, 60, 0.05)
        killed = time.monotonic()
        d2.kill9()  # lvsmon and its VRRP process; d2's BIRD keeps running
        fleet.wait_next_hops({"d1", "d3"})
        withdrawn = time.monotonic()
        wait_for("d1's gratuitous ARP at rs1", lambda: watch.gratuitous(mac1), 5, 0.02)
        wait_for("d1 VRRP master", lambda: vrrp_master(d1), 5, 0.1)

        def after_withdrawal() -> int:
            return sum(1 for t, _, _ in parse_flows(flows.output()) if t > withdrawn)

        wait_for("connections after the withdrawal", lambda: after_withdrawal() >= 200, 60, 0.1)
        flows.popen.terminate()
        flows.popen.wait(10)
        print(
            f"kill -9 of d2: route withdrawn after {withdrawn - killed:.3f}s, gateway "
            f"announced by d1 after {watch.gratuitous(mac1)[0] - killed:.3f}s"
        )
        results = parse_flows(flows.output())
        before = Counter(director_of(a) for t, ok, a in results if ok and t < killed)
        assert set(before) == ALL, before
        after = [(ok, a) for t, ok, a in results if t > withdrawn]
        assert all(ok for ok, _ in after), Counter(a for ok, a in after if not ok)
        assert {director_of(a) for _, a in after} == {"d1", "d3"}
        # rs1 asked nothing: its entry moved with d1's gratuitous ARP
        assert gw.neighbour(fleet, "rs1") == mac1
        assert not [t for t, _ in watch.frames(rs1) if t > killed]
        assert "d1" in gw.holders(fleet)  # (and d2's, left by its killed VRRP process)
        assert d2.bird is not None and d2.bird.alive()
        assert "Established" in fleet.routerc("show", "protocols", "d2")  # BIRD's session
        assert VIP not in fleet.routerc("show", "route", "protocol", "d2")
        # d2 back: it drops the address its killed VRRP process left, preempts, announces
        assert d2.config_path is not None
        fleet.lvsmon(d2, d2.config_path.read_text())
        healthy(fleet)
        wait_for("d2's gratuitous ARP at rs1", lambda: watch.gratuitous(mac2), 15, 0.05)
        wait_for("d2 alone holds the gateway", lambda: gw.holders(fleet) == {"d2"}, 10, 0.1)
        assert gw.neighbour(fleet, "rs1") == mac2
    finally:
        watch.stop()
