"""The status page at 200 virtual servers x 20 real servers, in Debian's headless Chromium.

The page (lvsmon/statuspage/static, unchanged) is served with a /status.json of 4,000
real servers built by the daemon's own builder (lvsmon.statuspage.document: rates
with a full 10-minute sparkline, health details, weights factor by factor). Measured
in the browser, from navigation start to the end of the page's first render (fetch,
JSON parse, table build) plus one forced layout of the result.

Anchor, same browser, same run: a static HTML page holding the same 4,000 rows and
columns (sparklines included), measured from navigation start to its parse and one
forced layout. Printed: each round, the medians, `page_ms=` (the bar: under 1000 ms)
and `ratio_render=` page / anchor last.

    python bench/status_page.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import html
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lvsmon import config  # noqa: E402
from lvsmon.dataplane.base import Counters, DestStats, ServiceStats, Snapshot  # noqa: E402
from lvsmon.health.state import HealthDetail  # noqa: E402
from lvsmon.model import StatusPageSettings  # noqa: E402
from lvsmon.status import build_view  # noqa: E402
from lvsmon.statuspage.document import AdminAccess, ReloadRecord, build_document  # noqa: E402
from lvsmon.statuspage.history import RateHistory  # noqa: E402
from lvsmon.weights.effective import weight_parts  # noqa: E402
from tests.browser import chromium, page_server  # noqa: E402

SERVICES, REALS = 200, 20
BAR_MS = 1000.0
# installed before any page script: records when the content is built and laid out
PROBE = """
window.__done = null;
const finish = () => { document.body.getBoundingClientRect(); document.body.offsetHeight;
                       window.__done = performance.now(); };
