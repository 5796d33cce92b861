"""`lvsmon run` under a systemd-like supervisor: the real daemon as a subprocess, a real
AF_UNIX datagram socket owned by the test as $NOTIFY_SOCKET.

READY=1 arrives once the table is programmed (the table is in /status the moment it
arrives), RELOADING=1 and READY=1 frame a SIGHUP reload (the new weight is in effect
at READY), WATCHDOG=1 comes at half of $WATCHDOG_USEC from the main loop (never a gap
longer than the period: systemd's contract), STOPPING=1 on SIGTERM. Logs are JSON
lines with --log-format json, and no child process inherits the notify socket.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import socket
import threading
import time
from pathlib import Path

from tests.integration.harness import Backend, Daemon, wait_for
from tests.ports import free_port

WATCHDOG_USEC = 3_000_000


class Supervisor:
    """Receives every datagram on a thread, stamped with its arrival time."""

    def __init__(self, path: Path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.messages: list[tuple[float, dict[str, str]]] = []
        self._read = 0
        threading.Thread(target=self._receive, daemon=True).start()

    def _receive(self) -> None:
        while True:
            try:
                data = self.sock.recv(4096).decode()
            except OSError:
                return
            message = dict(line.split("=", 1) for line in data.split("\n") if line)
            self.messages.append((time.monotonic(), message))

    def next(self, field: str, daemon: Daemon, timeout: float = 60.0) -> dict[str, str]:
        """The next message carrying `field` after the last one returned."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if daemon.proc is not None and daemon.proc.poll() is not None and field != "STOPPING":
                raise AssertionError(f"daemon exited {daemon.proc.returncode}:\n{daemon.log()}")
            while self._read < len(self.messages):
                message = self.messages[self._read][1]
                self._read += 1
                if field in message:
                    return message
            time.sleep(0.01)
        raise AssertionError(f"no {field}= within {timeout}s: {self.messages}\n{daemon.log()}")

    def times(self, field: str) -> list[float]:
        return [t for t, m in self.messages if field in m]

    def close(self) -> None:
        self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


def body(backend: Backend, weight: int, env_file: Path, port: int) -> str:
    return (
        '[[virtual_server]]\nname = "web"\naddress = "127.0.0.1"\n'
        f'port = {port}\nscheduler = "wrr"\n\n'
        '[virtual_server.health_check]\ntype = "exec"\nprogram = "/bin/sh"\n'
        f'args = ["-c", "env > {env_file}"]\ninterval = "1s"\n\n' + backend.toml(weight)
    )


def test_ready_reloading_watchdog_stopping(tmp_path: Path) -> None:
    backend = Backend("a")
    sup = Supervisor(tmp_path / "notify")
    env_file = tmp_path / "check.env"
    vip_port = free_port()
    daemon = Daemon(tmp_path, body(backend, 3, env_file, vip_port))
    proc = daemon.launch(
        "--log-format",
        "json",
        env={
            **os.environ,
            "NOTIFY_SOCKET": str(tmp_path / "notify"),
            "WATCHDOG_USEC": str(WATCHDOG_USEC),
        },
    )
    try:
        ready = sup.next("READY", daemon)
        assert ready["STATUS"] == "1 virtual server on proxy"
        # no retry: the table is programmed by the time READY=1 is sent
        assert daemon.real_servers("web")[f"127.0.0.1:{backend.port}"]["weight"] == 3

        time.sleep(2 * WATCHDOG_USEC / 1e6)
        pings = sup.times("WATCHDOG")
        assert len(pings) >= 3, sup.messages
        assert all(b - a < WATCHDOG_USEC / 1e6 for a, b in itertools.pairwise(pings)), pings

        daemon.write(body(backend, 7, env_file, vip_port))
        proc.send_signal(signal.SIGHUP)
        reloading = sup.next("RELOADING", daemon)
        assert int(reloading["MONOTONIC_USEC"]) > 0
        assert sup.next("READY", daemon)["READY"] == "1"
        assert daemon.real_servers("web")[f"127.0.0.1:{backend.port}"]["weight"] == 7

        wait_for(env_file.exists, 10, "the exec check to run")
        assert "NOTIFY_SOCKET" not in env_file.read_text()
        assert "LVSMON_LOG_FORMAT=json" in env_file.read_text()

        proc.send_signal(signal.SIGTERM)
        assert sup.next("STOPPING", daemon)["STOPPING"] == "1"
        assert proc.wait(30) == 0
        records = [json.loads(line) for line in daemon.log().splitlines() if line.strip()]
        assert {"lvsmon started", "reload applied", "shutting down"} <= {r["msg"] for r in records}
        assert all({"ts", "level", "logger", "msg"} <= r.keys() for r in records)
    finally:
        daemon.kill()
        backend.close()
        sup.close()
