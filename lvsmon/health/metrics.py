"""Scrape-time collector for health checking (register it next to DirectorCollector).

Families (labels virtual_server, real_server, check):
  lvsmon_healthcheck_duration_seconds   histogram of probe durations
  lvsmon_healthcheck_failures_total     counter, + reason (Reason values; only reasons seen)
  lvsmon_real_server_transitions_total  counter (virtual_server, real_server): up<->down
  lvsmon_healthcheck_probes             gauge: distinct probes after dedupe
  lvsmon_healthchecks_in_flight         gauge: probes running now (max: max_in_flight)

A probe shared by several virtual servers reports under each of them: every
one of those real servers was checked. `lvsmon_real_server_up` is not here: it
belongs with the data plane's rows (lvsmon.metrics), fed by `monitor.down()`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from lvsmon import catalog
from lvsmon.health.monitor import BUCKETS, HealthMonitor
from lvsmon.model import ServiceKey

LABELS = ["virtual_server", "real_server", "check"]
_LE = [repr(b) for b in BUCKETS] + ["+Inf"]  # Go float text: 0.0005, 1.0, 10.0


class HealthCollector(Collector):
    def __init__(
        self,
        monitor: HealthMonitor,
        names: Callable[[], Mapping[ServiceKey, str]] | None = None,
    ):
        """`names`: ServiceKey -> virtual_server label; default: each target's own name."""
        self._monitor = monitor
        self._names = names

    def collect(self) -> Iterator[Metric]:
        names = self._names() if self._names is not None else {}
        duration = catalog.histogram("lvsmon_healthcheck_duration_seconds")
        failures = catalog.counter("lvsmon_healthcheck_failures_total")
        transitions = catalog.counter("lvsmon_real_server_transitions_total")
        probes = self._monitor.probes()
        for probe in probes:
            cumulative, running = [], 0
            for le, n in zip(_LE, probe.durations.counts, strict=True):
                running += n
                cumulative.append((le, float(running)))
            seen = sorted(probe.failures.items())
            for target in probe.targets.values():
                vs = names.get(target.service, target.virtual_server)
                labels = [vs, str(target.dest), target.check.type.value]
                duration.add_metric(labels, cumulative, probe.durations.sum)
                for reason, n in seen:
                    failures.add_metric([*labels, reason.value], n)
                transitions.add_metric(labels[:2], probe.transitions)
        count = catalog.gauge("lvsmon_healthcheck_probes")
        count.add_metric([], len(probes))
        in_flight = catalog.gauge("lvsmon_healthchecks_in_flight")
        in_flight.add_metric([], self._monitor.in_flight)
        yield from (duration, failures, transitions, count, in_flight)
