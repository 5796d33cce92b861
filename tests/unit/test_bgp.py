"""BGP scale-out, pure parts: [bgp] reading and its cross-checks, the serving predicate,
the BIRD fragment (parsed by the real BIRD), session parsing, the table fingerprint."""

from __future__ import annotations

import dataclasses
import ipaddress
import shutil
import subprocess
from pathlib import Path

import pytest

from lvsmon import config
from lvsmon.bgp.bird import parse_protocols, render
from lvsmon.bgp.fingerprint import fingerprint
from lvsmon.bgp.plan import plan_of
from lvsmon.dataplane.base import Counters, DestStats, ServiceStats
from lvsmon.dataplane.registry import capabilities_of
from lvsmon.model import DestKey, RealServer, VirtualServer
from lvsmon.model.bgp import BgpSettings, Peer
from lvsmon.serving import Facts, Reason, Verdict, by_address, can_serve, facts_of

ROOT = Path(__file__).resolve().parents[2]
VIP = ipaddress.ip_address("192.0.2.100")

BASE = """
[[virtual_server]]
name = "web"
address = "192.0.2.100"
port = 80
scheduler = "mh"
on_failure = "quiesce"
announce = true

[[virtual_server.real_server]]
address = "198.51.100.11"
"""
BGP = """
[bgp]
local_as = 65001

[[bgp.peer]]
name = "tor1"
address = "10.0.0.1"
remote_as = 65000
"""


def errors(text: str) -> list[str]:
    with pytest.raises(config.ConfigError) as info:
        config.loads(text, "f.toml")
    return [p.render("f.toml") for p in info.value.problems]


def test_example_reads_every_key() -> None:
    cfg = config.load(ROOT / "config/bgp-scaleout.toml")
    bgp = cfg.bgp
    assert bgp is not None and cfg.virtual_servers[0].announce
    assert bgp.local_as == 65001 and str(bgp.router_id) == "10.0.0.2"
    assert bgp.communities == ((65001, 100),) and bgp.healthy_threshold == 1
    assert (bgp.drain.period, bgp.drain.med, bgp.drain.prepend) == (30.0, 1000, 2)
    assert bgp.drain.communities == ((65535, 0),) and bgp.bfd.interval == 0.1
    (peer,) = bgp.peers
    assert (peer.name, str(peer.address), peer.remote_as, peer.bfd, peer.hold_time) == (
        "tor1",
        "10.0.0.1",
        65000,
        True,
        9.0,
    )


def test_minimal_defaults() -> None:
    bgp = config.loads(BASE + BGP).bgp
    assert bgp is not None
    assert bgp.liveness_interface == "lvsmon0" and bgp.next_hop is None
    assert bgp.include_file == "/run/lvsmon/bird-lvsmon.conf"


@pytest.mark.parametrize(
    ("text", "want"),
    [
        (BASE, "virtual_server[web].announce: true needs a [bgp] table"),
        (
            BASE.replace('on_failure = "quiesce"\n', "") + BGP,
            'virtual_server[web].on_failure: "remove" with scheduler "mh" and announce = true',
        ),
        (
            BASE + BGP.replace('"10.0.0.1"', '"2001:db8::1"'),
            "virtual_server[web].announce: true, but no [[bgp.peer]] is IPv4",
        ),
        (
            BASE
            + BGP
            + '[[failover_group]]\nname = "edge"\nvrid = 1\ninterface = "eth0"\n'
            + '[[failover_group.address]]\naddress = "192.0.2.100/24"\n',
            "virtual_server[web].announce: true, but 192.0.2.100 is also an address of "
            "failover_group[edge]",
        ),
        (BASE + BGP.replace("65000", "0"), "bgp.peer[tor1].remote_as: 0 is not valid"),
        (BASE + BGP + '[bgp.drain]\ncommunities = ["65536:1"]\n', "bgp.drain.communities"),
        (BASE + BGP + "[bgp.drain]\nmde = 1\n", 'bgp.drain.mde: unknown key (did you mean "med"?)'),
        (
            BASE + BGP.replace("local_as = 65001", 'local_as = 65001\nrouter_id = "::1"'),
            "bgp.router_id",
        ),
        (BASE + "[bgp]\nlocal_as = 65001\n", "bgp.peer: missing"),
        (
            BASE + BGP + BGP.replace("[bgp]\nlocal_as = 65001\n", ""),
            'bgp.peer[tor1].name: "tor1" is used by two peers',
        ),
        (BASE + BGP.replace('"tor1"', '"tor1"\nhold_time = "1s"'), "bgp.peer[tor1].hold_time: 1s"),
        (BASE + BGP + '[bgp.bfd]\ninterval = "1ms"\n', "bgp.bfd.interval"),
    ],
)
def test_errors_name_the_key(text: str, want: str) -> None:
    assert any(want in e for e in errors(text)), errors(text)


