"""Scrape-time collector for adaptive weights (register it next to DirectorCollector).

  lvsmon_real_server_load{virtual_server,real_server}      fresh normalised load, 0..1
      (absent while the real server has no fresh sample: `absent()` alerts work)
  lvsmon_weight_updates_total{virtual_server,real_server}  adaptive weight changes
  lvsmon_weight_source_up{virtual_server,source}           1 if the last poll succeeded
  lvsmon_weight_source_last_success_timestamp_seconds{virtual_server,source}

Programmed and configured weights are lvsmon.metrics' (lvsmon_real_server_weight
and lvsmon_real_server_configured_weight): the effective weight is what is programmed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from lvsmon import catalog
from lvsmon.model import ServiceKey
from lvsmon.weights.controller import WeightController

RS = ["virtual_server", "real_server"]
SRC = ["virtual_server", "source"]


class WeightCollector(Collector):
    def __init__(
        self,
        controller: WeightController,
        names: Callable[[], Mapping[ServiceKey, str]] | None = None,
    ):
        """`names`: ServiceKey -> virtual_server label; default: the name configured with it."""
        self._controller = controller
        self._names = names

    def collect(self) -> Iterator[Metric]:
        c = self._controller
        sources = c.sources()
        names = dict(self._names()) if self._names is not None else {}
        for s in sources:
            names.setdefault(s.service, s.virtual_server)
        load = catalog.gauge("lvsmon_real_server_load")
        for (svc, dest), value in sorted(c.loads().items()):
            if svc in names:
                load.add_metric([names[svc], str(dest)], value)
        updates = catalog.counter("lvsmon_weight_updates_total")
        for (svc, dest), n in sorted(c.updates().items()):
            if svc in names:
                updates.add_metric([names[svc], str(dest)], n)
        up = catalog.gauge("lvsmon_weight_source_up")
        last = catalog.gauge("lvsmon_weight_source_last_success_timestamp_seconds")
        for s in sources:
            if s.up is None:
                continue  # not polled yet: no verdict
            labels = [names[s.service], s.source]
            up.add_metric(labels, 1 if s.up else 0)
            if s.last_success:
                last.add_metric(labels, s.last_success)
        yield from (load, updates, up, last)
