"""Helpers for the adaptive-weight integration tests: exporters, agents, Prometheus.

Real processes and sockets on loopback. Real servers sit on their own loopback
addresses (127.0.0.2, .3, ...), each with its exporter or agent on one shared
port, as node_exporter would be on port 9100 of each host.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import shutil
import socket
import socketserver
import ssl
import subprocess
import threading
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.integration.harness import wait_for


def free_port_on(*hosts: str) -> int:
    """A TCP port free on every one of `hosts`."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind((hosts[0], 0))
            port = int(s.getsockname()[1])
        try:
            for host in hosts[1:]:
                with socket.socket() as s:
                    s.bind((host, port))
        except OSError:
            continue
        return port
    raise AssertionError("no common free port")


class Exporter:
    """node_exporter's shape: `node_load1` and per-CPU idle counters; the test sets the load."""

    def __init__(self, host: str, port: int, *, cpus: int = 2, tls: ssl.SSLContext | None = None,
                 token: str = ""):  # fmt: skip
        self.load = 0.0
        self.cpus = cpus
        self.token = token
        self.scrapes = 0
        exporter = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if exporter.token and self.headers.get("Authorization") != exporter.token:
                    self.send_error(401)
                    return
                exporter.scrapes += 1
                body = exporter.text().encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        class Server(http.server.ThreadingHTTPServer):
            allow_reuse_address = True
            daemon_threads = True

        self.server = Server((host, port), Handler)
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.address = f"{host}:{port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def text(self) -> str:
        lines = ["# HELP node_load1 1m load average.", "# TYPE node_load1 gauge",
                 f"node_load1 {self.load}", "# TYPE node_cpu_seconds_total counter"]  # fmt: skip
        for cpu in range(self.cpus):
            lines.append(f'node_cpu_seconds_total{{cpu="{cpu}",mode="idle"}} 1000')
            lines.append(f'node_cpu_seconds_total{{cpu="{cpu}",mode="user"}} 10')
        return "\n".join(lines) + "\n"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Agent:
    """An HAProxy-style agent: answers `reply` and a newline to every connection."""

    def __init__(self, host: str, port: int, reply: str = "100%"):
        self.reply = reply
        agent = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                with contextlib.suppress(OSError):
                    self.request.sendall(f"{agent.reply}\n".encode())

        class Server(socketserver.ThreadingTCPServer):
            allow_reuse_address = True
            daemon_threads = True

        self.server = Server((host, port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Prometheus:
    """The Debian `prometheus` server, scraping `targets` every second."""

    def __init__(self, tmp: Path, targets: list[str]):
        binary = shutil.which("prometheus")
        assert binary, "prometheus not installed: run scripts/install-test-deps"
        self.port = free_port_on("127.0.0.1")
        config = tmp / "prometheus.yml"
        config.write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s, scrape_timeout: 900ms}\n"
            "scrape_configs:\n  - job_name: node\n"
            f"    static_configs: [{{targets: {json.dumps(targets)}}}]\n"
        )
        self.log = tmp / "prometheus.log"
        self.proc = subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.tsdb.path={tmp / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            stdout=subprocess.DEVNULL, stderr=open(self.log, "wb"),  # noqa: SIM115
        )  # fmt: skip
        self.url = f"http://127.0.0.1:{self.port}"

    def query(self, promql: str) -> list[dict[str, Any]]:
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        with urllib.request.urlopen(url, timeout=5) as resp:
            return list(json.load(resp)["data"]["result"])

    def wait_scraped(self, n: int, timeout: float = 20) -> None:
        wait_for(lambda: len(self.query("up == 1")) == n, timeout, f"{n} scraped targets")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(20)


@contextlib.contextmanager
def exporters(hosts: list[str], **kw: Any) -> Iterator[tuple[int, list[Exporter]]]:
    port = free_port_on(*hosts)
    started = [Exporter(h, port, **kw) for h in hosts]
    try:
        yield port, started
    finally:
        for e in started:
            with contextlib.suppress(OSError):
                e.stop()
