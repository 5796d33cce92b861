"""Helpers for the adaptive-weight integration tests: exporters and agents.

Real processes and sockets on loopback. Real servers sit on their own loopback
addresses (127.0.0.2, .3, ...), each with its exporter or agent on one shared
port, as node_exporter would be on port 9100 of each host.
"""

from __future__ import annotations

import contextlib
import http.server
import socketserver
import ssl
import threading
from collections.abc import Iterator
from typing import Any

from tests.ports import free_port_on


class Exporter:
    """node_exporter's shape: `node_load1` and per-CPU idle counters; the test sets the load."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        cpus: int = 2,
        tls: ssl.SSLContext | None = None,
        token: str = "",
    ):
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
        lines = [
            "# HELP node_load1 1m load average.",
            "# TYPE node_load1 gauge",
            f"node_load1 {self.load}",
            "# TYPE node_cpu_seconds_total counter",
        ]
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
