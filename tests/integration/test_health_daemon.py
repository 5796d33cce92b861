"""End to end: `lvsmon run` with health_check keys, the proxy data plane, real backends.

A real server that stops answering is taken out after fall x interval: new
connections through the virtual server all go to the others; when it comes
back it gets connections again after rise x interval (quiesce: weight 0
meanwhile; slow start: the weight ramps). `lvsmon check` rejects bad checks
with their key path.
"""

from __future__ import annotations

import contextlib
import re
import socketserver
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.harness import REPO, Daemon, connect, wait_for
from tests.ports import free_port


class Backend:
    """A real server that greets with its name and can stop and start on the same port."""

    def __init__(self, name: str, port: int | None = None):
        self.name = name
        self.port = port or free_port()  # below the ephemeral range: no self-connect while down
        self.server: socketserver.ThreadingTCPServer | None = None
        self.start()

    def start(self) -> None:
        name = self.name

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                with contextlib.suppress(OSError):
                    self.request.sendall(f"{name}\n".encode())
                    while self.request.recv(65536):
                        pass

        class Server(socketserver.ThreadingTCPServer):
            allow_reuse_address = True
            daemon_threads = True

        self.server = Server(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def toml(self, weight: int = 1) -> str:
        return (
            f'[[virtual_server.real_server]]\naddress = "127.0.0.1"\nport = {self.port}\n'
            f"weight = {weight}\n"
        )


@pytest.fixture
def pair() -> Iterator[tuple[Backend, Backend]]:
    a, b = Backend("a"), Backend("b")
    yield a, b
    a.stop()
    b.stop()


def service(vport: int, on_failure: str, extra: str = "") -> str:
    return f"""
[[virtual_server]]
name = "web"
address = "127.0.0.1"
port = {vport}
scheduler = "rr"
on_failure = "{on_failure}"
{extra}

[virtual_server.health_check]
type = "tcp"
interval = "100ms"
timeout = "50ms"
rise = 2
fall = 2
"""


def names(vport: int, n: int = 12) -> Counter[str]:
    seen: Counter[str] = Counter()
    for _ in range(n):
        sock, name = connect(vport)
        sock.close()
        seen[name] += 1
    return seen


@contextlib.contextmanager
def running(tmp_path: Path, body: str) -> Iterator[Daemon]:
    daemon = Daemon(tmp_path, body).start()
    try:
        yield daemon
    finally:
        daemon.stop()


def test_a_down_real_server_gets_no_new_connections_until_it_rises(
    tmp_path: Path, pair: tuple[Backend, Backend]
) -> None:
    a, b = pair
    vport = free_port()
    with running(tmp_path, service(vport, "remove") + a.toml() + b.toml()) as d:
        assert names(vport) == Counter(a=6, b=6)
        # b's first check must be in: a probe's very first failure takes it out at once
        # (lvsmon/health/state.py), and this test times fall x interval
        checked = "lvsmon_healthcheck_duration_seconds_count"
        wait_for(
            lambda: d.sample(checked, check="tcp", real_server=f"127.0.0.1:{b.port}"),
            5,
            "b's first check",
        )
        b.stop()
        t0 = time.monotonic()
        wait_for(
            lambda: d.sample("lvsmon_real_server_up", real_server=f"127.0.0.1:{b.port}") == 0,
            5,
            "b to be reported down",
        )
        assert time.monotonic() - t0 < 2 * 0.1 + 0.1 + 1.0  # fall x interval, + one sync tick
        assert names(vport) == Counter(a=12)
        b.start()
        wait_for(
            lambda: d.sample("lvsmon_real_server_up", real_server=f"127.0.0.1:{b.port}") == 1,
            5,
            "b to be reported up",
        )
        assert names(vport) == Counter(a=6, b=6)
        rs = f"127.0.0.1:{b.port}"
        transitions = d.sample("lvsmon_real_server_transitions_total", real_server=rs)
        assert transitions == 2
        # fall = 2 failures at least; a probe in flight when b stopped may fail otherwise
        # than "refused" (e.g. a reset), so count every reason
        from prometheus_client.parser import text_string_to_metric_families

        failures = {
            s.labels["reason"]: s.value
            for f in text_string_to_metric_families(d.metrics())
            for s in f.samples
            if s.name == "lvsmon_healthcheck_failures_total" and s.labels["real_server"] == rs
        }
        assert sum(failures.values()) >= 2 and set(failures) <= {"refused", "reset"}, failures
        assert d.sample("lvsmon_healthcheck_duration_seconds_count", real_server=rs, check="tcp")
        log = d.log()
    downs = re.findall(r'msg="real server down".*', log)
    ups = re.findall(r'msg="real server up".*', log)
    assert len(downs) == 1 and len(ups) == 1, log
    assert f"real_server=127.0.0.1:{b.port}" in downs[0]
    assert "reason=refused" in downs[0] or "reason=reset" in downs[0], downs[0]


def test_quiesce_keeps_weight_0_and_slow_start_ramps_back(
    tmp_path: Path, pair: tuple[Backend, Backend]
) -> None:
    a, b = pair
    vport = free_port()
    body = service(vport, "quiesce", 'slow_start = "3s"') + a.toml(10) + b.toml(10)
    with running(tmp_path, body) as d:
        b.stop()
        key = f"127.0.0.1:{b.port}"
        wait_for(lambda: d.real_servers("web")[key]["state"] == "down", 5, "b down")
        assert d.real_servers("web")[key]["weight"] == 0  # quiesced: still in the table
        assert names(vport) == Counter(a=12)
        b.start()
        wait_for(lambda: d.real_servers("web")[key]["state"] == "up", 5, "b up")
        first = d.real_servers("web")[key]["weight"]
        assert 1 <= first < 10
        wait_for(lambda: d.real_servers("web")[key]["weight"] == 10, 6, "the ramp to reach 10")


def test_the_sorry_server_takes_over_when_every_real_server_is_down(
    tmp_path: Path, pair: tuple[Backend, Backend]
) -> None:
    a, sorry = pair
    vport = free_port()
    body = service(vport, "remove", f'sorry_server = "127.0.0.1:{sorry.port}"') + a.toml()
    with running(tmp_path, body):
        assert names(vport, 4) == Counter(a=4)
        a.stop()
        wait_for(lambda: names(vport, 4) == Counter(b=4), 5, "the sorry server to answer")
        a.start()
        wait_for(lambda: names(vport, 4) == Counter(a=4), 5, "a to be back")


def test_lvsmon_check_rejects_bad_health_checks_with_key_paths(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("""
[[virtual_server]]
name = "web"
address = "127.0.0.1"
port = 80

[virtual_server.health_check]
type = "http"
interval = "1s"
timeout = "2s"
expect_body = "ok("

[[virtual_server.real_server]]
address = "127.0.0.1"
port = 8080

[virtual_server.real_server.health_check]
type = "exec"
program = "/nonexistent/check"
""")
    result = subprocess.run(
        [sys.executable, "-m", "lvsmon.cli", "check", "-c", str(config)],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    path = f"{config}: virtual_server[web]"
    assert (
        f'{path}.health_check.timeout: "2s" is not valid: expected a duration shorter than '
        'interval ("1s")' in lines
    )
    assert any(
        line.startswith(f'{path}.health_check.expect_body: "ok(" is not valid') for line in lines
    )
    assert (
        f'{path}.real_server[1].health_check.program: "/nonexistent/check" is not valid: '
        "expected an executable program (path or name) (not found)" in lines
    )


def test_a_reload_keeps_the_verdicts(tmp_path: Path, pair: tuple[Backend, Backend]) -> None:
    a, b = pair
    vport = free_port()
    body = service(vport, "remove") + a.toml() + b.toml()
    with running(tmp_path, body) as d:
        b.stop()
        key = f"127.0.0.1:{b.port}"
        wait_for(lambda: d.sample("lvsmon_real_server_up", real_server=key) == 0, 5, "b down")
        d.reload(body.replace('scheduler = "rr"', 'scheduler = "wrr"'))
        time.sleep(0.3)
        assert names(vport) == Counter(a=12)  # still out: no flap to up on reload
        assert d.log().count('msg="real server down"') == 1
