"""Real processes on loopback: backend servers, the lvsmon daemon as a subprocess."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from tests.ports import free_port

REPO = Path(__file__).resolve().parents[2]


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError):
            value = predicate()
            if value:
                return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class Backend:
    """A TCP real server: greets with its name, then echoes until EOF. Counts accepts."""

    def __init__(self, name: str, host: str = "127.0.0.1"):
        self.name = name
        self.accepted = 0
        self.peers: Counter[str] = Counter()
        backend = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                backend.accepted += 1
                backend.peers[self.client_address[0]] += 1
                sock: socket.socket = self.request
                with contextlib.suppress(OSError):
                    sock.sendall(f"{backend.name}\n".encode())
                    while data := sock.recv(65536):
                        sock.sendall(data)

        family = socket.AF_INET6 if ":" in host else socket.AF_INET

        class Server(socketserver.ThreadingTCPServer):
            address_family = family
            allow_reuse_address = True
            daemon_threads = True

        self.server = Server((host, 0), Handler)
        self.host = host
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def toml(self, weight: int = 1) -> str:
        return (
            f'[[virtual_server.real_server]]\naddress = "{self.host}"\n'
            f"port = {self.port}\nweight = {weight}\n"
        )

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def connect(
    port: int, host: str = "127.0.0.1", source: str | None = None
) -> tuple[socket.socket, str]:
    """Open a connection through the virtual server; returns it and the backend's name."""
    sock = socket.create_connection(
        (host, port), timeout=5, source_address=(source, 0) if source else None
    )
    name = b""
    try:
        while not name.endswith(b"\n"):
            chunk = sock.recv(1)
            if not chunk:
                raise ConnectionError(f"closed before greeting (got {name!r})")
            name += chunk
    except OSError:
        sock.close()
        raise
    return sock, name.decode().strip()


def reached(port: int, host: str = "127.0.0.1") -> str:
    """The backend one short connection through the virtual server reaches (then closed)."""
    sock, name = connect(port, host)
    sock.close()
    return name


class Daemon:
    """`lvsmon run -c FILE` as a subprocess with its own metrics port and pid file."""

    def __init__(self, tmp: Path, body: str, dataplane: str = "proxy"):
        self.dir = tmp
        self.metrics_port = free_port()
        self.pid_file = tmp / "lvsmon.pid"
        self.path = tmp / "lvsmon.toml"
        self.log_path = tmp / "daemon.log"
        self.dataplane = dataplane
        self.write(body)
        self.proc: subprocess.Popen[bytes] | None = None

    def header(self) -> str:
        return (
            f'[daemon]\ndataplane = "{self.dataplane}"\n'
            f'metrics_listen = "127.0.0.1:{self.metrics_port}"\n'
            f'pid_file = "{self.pid_file}"\nlog_level = "info"\nshutdown_grace = "5s"\n'
        )

    def write(self, body: str) -> None:
        self.path.write_text(self.header() + body)

    def start(self) -> Daemon:
        self.launch()
        wait_for(self._ready, 20, "the daemon to answer /status")
        return self

    def launch(self, *args: str, **popen: Any) -> subprocess.Popen[bytes]:
        """`lvsmon run -c FILE ARGS...` with stderr to the log, not waited for (start()
        waits); `popen` adds Popen arguments (env, preexec_fn)."""
        with open(self.log_path, "wb") as log:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "lvsmon.cli", "run", "-c", str(self.path), *args],
                stdout=subprocess.DEVNULL,
                stderr=log,
                cwd=REPO,
                **popen,
            )
        return self.proc

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"daemon exited {self.proc.returncode}:\n{self.log()}")
        self.status()
        return True

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def get(self, path: str) -> bytes:
        url = f"http://127.0.0.1:{self.metrics_port}{path}"
        with urllib.request.urlopen(url, timeout=5) as resp:
            return bytes(resp.read())

    def status(self) -> dict[str, Any]:
        return dict(json.loads(self.get("/status")))

    def metrics(self) -> str:
        return self.get("/metrics").decode()

    def sample(self, name: str, **labels: str) -> float | None:
        """One sample's value from a live scrape (None when the series is absent)."""
        from prometheus_client.parser import text_string_to_metric_families

        for family in text_string_to_metric_families(self.metrics()):
            for s in family.samples:
                if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                    return float(s.value)
        return None

    def real_servers(self, vs: str) -> dict[str, dict[str, Any]]:
        for service in self.status()["virtual_servers"]:
            if service["name"] == vs:
                return {f"{r['address']}:{r['port']}": r for r in service["real_servers"]}
        return {}

    def reload(self, body: str | None = None, raw: str | None = None) -> None:
        """Rewrite the config (body after the [daemon] header, or raw text) and SIGHUP."""
        if raw is not None:
            self.path.write_text(raw)
        elif body is not None:
            self.write(body)
        assert self.proc is not None
        marker = self.log().count("reload")
        self.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: self.log().count("reload") > marker, 10, "the reload to be logged")

    def stop(self, timeout: float = 20) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@contextlib.contextmanager
def backends(*names: str, host: str = "127.0.0.1") -> Iterator[list[Backend]]:
    started = [Backend(n, host) for n in names]
    try:
        yield started
    finally:
        for b in started:
            b.close()
