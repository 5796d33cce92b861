"""lvsmon.exposition writes exactly what prometheus_client's generate_latest writes."""

from __future__ import annotations

import math
from collections.abc import Iterator

from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Enum, Gauge, Histogram, Info, Summary
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

from lvsmon.exposition import render
from lvsmon.ha.metrics import HACollector
from lvsmon.metrics import DirectorCollector
from lvsmon.status import build_view
from tests.unit.test_ha_metrics import STATUS
from tests.unit.test_status_metrics import CFG, snapshot


def test_the_daemons_collectors() -> None:
    reg = CollectorRegistry()
    reg.register(DirectorCollector(lambda: build_view(CFG, snapshot(True))))
    reg.register(HACollector(lambda: [STATUS]))
    assert render(reg) == generate_latest(reg)
    assert b"lvsmon_real_server_weight{" in render(reg)


def test_every_client_library_type() -> None:
    reg = CollectorRegistry()
    Counter("c", "a counter", ["l"], registry=reg).labels("x").inc(3)
    Gauge("g", "doc with \\ and\nnewline", registry=reg).set(-1.5)
    Histogram("h", "h", registry=reg).observe(0.3)
    Summary("s", "s", registry=reg).observe(2)
    Info("i", "i", registry=reg).info({"version": '1 "quoted"'})
    Enum("e", "e", states=["a", "b"], registry=reg).state("b")
    assert render(reg) == generate_latest(reg)


class Families(Collector):
    def __init__(self, families: list[Metric]):
        self.families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)


NAMES = st.from_regex(r"[a-z_][a-z0-9_]{0,12}", fullmatch=True)
VALUES = st.one_of(
    st.integers(-(10**9), 10**9),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, 999_999, 1_000_000, -0.0, math.inf]),
)
LABELS = st.dictionaries(NAMES, st.text(max_size=8), max_size=3)


FAMILY = st.tuples(
    NAMES,
    st.sampled_from(["counter", "gauge", "untyped"]),
    st.lists(st.tuples(LABELS, VALUES), max_size=4),
)
Spec = list[tuple[str, str, list[tuple[dict[str, str], float]]]]


@given(st.lists(FAMILY, max_size=4))
def test_any_families_and_label_values(spec: Spec) -> None:
    shared: dict[str, str] = {"virtual_server": 'we"b\\\n', "real_server": "10.0.0.2:80"}
    families = []
    for name, kind, samples in spec:
        family = Metric(name, "help", kind)
        suffix = "_total" if kind == "counter" else ""
        for labels, value in samples:
            family.samples.append(Sample(name + suffix, labels, value))
            family.samples.append(Sample(name + suffix, shared, value))  # one dict, many series
        families.append(family)
    reg = CollectorRegistry(auto_describe=False)
    reg.register(Families(families))
    assert render(reg) == generate_latest(reg)
