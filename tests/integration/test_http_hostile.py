"""The metrics endpoint (TLS + basic auth) under hostile and heavy clients.

One daemon for the module, served over TLS with a bcrypt user (the web config of
test_metrics_tls.py). Each test throws one kind of abuse at it and then proves
the endpoint still answers a legitimate scrape, that nothing protected was
answered without credentials, and that the daemon holds no more file
descriptors than before (nothing leaks). The answer times are printed; the bars
are structural (every request answered, idle clients evicted), not timings.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import trustme

from lvsmon.client import basic_authorization
from lvsmon.httpd import MAX_IDLE_CLIENTS
from tests.integration.harness import fd_count, wait_for
from tests.integration.test_daemon import service
from tests.integration.test_metrics_tls import (
    PASSWORD,
    USER,
    Pki,
    TlsDaemon,
    _rs,
    fetch,
    refused,
    web_yml,
)
from tests.ports import free_port

GOOD = basic_authorization(USER, PASSWORD)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    pki = Pki(tmp_path_factory.mktemp("pki"), trustme.CA(), trustme.CA())
    pki.issue_server()
    pki.ca.cert_pem.write_to_path(str(pki.ca_file))
    return pki


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[TlsDaemon]:
    tmp: Path = tmp_path_factory.mktemp("daemon")
    (tmp / "web.yml").write_text(web_yml(pki))
    d = TlsDaemon(tmp, service(free_port(), _rs()), tmp / "web.yml", pki.context())
    # not d.start(): its readiness probe would warm the password cache, and the first
    # test wants the cold cache (200 scrapers arriving at once, before any check)
    d.launch()
    wait_for(lambda: _tls_up(d), 20, "the TLS port")
    yield d
    d.kill()
    assert "Traceback" not in d.log(), d.log()[-3000:]


def _tls_up(d: TlsDaemon) -> bool:
    with socket.create_connection(("127.0.0.1", d.metrics_port), timeout=2):
        return True


def scrape(d: TlsDaemon, pki: Pki, path: str = "/metrics", auth: str | None = GOOD) -> int:
    return fetch(d.url + path, pki.context(), auth)[0]


def quiet_fds(d: TlsDaemon) -> int:
    """The daemon's descriptors once the clients are gone (the loop closes them lazily)."""
    assert d.proc is not None
    last = -1
    for _ in range(50):
        now = fd_count(d.proc.pid)
        if now == last:
            return now
        last = now
        time.sleep(0.1)
    return last


def test_200_concurrent_scrapes_on_a_cold_password_cache_all_succeed(
    daemon: TlsDaemon, pki: Pki
) -> None:
    """bcrypt runs on one thread with a cap on waiting checks (a flood of guesses is
    turned away): the same right password from 200 scrapers must share one check."""
    barrier = threading.Barrier(200)

    def one(_: int) -> tuple[int, float]:
        barrier.wait()
        began = time.monotonic()
        return scrape(daemon, pki), time.monotonic() - began

    with ThreadPoolExecutor(200) as pool:
        results = list(pool.map(one, range(200)))
    codes = [code for code, _ in results]
    slowest = max(t for _, t in results)
    print(f"\n200 concurrent TLS scrapes: slowest answered in {slowest * 1000:.0f} ms")
    assert codes == [200] * 200, {c: codes.count(c) for c in set(codes)}


def test_wrong_credentials_and_unknown_paths_leak_nothing(daemon: TlsDaemon, pki: Pki) -> None:
    wrong = (None, basic_authorization(USER, "nope"), basic_authorization("x" * 5000, "y"))
    for auth in wrong:
        for path in ("/metrics", "/status", "/", "/nope", "/../etc/passwd", "/metrics?x=1"):
            status, _, body = fetch(daemon.url + path, pki.context(), auth)
            assert status == 401 and b"lvsmon_" not in body and b"{" not in body, (auth, path)
    assert scrape(daemon, pki, "/nope") == 404
    assert scrape(daemon, pki, "/metrics/../status") == 404
    refused(f"http://127.0.0.1:{daemon.metrics_port}/metrics", None, GOOD)
    assert scrape(daemon, pki) == 200


def test_oversized_and_garbage_requests_get_an_error_not_a_hang(
    daemon: TlsDaemon, pki: Pki
) -> None:
    before = quiet_fds(daemon)
    cases = {
        "header of 64 KiB": b"GET /metrics HTTP/1.1\r\nX-Big: " + b"a" * 65536 + b"\r\n\r\n",
        "request line of 16 KiB": b"GET /" + b"m" * 16384 + b" HTTP/1.1\r\n\r\n",
        "binary junk": bytes(range(256)) * 4 + b"\r\n\r\n",
        "no request line": b"\r\n\r\n",
    }
    for name, request in cases.items():
        with _tls_socket(daemon, pki) as s:
            with contextlib.suppress(OSError):  # the server may close before reading it all
                s.sendall(request)
            answer = _read_all(s)
        assert answer.startswith(b"HTTP/1.0 4") or answer == b"", (name, answer[:80])
        assert b"lvsmon_" not in answer, name
    assert scrape(daemon, pki) == 200
    assert quiet_fds(daemon) <= before


def test_slowloris_clients_are_evicted_and_scrapes_keep_working(
    daemon: TlsDaemon, pki: Pki
) -> None:
    """Clients that never finish their request head: the oldest are closed once more
    than MAX_IDLE_CLIENTS wait, so they cannot use up the daemon's descriptors."""
    before = quiet_fds(daemon)
    count = MAX_IDLE_CLIENTS + 100
    slow = [_tls_socket(daemon, pki) for _ in range(count)]
    try:
        for s in slow:
            s.sendall(b"GET /metrics HTTP/1.1\r\nX-Slow: ")  # ... and never the end
        began = time.monotonic()
        codes = [scrape(daemon, pki) for _ in range(10)]
        took = time.monotonic() - began
        print(f"\n{count} slowloris connections open: 10 scrapes in {took * 1000:.0f} ms")
        assert codes == [200] * 10
        closed = sum(1 for s in slow if _closed_by_server(s))
        assert closed >= count - MAX_IDLE_CLIENTS, closed
    finally:
        for s in slow:
            s.close()
    assert quiet_fds(daemon) <= before


def _tls_socket(d: TlsDaemon, pki: Pki) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", d.metrics_port), timeout=10)
    return pki.context().wrap_socket(raw, server_hostname="127.0.0.1")


def _read_all(s: ssl.SSLSocket) -> bytes:
    data = b""
    try:
        while chunk := s.recv(65536):
            data += chunk
    except (OSError, http.client.HTTPException):
        pass
    return data


def _closed_by_server(s: ssl.SSLSocket) -> bool:
    s.settimeout(0.01)
    try:
        return s.recv(1) == b""
    except TimeoutError:
        return False
    except OSError:
        return True
