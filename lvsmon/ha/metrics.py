"""Scrape-time collector for failover groups (the lvsmon_ha_* rows of DESIGN.md).

Each director exports only its own view; who is master is PromQL's business,
e.g. split brain (two masters for one group):

    sum by (group) (lvsmon_ha_state{state="master"}) > 1
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from lvsmon import catalog
from lvsmon.ha.codec import REASONS
from lvsmon.ha.machine import ROLES
from lvsmon.ha.status import GroupStatus

G = ["group"]


class HACollector(Collector):
    def __init__(self, status: Callable[[], Sequence[GroupStatus]]):
        self._status = status

    def collect(self) -> Iterator[Metric]:
        groups = self._status()
        state = catalog.gauge("lvsmon_ha_state")
        priority = catalog.gauge("lvsmon_ha_priority")
        sent = catalog.counter("lvsmon_ha_adverts_sent_total")
        received = catalog.counter("lvsmon_ha_adverts_received_total")
        rejected = catalog.counter("lvsmon_ha_adverts_rejected_total")
        transitions = catalog.counter("lvsmon_ha_transitions_total")
        peer = catalog.gauge("lvsmon_ha_peer_last_advert_timestamp_seconds")
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
