"""The status page in a real browser (Debian's headless Chromium) against a real daemon
on the proxy data plane with real backends: live rows, rates and sparklines, sorting,
a killed backend turning down, /status.json against its schema, an axe-core
accessibility check, screenshots at a laptop and a phone width, and the stale mark
when the daemon stops. One daemon and one browser for the module; the tests run in
file order (the last one stops the daemon)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from selenium.webdriver.common.by import By

from tests.browser import chromium, screenshot, set_viewport, text_of, until
from tests.integration.harness import Backend, Daemon, connect, wait_for
from tests.ports import free_port

INTERVAL, FALL, REFRESH = 1.0, 2, 1.0
# the bar: a killed backend's row shows down within fall x interval + one refresh;
# SLACK covers the probe's phase against the kill and a noisy 2-core machine
BUDGET = FALL * INTERVAL + REFRESH
SLACK = INTERVAL + 2.0


@dataclass
class Site:
    daemon: Daemon
    backends: list[Backend]
    vip: int
    browser: Any
    shots: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.daemon.metrics_port}"

    def rows(self, vs: str = "web") -> dict[str, dict[str, str]]:
        """The real server table as the page shows it, in its order: label -> column -> text
        (pairs, not an object: the driver does not keep an object's key order)."""
        pairs = self.browser.execute_script(
            """
            const t = document.getElementById('t-' + arguments[0]);
            if (!t) return [];
            return [...t.tBodies[0].rows].map((tr) => {
              const row = {};
              // textContent: innerText is empty for an off-screen section (not laid out)
              for (const td of tr.cells) {
                row[td.className.slice(2)] = td.textContent.replace(/\\s+/g, " ").trim();
              }
              return [row.rs, row];
            });
            """,
            vs,
        )
        return {label: row for label, row in pairs}

    def cell(self, label: str, column: str) -> str:
        """One cell's text ("" while the row is not shown)."""
        return self.rows().get(label, {}).get(column, "")


def config(vip: int, backends: list[Backend]) -> str:
    reals = "".join(b.toml(w) for b, w in zip(backends, (1, 1, 2), strict=True))
    return f"""
[daemon.status_page]
refresh = "{REFRESH:g}s"
sample_interval = "1s"
history = "1m"

[[virtual_server]]
name = "web"
address = "127.0.0.1"
port = {vip}
scheduler = "wlc"

[virtual_server.health_check]
type = "tcp"
interval = "{INTERVAL:g}s"
timeout = "500ms"
fall = {FALL}
rise = 1
{reals}"""


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("status-page")
    backends = [Backend(n) for n in ("a", "b", "c")]
    vip = free_port()
    daemon = Daemon(tmp, config(vip, backends))
    try:
        daemon.start()
        with chromium(1280, 900) as browser:
            yield Site(daemon, backends, vip, browser, tmp)
    finally:
        daemon.kill()
        for b in backends:
            b.close()


def rendered(browser: Any) -> Any:
    """The page's stamp of its last redraw (None before the first)."""
    return browser.execute_script("return document.body.dataset.rendered")


def redrawn(browser: Any) -> None:
    """Wait for the page's next redraw (its next poll of /status.json)."""
    stamp = rendered(browser)
    until(browser, lambda d: rendered(d) != stamp, 10, "the next redraw")


def parts(*cells: str) -> str:
    """A weight cell as the page writes it: configured x health x ... = effective."""
    return " \N{MULTIPLICATION SIGN} ".join(cells[:-1]) + f" = {cells[-1]}"


def load(site: Site) -> None:
    site.browser.get(site.url + "/")
    until(site.browser, rendered, 15, "the first render")


def traffic(vip: int, seconds: float) -> threading.Thread:
    """Connections through the virtual server for `seconds`, each sending 64 KiB."""

    def run() -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            try:
                sock, _ = connect(vip)
                sock.sendall(b"x" * 65536)
                sock.shutdown(socket.SHUT_WR)
                while sock.recv(65536):
                    pass
                sock.close()
            except OSError:
                pass
            time.sleep(0.02)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def moving(browser: Any) -> bool:
    """Some real server's conn/s is above 0 in the page."""
    pairs = browser.execute_script(
        "return [...document.querySelectorAll('#t-web td.c-cps')].map(td => td.textContent)"
    )
    return any(text not in ("—", "0.0") for text in pairs)


def test_the_page_shows_every_real_server_live(site: Site) -> None:
    load(site)
    rows = site.rows()
    assert set(rows) == {f"127.0.0.1:{b.port}" for b in site.backends}
    assert all(r["state"] == "● up" for r in rows.values()), rows
    assert site.browser.execute_script("return document.body.dataset.state") == "live"
    freshness = site.browser.find_element(By.ID, "freshness").text
    assert freshness.startswith("live · updated every 1 s"), freshness
    summary = site.browser.find_element(By.ID, "summary").text
    assert "3/3 up" in summary and "wlc" in summary
    # the weight, factor by factor; read-only by default, and the page says so
    c = rows[f"127.0.0.1:{site.backends[2].port}"]
    assert c["parts"] == parts("2", "up", "-", "-", "2")
    why = site.browser.find_element(By.ID, "admin-why").text
    assert "daemon.status_page.admin = false" in why
    assert not site.browser.find_elements(By.CSS_SELECTOR, "button[data-admin=drain]")


def test_status_json_is_valid_against_its_schema(site: Site) -> None:
    with urllib.request.urlopen(site.url + "/status.json", timeout=5) as resp:
        assert resp.headers["Content-Type"] == "application/json"
        doc = json.loads(resp.read())
    with urllib.request.urlopen(site.url + "/status.schema.json", timeout=5) as resp:
        served = json.loads(resp.read())
    shipped = json.loads(
        resources.files("lvsmon.statuspage").joinpath("status.schema.json").read_text()
    )
    assert served == shipped
    jsonschema.validate(doc, shipped)
    assert doc["page"]["refresh_seconds"] == REFRESH
    assert doc["reload"]["history"][0]["trigger"] == "start"


def test_rates_and_sparklines_come_from_the_daemons_memory(site: Site) -> None:
    thread = traffic(site.vip, 4.0)
    until(site.browser, moving, 15, "a real server's conn/s above 0 in the page")
    thread.join()
    points = site.browser.execute_script(
        "return [...document.querySelectorAll('#t-web svg.spark polyline')]"
        ".map(p => p.getAttribute('points').split(' ').length)"
    )
    assert len(points) == 3 and max(points) >= 2, points
    label = text_of(site.browser, "#t-web svg.spark", "aria-label")
    assert "connections per second: now" in label and "conn/s" in label


def test_tables_sort_by_any_column_and_stay_sorted_across_refreshes(site: Site) -> None:
    def order() -> list[str]:
        return list(site.rows())

    def click(column: str) -> None:
        # found and clicked in one script: a refresh may redraw the table at any moment
        site.browser.execute_script(
            "document.querySelector(`button[data-table='t-web'][data-sort='${arguments[0]}']`)"
            ".click()",
            column,
        )

    def first_header_sort() -> str:
        return str(
            site.browser.execute_script(
                "return document.querySelector('#t-web th').getAttribute('aria-sort')"
            )
        )

    labels = sorted(order(), key=lambda s: int(s.rsplit(":", 1)[1]))
    click("rs")
    assert order() == labels
    assert first_header_sort() == "ascending"
    click("rs")
    assert order() == labels[::-1]
    assert first_header_sort() == "descending"
    redrawn(site.browser)
    assert order() == labels[::-1]
    click("weight")  # by programmed weight: c (2) sorts last
    assert order()[-1] == f"127.0.0.1:{site.backends[2].port}"


def test_a_killed_backend_turns_down_within_fall_times_interval_plus_one_refresh(
    site: Site,
) -> None:
    c = site.backends[2]
    label = f"127.0.0.1:{c.port}"
    c.close()
    killed = time.monotonic()
    until(site.browser, lambda _: site.cell(label, "state") == "▼ down", BUDGET + SLACK, "down")
    elapsed = time.monotonic() - killed
    print(f"row down {elapsed:.2f}s after the kill (fall x interval + refresh = {BUDGET:g}s)")
    row = site.rows()[label]
    assert row["health"].startswith("tcp: refused"), row
    assert row["parts"] == parts("2", "down", "-", "-", "0")
    assert "2/3 up" in site.browser.find_element(By.ID, "summary").text


def axe_violations(browser: Any) -> list[dict[str, Any]]:
    """axe-core (the copy PyPI's axe-core-python ships), run in the page itself."""
    source = resources.files("axe_core_python").joinpath("axe.min.js").read_text()
    browser.execute_script(source)
    result = browser.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "axe.run(document, {resultTypes: ['violations']}).then(r => done(r.violations),"
        " e => done([{id: 'axe-error', impact: 'critical', help: String(e), nodes: []}]));"
    )
    return list(result)


