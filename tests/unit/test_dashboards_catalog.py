"""Dashboards, alert rules and docs/metrics.md agree with the metric catalog."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from lvsmon import catalog

ROOT = Path(__file__).resolve().parents[2]
METRIC = re.compile(r"\blvsmon_[a-z0-9_]+")
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def dashboard_exprs() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for path in sorted((ROOT / "dashboards").glob("*.json")):
        board = json.loads(path.read_text())
        out[path.name] = [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
    return out


def rule_exprs() -> list[str]:
    text = (ROOT / "alerts" / "lvsmon.rules.yml").read_text()
    return re.findall(r"^\s+expr: (.+)$", text, re.M)


def metric_names(expr: str) -> set[str]:
    names = set()
    for name in METRIC.findall(expr):
        for suffix in HISTOGRAM_SUFFIXES:
            if name.endswith(suffix) and name[: -len(suffix)] in catalog.names():
                name = name[: -len(suffix)]
        names.add(name)
    return names


def test_generated_dashboard_json_is_current() -> None:
    result = subprocess.run(
        [sys.executable, "dashboards/build.py", "--check"], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def test_metrics_doc_is_current() -> None:
    assert (ROOT / "docs" / "metrics.md").read_text() == catalog.render_markdown(), (
        "docs/metrics.md is stale: run `make docs`"
    )


def test_every_metric_in_dashboards_and_alerts_is_in_the_catalog() -> None:
    exprs = [e for exprs in dashboard_exprs().values() for e in exprs] + rule_exprs()
    assert len(exprs) > 20
    unknown = {n for e in exprs for n in metric_names(e)} - catalog.names()
    assert not unknown, f"not in lvsmon/catalog.py: {sorted(unknown)}"


def test_dashboards_have_the_template_variables_and_panels() -> None:
    boards = {p.name: json.loads(p.read_text()) for p in (ROOT / "dashboards").glob("*.json")}
    assert set(boards) == {"overview.json", "virtual-server.json", "director.json"}
    for name, board in boards.items():
        variables = {v["name"] for v in board["templating"]["list"]}
        assert {"datasource", "instance"} <= variables, name
        for panel in board["panels"]:
            if panel["type"] == "row":  # a heading (the Fleet row), no query of its own
                continue
            assert panel["datasource"] == "${datasource}", (name, panel["title"])
            assert panel["targets"], (name, panel["title"])
    assert "virtual_server" in {
        v["name"] for v in boards["virtual-server.json"]["templating"]["list"]
    }


def test_failover_metrics_match_the_catalog() -> None:
    from lvsmon.ha.metrics import HACollector
    from lvsmon.ha.status import GroupStatus

    group = GroupStatus(
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
        peer_last_advert=1.0,
        since=1.0,
        adverts_sent=3,
        adverts_received=2,
        rejected={"bad_checksum": 1},
        transitions={"master": 1},
    )
    specs = {m.name: m for m in catalog.CATALOG}
    families = list(HACollector(lambda: [group]).collect())
    assert families
    for family in families:
        name = family.name + ("_total" if family.type == "counter" else "")
        spec = specs.get(name)
        assert spec is not None and spec.type == family.type, name
        for sample in family.samples:
            if not sample.name.endswith("_created"):
                assert set(sample.labels) == set(spec.labels), (name, sample.labels)
    failover = {m.name for m in catalog.CATALOG if m.feature == "failover"}
    assert failover <= {f.name + ("_total" if f.type == "counter" else "") for f in families}


def test_bgp_metrics_match_the_catalog() -> None:
    import ipaddress

    from lvsmon.bgp.announcer import BgpStatus, Phase, VipStatus
    from lvsmon.bgp.metrics import BgpCollector
    from lvsmon.bgp.plan import Session
    from lvsmon.serving import Reason, Verdict

    vip = VipStatus(ipaddress.ip_address("192.0.2.1"), "web", Verdict(Reason.SERVING), True)
    status = BgpStatus(
        Phase.ACTIVE, 1.0, (Session("tor1", "established", True),), (vip,), "bird", True, 3, 1, ""
    )
    specs = {m.name: m for m in catalog.CATALOG}
    families = list(BgpCollector(lambda: status, lambda: {"web": 7}).collect())
    for family in families:
        name = family.name + ("_total" if family.type == "counter" else "")
        spec = specs.get(name)
        assert spec is not None and spec.type == family.type, name
        for sample in family.samples:
            assert set(sample.labels) == set(spec.labels), (name, sample.labels)
    bgp = {m.name for m in catalog.CATALOG if m.feature == "bgp"}
    assert bgp == {f.name + ("_total" if f.type == "counter" else "") for f in families}
