"""Scrape-time collector for failover groups (the lvsmon_ha_* rows of DESIGN.md).

Each director exports only its own view; who is master is PromQL's business,
e.g. split brain (two masters for one group):

    sum by (group) (lvsmon_ha_state{state="master"}) > 1
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from lvsmon.ha.codec import REASONS
from lvsmon.ha.machine import ROLES
from lvsmon.ha.status import GroupStatus

G = ["group"]


class HACollector(Collector):
    def __init__(self, status: Callable[[], Sequence[GroupStatus]]):
        self._status = status

    def collect(self) -> Iterator[Metric]:
        groups = self._status()
        state = GaugeMetricFamily(
            "lvsmon_ha_state",
            "1 for the failover group's current VRRP state, else 0",
            labels=["group", "state"],
        )
        priority = GaugeMetricFamily(
            "lvsmon_ha_priority",
            "Priority advertised now (after tracking; 0 while handing over)",
            labels=G,
        )
        sent = CounterMetricFamily("lvsmon_ha_adverts_sent", "VRRP adverts sent", labels=G)
        received = CounterMetricFamily(
            "lvsmon_ha_adverts_received", "Valid VRRP adverts received for the group", labels=G
        )
        rejected = CounterMetricFamily(
            "lvsmon_ha_adverts_rejected",
            "VRRP adverts dropped, by reason",
            labels=["group", "reason"],
        )
        transitions = CounterMetricFamily(
            "lvsmon_ha_transitions", "State changes, by the state entered", labels=["group", "to"]
        )
        peer = GaugeMetricFamily(
            "lvsmon_ha_peer_last_advert_timestamp_seconds",
            "Unix time of the last valid advert from another director (0: none yet)",
            labels=G,
        )
        for g in groups:
            for role in ROLES:
                state.add_metric([g.name, role.value], 1 if g.state == role.value else 0)
            priority.add_metric([g.name], g.priority)
            sent.add_metric([g.name], g.adverts_sent)
            received.add_metric([g.name], g.adverts_received)
            for reason in REASONS:  # every reason, so rate() works from the first reject
                rejected.add_metric([g.name, reason], g.rejected.get(reason, 0))
            for role in ROLES:
                transitions.add_metric([g.name, role.value], g.transitions.get(role.value, 0))
            peer.add_metric([g.name], g.peer_last_advert)
        yield from (state, priority, sent, received, rejected, transitions, peer)