def test_no_serious_accessibility_violations(site: Site) -> None:
    violations = axe_violations(site.browser)
    serious = [v for v in violations if v["impact"] in ("serious", "critical")]
    detail = [(v["id"], v["help"], [n["target"] for n in v["nodes"]][:3]) for v in serious]
    assert not serious, detail
    assert site.browser.execute_script("return typeof axe.run") == "function"  # it did run


def test_screenshots_at_a_laptop_and_a_phone_width(site: Site) -> None:
    from PIL import Image

    shots = {"laptop": (1280, 900), "phone": (390, 844)}
    load(site)  # unsorted, as a reader first sees it
    thread = traffic(site.vip, 6.0)  # rates and sparklines in the picture
    until(site.browser, moving, 15, "conn/s above 0 in the page")
    for name, (width, height) in shots.items():
        set_viewport(site.browser, width, height)
        redrawn(site.browser)
        # nothing wider than the screen: wide tables scroll inside their own region
        scroll = site.browser.execute_script("return document.documentElement.scrollWidth")
        assert scroll <= width, (name, scroll)
        # the layout width: the viewport less a vertical scrollbar when the page is taller
        inner = site.browser.execute_script("return document.documentElement.clientWidth")
        assert width - 20 <= inner <= width, (name, inner)
        path = site.shots / f"status-page-{name}.png"
        screenshot(site.browser, path)
        with Image.open(path) as image:
            assert image.width == inner and image.height >= height // 2, image.size
    thread.join()
    target = os.environ.get("LVSMON_PAGE_PNG")  # `make page-png`: the README's picture
    if target:
        shutil.copy(site.shots / "status-page-laptop.png", target)
    set_viewport(site.browser, 1280, 900)


def test_the_page_is_marked_stale_when_the_daemon_stops(site: Site) -> None:
    assert site.daemon.stop() == 0
    until(
        site.browser,
        lambda d: d.execute_script("return document.body.dataset.state") == "stale",
        2 * REFRESH + 10,
        "the stale mark",
    )
    text = site.browser.find_element(By.ID, "freshness").text
    assert text.startswith("STALE: no answer from the daemon since"), text
    assert "showing the last data" in text
    assert len(site.rows()) == 3  # the last data stays, greyed
    wait_for(lambda: site.daemon.proc is not None and site.daemon.proc.poll() is not None, 5)