def test_fwmark_cannot_be_announced() -> None:
    text = BASE.replace('address = "192.0.2.100"\nport = 80\n', "fwmark = 7\n") + BGP
    assert any("a fwmark virtual server without an address" in e for e in errors(text))


# --- the predicate ---


@pytest.mark.parametrize(
    ("facts", "threshold", "reason"),
    [
        (Facts(True, 2, 2), 1, Reason.SERVING),
        (Facts(True, 1, 2), 2, Reason.TOO_FEW_REAL_SERVERS),
        (Facts(True, 0, 2), 1, Reason.TOO_FEW_REAL_SERVERS),
        (Facts(False, 0, 2), 1, Reason.NOT_PROGRAMMED),
        (Facts(True, 2, 2, drained=True), 1, Reason.DRAINED),
        (Facts(False, 0, 0, drained=True), 1, Reason.DRAINED),
    ],
)
def test_can_serve(facts: Facts, threshold: int, reason: Reason) -> None:
    verdict = can_serve(facts, threshold)
    assert verdict.reason is reason and verdict.ok == (reason is Reason.SERVING)
    assert verdict.detail


def _vs(name: str = "web", port: int = 80, n: int = 2, scheduler: str = "mh") -> VirtualServer:
    reals = tuple(RealServer(ipaddress.ip_address(f"198.51.100.{11 + i}"), 80) for i in range(n))
    return VirtualServer(name, VIP, port, scheduler=scheduler, real_servers=reals)


def test_facts_count_weight_and_health_not_the_sorry_server() -> None:
    vs = _vs()
    a, b = (rs.key for rs in vs.real_servers)
    dests = (
        DestStats(a, 1, 0, 0, 0, Counters()),
        DestStats(b, 0, 0, 0, 0, Counters()),  # quiesced
        DestStats(DestKey("10.0.0.9", 80), 1, 0, 0, 0, Counters()),  # sorry server
    )
    stats = ServiceStats(vs, Counters(), dests)
    held = [(d.key, d.weight) for d in stats.dests]
    assert facts_of(vs, held, set()) == Facts(True, 1, 2)
    assert facts_of(vs, held, {(vs.key, a)}) == Facts(True, 0, 2)
    assert facts_of(vs, None, set()) == Facts(False, 0, 2)


def test_an_address_serves_only_when_every_port_does() -> None:
    web, tls = _vs("web", 80), _vs("tls", 443)
    yes, no = Verdict(Reason.SERVING), Verdict(Reason.TOO_FEW_REAL_SERVERS)
    assert by_address([(web, yes), (tls, yes)]) == {VIP: (yes, "web")}
    assert by_address([(web, yes), (tls, no)]) == {VIP: (no, "tls")}
    assert by_address([(web, no), (tls, yes)]) == {VIP: (no, "web")}


# --- the BIRD fragment ---


def _settings(**kw: object) -> BgpSettings:
    peers = (
        Peer("tor1", ipaddress.ip_address("10.0.0.1"), 65000, bfd=True),
        Peer("tor-v6", ipaddress.ip_address("2001:db8::1"), 65000, hold_time=0),
    )
    return dataclasses.replace(BgpSettings(65001, peers), **kw)  # type: ignore[arg-type]


def test_fragment_binds_routes_to_the_liveness_device() -> None:
    vips = {VIP, ipaddress.ip_address("2001:db8::100")}
    text = render(plan_of(_settings(), vips))
    assert 'route 192.0.2.100/32 via "lvsmon0";' in text
    assert 'route 2001:db8::100/128 via "lvsmon0";' in text
    assert text.count("check link on;") == 2
    assert "protocol bgp lvsmon_tor1 {" in text and "protocol bgp lvsmon_tor_v6 {" in text
    assert "bfd on;" in text and "protocol bfd lvsmon_bfd" in text
    assert "bgp_med" not in text
    drained = render(plan_of(_settings(), vips, draining=True))
    assert "bgp_med = 1000;" in drained and "bgp_community.add((65535,0));" in drained
    # only the filter differs: the BGP protocols, and so their sessions, are untouched
    changed = {line for line in drained.splitlines()} ^ {line for line in text.splitlines()}
    assert all(line.strip().startswith(("bgp_", "#")) for line in changed), changed


