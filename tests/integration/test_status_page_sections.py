"""The page's sections that a one-box test daemon cannot produce, drawn by the real page
in Chromium from documents built by the daemon's own builder: failover groups with
their role and peer, the BGP section only when the document has one, every real
server state with its text label, and the stale mark on an error answer."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from selenium.webdriver.common.by import By

from lvsmon import config
from lvsmon.dataplane.base import Counters, DestStats, ServiceStats, Snapshot
from lvsmon.ha.status import GroupStatus
from lvsmon.health.state import HealthDetail
from lvsmon.model import DestKey, StatusPageSettings
from lvsmon.status import build_view
from lvsmon.statuspage.admin import Override
from lvsmon.statuspage.document import AdminAccess, build_document
from lvsmon.statuspage.history import RateHistory
from lvsmon.weights.effective import weight_parts
from tests.browser import chromium, page_server, text_of, until

CFG = config.loads(
    """
[[virtual_server]]
name = "web"
address = "192.0.2.10"
port = 80
sorry_server = "10.0.0.9:80"

[[virtual_server.real_server]]
address = "10.0.0.2"

[[virtual_server.real_server]]
address = "10.0.0.3"

[[virtual_server.real_server]]
address = "10.0.0.4"
""",
    "sections.toml",
)
WEB = CFG.virtual_servers[0]
UP, DRAINED, DOWN = ((WEB.key, rs.key) for rs in WEB.real_servers)
GONE, SORRY = DestKey("10.0.0.5", 80), DestKey("10.0.0.9", 80)  # removed: draining; sorry


def document(*, bgp: bool) -> bytes:
    dests = tuple(
        DestStats(key, 1, 0, 0, 0, Counters()) for key in (UP[1], DRAINED[1], DOWN[1], GONE, SORRY)
    )
    groups = [
        GroupStatus(
            "vip",
            51,
            "eth0",
            "master",
            150,
            150,
            "10.1.0.1",
            "10.1.0.1",
            "10.1.0.2",
            100,
            1.7e9,
            1.7e9,
        ).to_json(),
        GroupStatus(
            "vip6", 52, "eth1", "backup", 100, 100, "10.1.0.1", "", "", 0, 0.0, 1.7e9
        ).to_json(),
    ]
    view = build_view(
        CFG,
        Snapshot((ServiceStats(WEB, Counters(), dests),)),
        frozenset({DOWN}),
        weight_parts=weight_parts(CFG.virtual_servers, down=[DOWN], operator={DRAINED: 0}),
        failover_groups=groups,
    )
    if bgp:
        route = {
            "prefix": "192.0.2.10/32",
            "state": "announced",
            "next_hop": "10.1.0.1",
            "peers": [{"address": "10.1.1.1", "state": "established"}],
            "why": "3 of 3 real servers up",
        }
        view = replace(view, bgp=[route])
    failure = HealthDetail("tcp", False, 1.7e9, "timeout", "no answer in 1s", 1.7e9, 4)
    doc = build_document(
        view,
        now=1.7e9,
        settings=StatusPageSettings(refresh=0.5),
        history=RateHistory(3),
        health={DOWN: failure},
        overrides=lambda k: Override("drain", 0, "alice", 1.7e9, None) if k == DRAINED else None,
        reloads=[],
        admin=AdminAccess(False, False, "read-only"),
    )
    return json.dumps(doc).encode()


@pytest.fixture(scope="module")
def page() -> Iterator[tuple[Any, dict[str, tuple[bytes, str]]]]:
    routes = {"/status.json": (document(bgp=True), "application/json")}
    with page_server(routes) as base, chromium(1280, 900) as browser:
        browser.get(base + "/")
        until(
            browser,
            lambda d: d.execute_script("return document.body.dataset.rendered"),
            15,
            "render",
        )
        yield browser, routes


def text(browser: Any, element: str) -> str:
    return str(browser.find_element(By.ID, element).text)


def test_failover_groups_show_role_and_peer(page: tuple[Any, Any]) -> None:
    browser, _ = page
    assert browser.find_element(By.ID, "failover").is_displayed()
    rows = text(browser, "failover-body").splitlines()
    assert any(r.startswith("vip ▲ master") and "10.1.0.2 priority 100" in r for r in rows), rows
    assert any(r.startswith("vip6 ● backup") and "no advert heard" in r for r in rows), rows


def test_every_state_has_its_text_label(page: tuple[Any, Any]) -> None:
    browser, _ = page
    states = browser.execute_script(
        "return [...document.querySelectorAll('#t-web td.c-state')].map(td => td.textContent)"
    )
    assert sorted(states) == sorted(["● up", "‖ drained", "▼ down", "◐ draining", "↪ sorry"])
    row = text_of(browser, "#t-web tr.r-down td.c-health")
    assert row.startswith("tcp: timeout (no answer in 1s)"), row


def test_bgp_section_only_when_the_document_has_it(page: tuple[Any, Any]) -> None:
    browser, routes = page
    assert browser.find_element(By.ID, "bgp").is_displayed()
    bgp = text(browser, "bgp-body")
    assert "192.0.2.10/32" in bgp and "10.1.1.1 established" in bgp
    routes["/status.json"] = (document(bgp=False), "application/json")
    until(browser, lambda d: not d.find_element(By.ID, "bgp").is_displayed(), 10, "no BGP")
    assert browser.find_element(By.ID, "failover").is_displayed()


def test_an_error_answer_marks_the_page_stale(page: tuple[Any, Any]) -> None:
    browser, routes = page
    routes["/status.json"] = (b"", "text/plain")  # 404
    until(
        browser,
        lambda d: d.execute_script("return document.body.dataset.state") == "stale",
        10,
        "stale",
    )
    assert text(browser, "freshness").endswith("HTTP 404); showing the last data")
