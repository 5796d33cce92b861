"""Scrape-time collector for the BGP announcer and the fleet's scheduling fingerprint.

Each director exports its own view; the fleet is compared in PromQL, e.g.
directors disagreeing on a virtual server's scheduling table:

    max by (virtual_server) (lvsmon_scheduling_table_fingerprint)
      != min by (virtual_server) (lvsmon_scheduling_table_fingerprint)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from lvsmon.bgp.announcer import PHASES, BgpStatus
from lvsmon.bgp.plan import SESSION_STATES
from lvsmon.serving import REASONS

Fingerprints = Callable[[], dict[str, int]]


class BgpCollector(Collector):
    def __init__(self, status: Callable[[], BgpStatus | None], fingerprints: Fingerprints):
        self._status = status
        self._fingerprints = fingerprints

    def collect(self) -> Iterator[Metric]:
        fp = GaugeMetricFamily(
            "lvsmon_scheduling_table_fingerprint",
            "48-bit hash of the programmed scheduling table (mh/sh/dh lookup table, else real "
            "servers and weights): equal on directors that pick the same real server per flow",
            labels=["virtual_server"],
        )
        for name, value in sorted(self._fingerprints().items()):
            fp.add_metric([name], value)
        yield fp
        status = self._status()
        if status is None:
            return
        up = GaugeMetricFamily(
            "lvsmon_bgp_session_up",
            "1 while the BGP session to the peer is established",
            labels=["peer"],
        )
        state = GaugeMetricFamily(
            "lvsmon_bgp_session_state",
            "1 for the BGP session's current state (RFC 4271, lower case; down: not running)",
            labels=["peer", "state"],
        )
        for s in status.sessions:
            up.add_metric([s.peer], 1 if s.up else 0)
            for name in SESSION_STATES:
                state.add_metric([s.peer, name], 1 if s.state == name else 0)
        announced = GaugeMetricFamily(
            "lvsmon_bgp_vip_announced",
            "1 while the routing daemon announces the VIP from this director",
            labels=["vip"],
        )
        reason = GaugeMetricFamily(
            "lvsmon_bgp_vip_reason",
            "1 for why the VIP is (serving) or is not announced, naming the virtual server",
            labels=["vip", "virtual_server", "reason"],
        )
        for v in status.vips:
            announced.add_metric([str(v.address)], 1 if v.announced else 0)
            for r in REASONS:
                reason.add_metric(
                    [str(v.address), v.virtual_server, r.value], 1 if v.verdict.reason is r else 0
                )
        phase = GaugeMetricFamily(
            "lvsmon_bgp_drain_state",
            "1 for the director's announcement phase: active, draining (less preferred), withdrawn",
            labels=["state"],
        )
        for p in PHASES:
            phase.add_metric([p.value], 1 if status.phase is p else 0)
        since = GaugeMetricFamily(
            "lvsmon_bgp_drain_state_since_timestamp_seconds", "Unix time the current phase began"
        )
        since.add_metric([], status.phase_since)
        daemon_up = GaugeMetricFamily(
            "lvsmon_bgp_routing_daemon_up",
            "1 if the routing daemon answered lvsmon's last request",
            labels=["routing_daemon"],
        )
        daemon_up.add_metric([status.routing_daemon], 1 if status.routing_daemon_up else 0)
        errors = CounterMetricFamily(
            "lvsmon_bgp_routing_daemon_errors",
            "Requests to the routing daemon that failed (retried)",
            labels=["routing_daemon"],
        )
        errors.add_metric([status.routing_daemon], status.errors)
        yield from (up, state, announced, reason, phase, since, daemon_up, errors)