@pytest.mark.parametrize("draining", [False, True])
def test_bird_parses_the_fragment(tmp_path: Path, draining: bool) -> None:
    bird = shutil.which("bird")
    assert bird is not None, "bird (Debian bird2) missing: scripts/install-test-deps"
    fragment = tmp_path / "lvsmon.conf"
    settings = _settings(
        communities=((65001, 7),),
        router_id=ipaddress.ip_address("10.0.0.2"),
        next_hop=ipaddress.ip_address("10.0.0.2"),
    )
    fragment.write_text(render(plan_of(settings, {VIP}, draining=draining)))
    main = tmp_path / "bird.conf"
    main.write_text(f'protocol device {{ }}\ninclude "{fragment}";\n')
    result = subprocess.run([bird, "-p", "-c", str(main)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr + fragment.read_text()


def test_sessions_from_show_protocols() -> None:
    text = """BIRD 2.0.12 ready.
Name       Proto      Table      State  Since         Info
device1    Device     ---        up     09:50:22.270
lvsmon_tor1 BGP       ---        up     09:50:26.809  Established
lvsmon_tor2 BGP       ---        start  09:50:26.809  Active        Socket: Connection refused
other      BGP        ---        up     09:50:26.809  Established
"""
    peers = {"lvsmon_tor1": "tor1", "lvsmon_tor2": "tor2", "lvsmon_tor3": "tor3"}
    got = {s.peer: (s.state, s.up) for s in parse_protocols(text, peers)}
    assert got == {
        "tor1": ("established", True),
        "tor2": ("idle", False),
        "tor3": ("down", False),
    }


# --- the fingerprint ---


def test_fingerprint_follows_the_table_not_the_object() -> None:
    vs = _vs(n=3)
    assert fingerprint(vs) == fingerprint(dataclasses.replace(vs, name="other"))
    reordered = dataclasses.replace(vs, real_servers=vs.real_servers[::-1])
    assert fingerprint(vs) != fingerprint(reordered)  # mh slots depend on list order
    heavier = dataclasses.replace(
        vs, real_servers=(dataclasses.replace(vs.real_servers[0], weight=5), *vs.real_servers[1:])
    )
    assert fingerprint(vs) != fingerprint(heavier)
    wlc = _vs(n=3, scheduler="wlc")
    assert fingerprint(wlc) == fingerprint(dataclasses.replace(wlc, name="x"))
    assert fingerprint(wlc) != fingerprint(
        dataclasses.replace(wlc, real_servers=wlc.real_servers[:2])
    )


def test_announced_on_ipvs_needs_sloppy_tcp() -> None:
    ipvs = '[daemon]\ndataplane = "ipvs"\n'
    got = errors(ipvs + BASE + BGP)
    assert any(e.startswith("f.toml: daemon.ipvs.sysctl.sloppy_tcp: false, but") for e in got), got
    fixed = ipvs + "[daemon.ipvs.sysctl]\nsloppy_tcp = true\n" + BASE + BGP
    cfg = config.loads(fixed, "f.toml", capabilities_of("proxy"))
    assert cfg.daemon.ipvs.sysctl.sloppy_tcp


def test_status_rows_for_the_status_page() -> None:
    from lvsmon.bgp.announcer import BgpStatus, Phase, VipStatus, status_rows
    from lvsmon.bgp.plan import Session

    settings = _settings()
    serving = VipStatus(VIP, "web", Verdict(Reason.SERVING, "2 of 2 in service"), True)
    v6 = ipaddress.ip_address("2001:db8::100")
    held = VipStatus(v6, "web6", Verdict(Reason.TOO_FEW_REAL_SERVERS, "0 of 2"), False)
    sessions = (Session("tor1", "established", True), Session("tor-v6", "active"))
    status = BgpStatus(Phase.DRAINING, 1.0, sessions, (serving, held), "bird", True, 1, 0, "")
    rows = status_rows(status, settings)
    assert [r["prefix"] for r in rows] == ["192.0.2.100/32", "2001:db8::100/128"]
    assert [r["state"] for r in rows] == ["draining", "withdrawn"]
    assert rows[1]["why"] == "too_few_real_servers: 0 of 2 (web6)"
    assert rows[0]["next_hop"] == "self"
    assert rows[0]["peers"][0] == {"name": "tor1", "address": "10.0.0.1", "state": "established"}
