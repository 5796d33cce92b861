"""DirectorView, the scrape-time collector, and the ipvsadm-style renderings."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from lvsmon import config
from lvsmon.dataplane.base import Counters, DestStats, ServiceStats, Snapshot
from lvsmon.metrics import DirectorCollector
from lvsmon.model import DestKey
from lvsmon.status import DirectorView, build_view, render_save, render_table
from lvsmon.weights.effective import weight_parts

CFG = config.loads(
    """
[[virtual_server]]
name = "web"
address = "192.0.2.10"
port = 80
persistence_timeout = "5m"
persistence_netmask = 24

[[virtual_server.real_server]]
address = "10.0.0.2"
weight = 3

[[virtual_server]]
name = "dns6"
address = "2001:db8::53"
port = 53
protocol = "udp"
scheduler = "rr"
""",
    "test.toml",
)
WEB, DNS = CFG.virtual_servers


def snapshot(with_draining: bool) -> Snapshot:
    dests = [DestStats(DestKey("10.0.0.2", 80), 3, 2, 7, 1, Counters(12, 1000, 5000))]
    if with_draining:
        dests.append(DestStats(DestKey("10.0.0.9", 80), 0, 1, 0, 0, Counters(4, 10, 20)))
    return Snapshot(
        (
            ServiceStats(WEB, Counters(16, 1010, 5020), tuple(dests)),
            ServiceStats(DNS, Counters()),
        )
    )


def registry_for(snap: Snapshot) -> CollectorRegistry:
    reg = CollectorRegistry()
    reg.register(DirectorCollector(lambda: build_view(CFG, snap)))
    return reg


def test_contract_metrics_from_a_snapshot() -> None:
    reg = registry_for(snapshot(True))
    web = {"virtual_server": "web", "real_server": "10.0.0.2:80"}
    assert reg.get_sample_value("lvsmon_real_server_connections_total", web) == 12
    assert reg.get_sample_value("lvsmon_real_server_connections_active", web) == 2
    assert reg.get_sample_value("lvsmon_real_server_connections_inactive", web) == 7
    assert reg.get_sample_value("lvsmon_real_server_incoming_bytes_total", web) == 1000
    assert reg.get_sample_value("lvsmon_real_server_outgoing_bytes_total", web) == 5000
    assert reg.get_sample_value("lvsmon_real_server_weight", web) == 3
    assert reg.get_sample_value("lvsmon_real_server_configured_weight", web) == 3
    assert reg.get_sample_value("lvsmon_real_server_up", web) == 1
    assert (
        reg.get_sample_value("lvsmon_virtual_server_connections_total", {"virtual_server": "web"})
        == 16
    )
    info = {
        "virtual_server": "dns6",
        "address": "2001:db8::53",
        "port": "53",
        "protocol": "udp",
        "scheduler": "rr",
    }
    assert reg.get_sample_value("lvsmon_virtual_server_info", info) == 1
    assert (
        reg.get_sample_value("lvsmon_build_info", {"version": "0.1.0", "dataplane": "proxy"}) == 1
    )
    # the proxy counts no packets: no packet series rather than fake zeros
    assert (
        reg.get_sample_value(
            "lvsmon_virtual_server_incoming_packets_total", {"virtual_server": "web"}
        )
        is None
    )
    # a draining server (not in the config) is programmed at weight 0 and not "up"
    drain = {"virtual_server": "web", "real_server": "10.0.0.9:80"}
    assert reg.get_sample_value("lvsmon_real_server_weight", drain) == 0
    assert reg.get_sample_value("lvsmon_real_server_configured_weight", drain) is None


def test_series_of_a_removed_real_server_disappear() -> None:
    snaps = [snapshot(True)]
    reg = CollectorRegistry()
    reg.register(DirectorCollector(lambda: build_view(CFG, snaps[0])))
    drain = {"virtual_server": "web", "real_server": "10.0.0.9:80"}
    assert reg.get_sample_value("lvsmon_real_server_connections_total", drain) == 4
    snaps[0] = snapshot(False)
    assert reg.get_sample_value("lvsmon_real_server_connections_total", drain) is None


def test_connect_failures_only_where_the_data_plane_sees_them() -> None:
    key = DestKey("10.0.0.2", 80)
    proxy = Snapshot(
        (
            ServiceStats(
                WEB, Counters(), (DestStats(key, 3, 0, 0, 0, Counters(), connect_failures=5),)
            ),
        )
    )
    web = {"virtual_server": "web", "real_server": "10.0.0.2:80"}
    name = "lvsmon_real_server_connect_failures_total"
    assert registry_for(proxy).get_sample_value(name, web) == 5
    assert registry_for(snapshot(False)).get_sample_value(name, web) is None  # IPVS: no series


def test_status_names_the_running_sync_daemons() -> None:
    running = [{"state": "master", "interface": "eth1", "syncid": 7}]
    view = build_view(CFG, snapshot(False), sync_daemons=running)
    assert DirectorView.from_json(view.to_json()) == view
    assert "master sync daemon (mcast=eth1, syncid=7)" in render_table(view).splitlines()
    assert "sync daemon" not in render_table(build_view(CFG, snapshot(False)))


def test_view_json_round_trip() -> None:
    view = build_view(CFG, snapshot(True))
    assert DirectorView.from_json(view.to_json()) == view


def test_ipvsadm_layouts() -> None:
    view = build_view(CFG, snapshot(True))
    assert render_save(view) == (
        "-A -t 192.0.2.10:80 -s wlc -p 300 -M 255.255.255.0\n"
        "-a -t 192.0.2.10:80 -r 10.0.0.2:80 -m -w 3\n"
        "-a -t 192.0.2.10:80 -r 10.0.0.9:80 -m -w 0\n"
        "-A -u [2001:db8::53]:53 -s rr\n"
    )
    table = render_table(view).splitlines()
    assert table[1] == "Prot LocalAddress:Port Scheduler Flags"
    assert table[3] == "TCP  192.0.2.10:80 wlc persistent 300 mask 255.255.255.0"
    assert table[2].split()[-5:] == ["Config", "Health", "SlowStart", "Adapt", "Effective"]
    assert table[4].split() == [
        "->",
        "10.0.0.2:80",
        "Masq",
        "3",
        "2",
        "7",
        "up",
        "3",
        "up",
        "-",
        "-",
        "3",
    ]
    assert table[5].split() == [
        "->",
        "10.0.0.9:80",
        "Masq",
        "0",
        "1",
        "0",
        "draining",
        "-",
        "-",
        "-",
        "-",
        "-",
    ]
    assert table[6] == "UDP  [2001:db8::53]:53 rr"


def test_status_shows_each_weight_factor_in_its_own_column() -> None:
    """Configured x health x slow start x adaptive = effective, one column each."""
    key = (WEB.key, DestKey("10.0.0.2", 80))
    parts = weight_parts([WEB], slow_start={key: 0.5}, adaptive={key: 0.8})
    view = build_view(CFG, snapshot(False), weight_parts=parts)
    assert DirectorView.from_json(view.to_json()) == view  # survives /status
    row = render_table(view).splitlines()[4].split()
    # weight 3 ramps, so the ratio scheduler's weights are x100 (lvsmon.weights.effective)
    assert row[7:] == ["3", "up", "50%", "0.80", "120"]
    down = build_view(
        CFG, snapshot(False), frozenset({key}), weight_parts=weight_parts([WEB], down=[key])
    )
    assert render_table(down).splitlines()[4].split()[6:] == ["down", "3", "down", "-", "-", "0"]
