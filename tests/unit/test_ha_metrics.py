"""The lvsmon_ha_* collector: DESIGN.md's names and labels, from GroupStatus snapshots."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from lvsmon.ha.metrics import HACollector
from lvsmon.ha.status import GroupStatus

STATUS = GroupStatus(
    name="edge",
    vrid=51,
    interface="eth0",
    state="master",
    priority=150,
    configured_priority=150,
    source="192.0.2.2",
    master="192.0.2.2",
    peer="192.0.2.3",
    peer_priority=100,
    peer_last_advert=1795000000.5,
    since=1795000000.0,
    adverts_sent=42,
    adverts_received=3,
    rejected={"ttl": 2},
    transitions={"backup": 1, "master": 1},
)


def registry(*groups: GroupStatus) -> CollectorRegistry:
    reg = CollectorRegistry()
    reg.register(HACollector(lambda: groups))
    return reg


def test_samples() -> None:
    reg = registry(STATUS)
    value = reg.get_sample_value
    assert value("lvsmon_ha_state", {"group": "edge", "state": "master"}) == 1
    assert value("lvsmon_ha_state", {"group": "edge", "state": "backup"}) == 0
    assert value("lvsmon_ha_state", {"group": "edge", "state": "fault"}) == 0
    assert value("lvsmon_ha_priority", {"group": "edge"}) == 150
    assert value("lvsmon_ha_adverts_sent_total", {"group": "edge"}) == 42
    assert value("lvsmon_ha_adverts_received_total", {"group": "edge"}) == 3
    assert value("lvsmon_ha_adverts_rejected_total", {"group": "edge", "reason": "ttl"}) == 2
    assert value("lvsmon_ha_adverts_rejected_total", {"group": "edge", "reason": "vrid"}) == 0
    assert value("lvsmon_ha_transitions_total", {"group": "edge", "to": "master"}) == 1
    assert value("lvsmon_ha_transitions_total", {"group": "edge", "to": "fault"}) == 0
    assert value("lvsmon_ha_peer_last_advert_timestamp_seconds", {"group": "edge"}) == 1795000000.5


def test_no_groups_no_series_and_text_format() -> None:
    assert b"lvsmon_ha_state{" not in generate_latest(registry())
    text = generate_latest(registry(STATUS)).decode()
    assert "# TYPE lvsmon_ha_adverts_sent_total counter" in text
    assert 'lvsmon_ha_state{group="edge",state="master"} 1.0' in text


def test_status_round_trips_json() -> None:
    assert GroupStatus.from_json(STATUS.to_json()) == STATUS


def test_status_lines_for_lvsmon_status() -> None:
    import dataclasses
    import time

    from lvsmon.ha.status import render

    lowered = dataclasses.replace(STATUS, priority=90)
    lines = render([lowered], now=STATUS.peer_last_advert + 0.25)
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(STATUS.since))
    assert lines == [
        f"Failover group edge (vrid 51 on eth0): MASTER since {since}, priority 90 "
        "(configured 150)",
        "  peer 192.0.2.3 priority 100, last advert 0.2s ago",
        "  adverts sent 42, received 3, rejected 2 (ttl 2)",
    ]


def test_status_says_whose_connections_a_new_master_forwards() -> None:
    import dataclasses

    from lvsmon.ha.status import render

    forwarding = dataclasses.replace(STATUS, forwarding_to="192.0.2.2")
    lines = render([forwarding], now=STATUS.peer_last_advert)
    assert "  forwarding connections it never saw to 192.0.2.2 (handover)" in lines
    assert GroupStatus.from_json(forwarding.to_json()) == forwarding
    assert not any("forwarding" in line for line in render([STATUS], now=0))
