"""Tracking: what lowers a group's priority or sends it to FAULT (pure)."""

from __future__ import annotations

import dataclasses
import ipaddress

from lvsmon.ha.tracking import LinkProbe, evaluate, tracked_interfaces
from lvsmon.model.failover import FailoverGroup, GroupAddress, TrackInterface, TrackRealServers

GROUP = FailoverGroup(
    name="edge",
    vrid=51,
    interface="eth0",
    family=4,
    priority=150,
    addresses=(GroupAddress(ipaddress.ip_address("192.0.2.100"), 24, "eth0"),),
    track_interfaces=(TrackInterface("eth1", -100), TrackInterface("bond0", 0)),
    track_real_servers=TrackRealServers(0.5, -60, ("web",)),
)


def test_nothing_down_nothing_lowered() -> None:
    assert evaluate(GROUP, set(), {}) == (150, False)
    assert tracked_interfaces(GROUP) == ("eth0", "eth1", "bond0")


def test_interface_weights_and_fault() -> None:
    assert evaluate(GROUP, {"eth1"}, {}) == (50, False)
    assert evaluate(GROUP, {"bond0"}, {}) == (150, True)
    assert evaluate(GROUP, {"eth0"}, {}) == (150, True)  # the advert interface, implicitly


def test_real_server_fraction_below_threshold_lowers_priority() -> None:
    assert evaluate(GROUP, set(), {"web": (2, 4)}) == (150, False)  # 0.5 is not below 0.5
    assert evaluate(GROUP, set(), {"web": (1, 4)}) == (90, False)
    assert evaluate(GROUP, set(), {"other": (0, 4), "web": (4, 4)}) == (150, False)
    everything = dataclasses.replace(GROUP, track_real_servers=TrackRealServers(0.5, -60))
    assert evaluate(everything, set(), {"other": (0, 4), "web": (1, 4)}) == (90, False)


def test_priority_stays_within_1_and_254() -> None:
    assert evaluate(GROUP, {"eth1"}, {"web": (0, 4)}) == (1, False)
    owner = dataclasses.replace(GROUP, priority=255, track_interfaces=(), track_real_servers=None)
    assert evaluate(owner, set(), {}) == (255, False)


def test_link_probe_sees_loopback_and_not_a_missing_interface() -> None:
    probe = LinkProbe()
    try:
        assert not probe.is_up("nosuchif0")
        assert probe.down(["nosuchif0"]) == {"nosuchif0"}
    finally:
        probe.close()
