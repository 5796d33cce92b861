"""Debian's headless Chromium driven by Selenium through Debian's chromedriver.

No browser or driver download: both come from `scripts/install-test-deps`
(chromium, chromium-driver); a missing one is a failure, not a skip.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
# as root Chromium needs --no-sandbox; the rest keep it from calling home or updating
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--lang=en-GB",
)


@contextlib.contextmanager
def chromium(width: int = 1280, height: int = 900, *, insecure_tls: bool = False) -> Iterator[Any]:
    """A fresh browser with its own profile directory, quit and removed afterwards."""
    for path in (CHROMIUM, CHROMEDRIVER):
        if not Path(path).exists():
            raise AssertionError(f"{path} is missing: run scripts/install-test-deps")
    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must never download
    profile = tempfile.mkdtemp(prefix="lvsmon-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.add_argument(f"--window-size={width},{height}")
    if insecure_tls:  # the tests' self-made CA is not in the browser's store
        options.set_capability("acceptInsecureCerts", True)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def until(driver: Any, predicate: Callable[[Any], Any], timeout: float, what: str) -> Any:
    """Poll `predicate(driver)` every 50 ms until it is truthy."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate(driver)
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def text_of(driver: Any, selector: str, attribute: str = "") -> str:
    """An element's text (or attribute) read in one script: the page redraws its tables
    on every refresh, so an element found in one call may be gone by the next."""
    return str(
        driver.execute_script(
            "const e = document.querySelector(arguments[0]);"
            "if (!e) return '';"
            "return arguments[1] ? e.getAttribute(arguments[1]) || ''"
            " : e.textContent.replace(/\\s+/g, ' ').trim();",
            selector,
            attribute,
        )
    )


def set_viewport(driver: Any, width: int, height: int) -> None:
    """Emulate a device width (a phone: 390 x 844) without a new browser."""
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 700},
    )


def screenshot(driver: Any, path: Path) -> None:
    """The whole page (not only the viewport) as a PNG."""
    import base64

    metrics = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})
    size = metrics["cssContentSize"]
    shot = driver.execute_cdp_cmd(
        "Page.captureScreenshot",
        {
            "format": "png",
            "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1},
        },
    )
    path.write_bytes(base64.b64decode(shot["data"]))


@contextlib.contextmanager
def page_server(routes: dict[str, tuple[bytes, str]]) -> Iterator[str]:
    """The status page's own files plus `routes` (path -> body, content type; an empty
    body answers 404) on loopback, without a daemon: for documents a test or bench
    builds itself. Yields the base URL."""
    from lvsmon.statuspage.page import STATIC, static_file

    static = {path: (static_file(name), ctype) for path, (name, ctype) in STATIC.items()}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # `routes` is read per request: a test may change it
            body, ctype = routes.get(self.path) or static.get(self.path) or (b"", "text/plain")
            self.send_response(200 if body else 404)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