new MutationObserver((_, obs) => {
  if (document.body && document.body.dataset.rendered) { obs.disconnect(); finish(); }
}).observe(document, {attributes: true, subtree: true, attributeFilter: ['data-rendered']});
document.addEventListener('DOMContentLoaded', () => {
  if (document.body.dataset.anchor) finish();
});
"""


def document() -> tuple[bytes, float]:
    """The /status.json body, and the CPU seconds the daemon's part took (view + document
    + encoding: what one poll of the page costs the daemon at this size; CPU time, so a
    busy machine does not inflate it)."""
    text = []
    for s in range(SERVICES):
        text.append(
            f'[[virtual_server]]\nname = "vs{s:03d}"\naddress = "10.{s // 250}.{s % 250}.1"\n'
            'port = 80\nscheduler = "wlc"\n'
        )
        for r in range(REALS):
            text.append(
                f'[[virtual_server.real_server]]\naddress = "10.100.{s % 250}.{r + 1}"\n'
                f"weight = {1 + r % 3}\n"
            )
    cfg = config.loads('[daemon.status_page]\nrefresh = "1h"\n' + "".join(text), "bench.toml")
    services = []
    for vs in cfg.virtual_servers:
        dests = tuple(
            DestStats(rs.key, rs.weight, 5 + i, i, 0, Counters(1000 * i, 10**6 * i, 10**7 * i))
            for i, rs in enumerate(vs.real_servers)
        )
        services.append(ServiceStats(vs, Counters(10**5, 10**8, 10**9), dests))
    down = frozenset((vs.key, vs.real_servers[3].key) for vs in cfg.virtual_servers)
    settings = cfg.daemon.status_page
    history = RateHistory(StatusPageSettings().samples)
    keys = [(vs.key, rs.key) for vs in cfg.virtual_servers for rs in vs.real_servers]
    for t in range(history.samples):
        counters = {k: (t * (1 + i % 7) * 10, t * i * 1000) for i, k in enumerate(keys)}
        history.record(t * 5.0, counters)
    health = {
        k: HealthDetail("tcp", k not in down, 1.7e9, "refused", "connection refused", 1.7e9, 3)
        for k in keys
    }
    start = time.process_time()
    view = build_view(
        cfg,
        Snapshot(tuple(services)),
        down,
        weight_parts=weight_parts(cfg.virtual_servers, down=down),
    )
    doc = build_document(
        view,
        now=time.time(),
        settings=settings,
        history=history,
        health=health,
        overrides=lambda _: None,
        reloads=[ReloadRecord(time.time(), True, "start", "config loaded")],
        admin=AdminAccess(False, False, "read-only"),
    )
    body = json.dumps(doc, separators=(",", ":")).encode()
    return body, time.process_time() - start


def anchor(doc: dict[str, Any]) -> bytes:
    """The same rows and columns as static HTML: what the browser costs without the script."""
    out = [
        '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>anchor</title>'
        '<link rel="stylesheet" href="/static/page.css"></head><body data-anchor="1"><main>'
    ]
    for vs in doc["virtual_servers"]:
        out.append(f"<section><h2>{html.escape(vs['name'])}</h2><div class=scroll><table>")
        out.append("<thead><tr>" + "<th>c</th>" * 10 + "</tr></thead><tbody>")
        for r in vs["real_servers"]:
            w = r["weights"]
            pts = " ".join(f"{i * 2},{24 - v % 20}" for i, v in enumerate(r["history"]))
            cells = [
                r["real_server"],
                f'<span class="badge s-{r["state"]}">{r["state"]}</span>',
                str(r["weight"]),
                f"{w['configured']} x {w['health']} x {w['slow_start']} x {w['adaptive']} = "
                f"<strong>{w['effective']}</strong>",
                str(r["active"]),
                str(r["inactive"]),
                f"{r['rate']['connections_per_second']:.1f}",
                f"{r['rate']['bytes_per_second'] / 1e6:.2f}",
                f'<svg class="spark" width="120" height="24"><polyline points="{pts}"/></svg>',
                "tcp: refused (connection refused), 5 s ago",
            ]
            out.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
        out.append("</tbody></table></div></section>")
    out.append("</main></body></html>")
    return "".join(out).encode()


def measure(browser: Any, url: str) -> float:
    browser.get(url)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        done = browser.execute_script("return window.__done")
        if done is not None:
            return float(done)
        time.sleep(0.01)
    raise RuntimeError(f"{url}: never finished")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    doc, built = document()
    parsed = json.loads(doc)
    rows = sum(len(vs["real_servers"]) for vs in parsed["virtual_servers"])
    routes = {
        "/status.json": (doc, "application/json"),
        "/anchor.html": (anchor(parsed), "text/html; charset=utf-8"),
    }
    print(
        f"{SERVICES} virtual servers x {REALS} real servers = {rows} rows; /status.json "
        f"{len(doc) / 1e6:.1f} MB; view + document + JSON cost the daemon "
        f"{built * 1000:.0f} ms of CPU"
    )
    pages: list[float] = []
    anchors: list[float] = []
    with page_server(routes) as base, chromium(1280, 900) as browser:
        browser.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": PROBE})
        measure(browser, base + "/anchor.html")  # warm: fonts, CSS, the browser itself
        measure(browser, base + "/")
        for i in range(args.rounds):
            anchors.append(measure(browser, base + "/anchor.html"))
            pages.append(measure(browser, base + "/"))
            print(f"round {i + 1}: page {pages[-1]:.0f} ms, static table {anchors[-1]:.0f} ms")
        shown = browser.execute_script("return document.querySelectorAll('tbody tr').length")
    assert shown >= rows, f"the page showed {shown} rows of {rows}"
    page, static = statistics.median(pages), statistics.median(anchors)
    verdict = "under" if page < BAR_MS else "OVER"
    print(f"median: page {page:.0f} ms, static table {static:.0f} ms")
    print(f"page_ms={page:.0f} ({verdict} the {BAR_MS:.0f} ms bar)")
    print(f"ratio_render={page / static:.2f}")


if __name__ == "__main__":
    main()
