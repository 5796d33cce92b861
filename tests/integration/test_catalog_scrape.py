"""A live scrape exports nothing the metric catalog (lvsmon/catalog.py) lacks, with the
catalog's types and labels; and every core and health metric is there."""

from __future__ import annotations

from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from lvsmon import catalog
from tests.integration.harness import Daemon, backends, connect
from tests.integration.test_daemon import service
from tests.ports import free_port

CHECK = '\n[virtual_server.health_check]\ntype = "tcp"\ninterval = "100ms"\ntimeout = "50ms"\n'


def test_live_scrape_matches_the_catalog(tmp_path: Path) -> None:
    vip = free_port()
    with backends("a", "b") as (a, b):
        d = Daemon(tmp_path, service(vip, a.toml(), b.toml(), extra=CHECK)).start()
        try:
            for _ in range(4):
                connect(vip)[0].close()
            families = {f.name: f for f in text_string_to_metric_families(d.metrics())}
        finally:
            d.stop()
    specs = {m.name: m for m in catalog.CATALOG}
    exported = set()
    for family in families.values():
        name = family.name + ("_total" if family.type == "counter" else "")
        exported.add(name)
        if not name.startswith("lvsmon_"):
            continue  # the client library's own process/python collectors are not ours
        spec = specs.get(name)
        assert spec is not None, f"{name} is exported but not in lvsmon/catalog.py"
        assert family.type == spec.type, name
        for sample in family.samples:
            extra = {"le"} if spec.type == "histogram" else set()
            assert set(sample.labels) - extra == set(spec.labels), (name, sample.labels)
    expected = {m.name for m in catalog.CATALOG if m.feature in ("core", "health", "proxy")}
    missing = expected - exported
    assert not missing, f"in the catalog but not exported by a proxy daemon with checks: {missing}"
