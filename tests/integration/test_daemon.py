"""The daemon as a real subprocess on the proxy data plane, against real local servers."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from lvsmon.dataplane import registry
from tests.integration.harness import REPO, Daemon, backends, connect, reached, wait_for
from tests.ports import free_port


def service(
    port: int, *reals: str, scheduler: str = "wlc", extra: str = "", name: str = "web"
) -> str:
    head = (
        f'[[virtual_server]]\nname = "{name}"\naddress = "127.0.0.1"\nport = {port}\n'
        f'protocol = "tcp"\nscheduler = "{scheduler}"\n{extra}\n'
    )
    return head + "\n".join(reals)


@pytest.fixture
def daemon_factory(tmp_path: Path) -> Iterator[list[Daemon]]:
    started: list[Daemon] = []
    yield started
    for d in started:
        d.kill()


def start(factory: list[Daemon], tmp: Path, body: str) -> Daemon:
    d = Daemon(tmp, body)
    factory.append(d)
    return d.start()


def test_rr_distributes_evenly(daemon_factory: list[Daemon], tmp_path: Path) -> None:
    vip = free_port()
    with backends("a", "b", "c") as (a, b, c):
        start(daemon_factory, tmp_path, service(vip, a.toml(), b.toml(), c.toml(), scheduler="rr"))
        seen: Counter[str] = Counter()
        for _ in range(30):
            sock, name = connect(vip)
            sock.close()
            seen[name] += 1
        assert seen == {"a": 10, "b": 10, "c": 10}


def test_wlc_follows_weights_with_held_connections(
    daemon_factory: list[Daemon], tmp_path: Path
) -> None:
    vip = free_port()
    with backends("a", "b") as (a, b):
        d = start(daemon_factory, tmp_path, service(vip, a.toml(1), b.toml(3)))
        held = [connect(vip) for _ in range(40)]
        assert Counter(name for _, name in held) == {"a": 10, "b": 30}
        rs = d.real_servers("web")
        assert rs[f"127.0.0.1:{a.port}"]["active"] == 10
        assert rs[f"127.0.0.1:{b.port}"]["active"] == 30
        for sock, _ in held:
            sock.close()
        # closed connections count as inactive (IPVS accounting), not active
        wait_for(
            lambda: d.real_servers("web")[f"127.0.0.1:{b.port}"]["inactive"] == 30,
            5,
            "closed connections to become inactive",
        )
        assert d.real_servers("web")[f"127.0.0.1:{b.port}"]["active"] == 0


def test_persistence_pins_a_client_network(daemon_factory: list[Daemon], tmp_path: Path) -> None:
    vip = free_port()
    with backends("a", "b", "c") as reals:
        extra = 'persistence_timeout = "5m"\npersistence_netmask = 8'
        start(
            daemon_factory,
            tmp_path,
            service(vip, *(r.toml() for r in reals), scheduler="rr", extra=extra),
        )
        names = set()
        for source in ("127.0.0.1", "127.0.0.2", "127.1.2.3"):  # one /8: one real server
            for _ in range(5):
                sock, name = connect(vip, source=source)
                sock.close()
                names.add(name)
        assert len(names) == 1


def test_quiesce_by_reload_keeps_existing_stream(
    daemon_factory: list[Daemon], tmp_path: Path
) -> None:
    vip = free_port()
    with backends("a", "b") as (a, b):
        d = start(daemon_factory, tmp_path, service(vip, a.toml(), b.toml(), scheduler="rr"))
        streams = [connect(vip) for _ in range(2)]
        on_b = next(s for s, n in streams if n == "b")
        d.reload(service(vip, a.toml(), b.toml(0), scheduler="rr"))
        assert d.real_servers("web")[f"127.0.0.1:{b.port}"]["weight"] == 0
        assert {reached(vip) for _ in range(6)} == {"a"}  # no new connections to b
        on_b.sendall(b"still here")  # the established connection to b continues
        assert on_b.recv(100) == b"still here"
        assert d.sample("lvsmon_config_last_reload_successful") == 1
        for sock, _ in streams:
            sock.close()


def test_reload_streams_every_byte_across_add_remove_reweight(
    daemon_factory: list[Daemon], tmp_path: Path
) -> None:
    vip = free_port()
    with backends("a", "b", "c", "d") as (a, b, c, dd):
        d = start(
            daemon_factory, tmp_path, service(vip, a.toml(), b.toml(), c.toml(), scheduler="rr")
        )
        streams = [connect(vip)[0] for _ in range(3)]
        errors: list[str] = []
        sent = [0] * 3

        def pump(i: int, sock: socket.socket, stop: threading.Event) -> None:
            block = bytes(range(256)) * 64  # 16 KiB, position-checkable
            got = bytearray()
            while not stop.is_set():
                sock.sendall(block)
                sent[i] += len(block)
                while len(got) < sent[i]:
                    got += sock.recv(1 << 20)
                if got != block * (sent[i] // len(block)):
                    errors.append(f"stream {i}: corrupted at {len(got)}")
                    return
                got.clear()
                sent[i] = 0

        stop = threading.Event()
        threads = [threading.Thread(target=pump, args=(i, s, stop)) for i, s in enumerate(streams)]
        for t in threads:
            t.start()
        time.sleep(0.3)
        d.reload(service(vip, a.toml(5), c.toml(), dd.toml(), scheduler="rr"))  # -b, +d, a:5
        time.sleep(0.5)
        stop.set()
        for t in threads:
            t.join(10)
        assert not errors
        rs = d.real_servers("web")
        assert rs[f"127.0.0.1:{a.port}"]["weight"] == 5
        assert rs[f"127.0.0.1:{b.port}"]["state"] == "draining"  # b still has its stream
        assert rs[f"127.0.0.1:{b.port}"]["weight"] == 0
        assert f"127.0.0.1:{dd.port}" in rs
        for s in streams:
            s.close()


def test_removed_server_is_deleted_once_drained(
    daemon_factory: list[Daemon], tmp_path: Path
) -> None:
    vip = free_port()
    with backends("a", "b") as (a, b):
        d = Daemon(tmp_path, "")
        d.header = lambda: Daemon.header(d) + '[daemon.timeouts]\ntcp_fin = "1s"\n'  # type: ignore[method-assign]
        d.write(service(vip, a.toml(), b.toml(), scheduler="rr"))
        daemon_factory.append(d.start())
        held = [connect(vip) for _ in range(2)]
        d.reload(service(vip, a.toml(), scheduler="rr"))
        key = f"127.0.0.1:{b.port}"
        assert d.real_servers("web")[key]["state"] == "draining"
        for sock, _ in held:
            sock.close()
        wait_for(lambda: key not in d.real_servers("web"), 10, "the drained server to be deleted")
        label = {"virtual_server": "web", "real_server": key}
        assert d.sample("lvsmon_real_server_connections_total", **label) is None


def test_invalid_reload_changes_nothing(daemon_factory: list[Daemon], tmp_path: Path) -> None:
    vip = free_port()
    with backends("a", "b") as (a, b):
        d = start(daemon_factory, tmp_path, service(vip, a.toml(), b.toml()))
        before = d.status()["virtual_servers"]
        bad = service(vip, a.toml(70000), b.toml()).replace(
            'scheduler = "wlc"', 'scheduler = "wlcc"'
        )
        d.reload(bad)
        assert d.sample("lvsmon_config_last_reload_successful") == 0
        assert d.status()["virtual_servers"] == before
        log = d.log()
        # the same error text as `lvsmon check`
        check = subprocess.run(
            [sys.executable, "-m", "lvsmon.cli", "check", "-c", str(d.path)],
            capture_output=True,
            text=True,
            cwd=REPO,
        )
        assert check.returncode == 1
        for line in check.stderr.splitlines()[1:]:
            assert line.replace('"', '\\"') in log
        # and a good reload afterwards recovers the metric
        d.reload(service(vip, a.toml(), b.toml()))
        assert d.sample("lvsmon_config_last_reload_successful") == 1


def test_sigterm_lets_connections_finish_and_cleans_up(
    daemon_factory: list[Daemon], tmp_path: Path
) -> None:
    vip = free_port()
    with backends("a") as (a,):
        d = start(daemon_factory, tmp_path, service(vip, a.toml()))
        assert d.pid_file.exists()
        sock, _ = connect(vip)
        assert d.proc is not None
        d.proc.send_signal(15)
        time.sleep(0.3)
        with pytest.raises(OSError):  # stopped accepting new connections
            connect(vip)
        sock.sendall(b"in flight")  # the old one still works during the grace period
        assert sock.recv(100) == b"in flight"
        sock.close()
        assert d.proc.wait(10) == 0
        assert not d.pid_file.exists()
        assert "shutting down" in d.log()


def test_bad_config_refuses_to_start(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[daemon]\ndataplane = "prox"\n')
    run = subprocess.run(
        [sys.executable, "-m", "lvsmon.cli", "run", "-c", str(path)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=30,
    )
    assert run.returncode == 1
    planes = ", ".join(f'"{name}"' for name in registry.NAMES)  # every plane this build has
    assert run.stderr.splitlines() == [
        f"{path}: 1 error",
        f'{path}: daemon.dataplane: "prox" is not valid: expected one of {planes} '
        '(did you mean "proxy"?)',
    ]


def test_status_save_and_reload_commands(daemon_factory: list[Daemon], tmp_path: Path) -> None:
    vip = free_port()
    with backends("a") as (a,):
        d = start(daemon_factory, tmp_path, service(vip, a.toml(2)))

        def cli(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "-m", "lvsmon.cli", *args, "-c", str(d.path)],
                capture_output=True,
                text=True,
                cwd=REPO,
                timeout=30,
            )

        status = cli("status")
        assert status.returncode == 0
        assert f"TCP  127.0.0.1:{vip} wlc" in status.stdout
        assert f"  -> 127.0.0.1:{a.port}" in status.stdout
        save = cli("save")
        svc = f"-t 127.0.0.1:{vip}"
        rules = f"-A {svc} -s wlc\n-a {svc} -r 127.0.0.1:{a.port} -m -w 2\n"
        assert save.stdout == rules
        d.write(service(vip, a.toml(7)))
        assert "sent SIGHUP" in cli("reload").stdout
        wait_for(
            lambda: d.real_servers("web")[f"127.0.0.1:{a.port}"]["weight"] == 7, 10, "weight 7"
        )
        d.stop()
        assert "no director answers" in cli("status").stderr


def test_demo_shows_balancing(tmp_path: Path) -> None:
    # warnings are shown in the demo's process (pytest's filter does not reach it)
    env = {**os.environ, "PYTHONWARNINGS": "default"}
    run = subprocess.run(
        [sys.executable, "-m", "lvsmon.cli", "demo", "--duration", "4"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        env=env,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert "TCP  127.0.0.1:8080 wlc" in run.stdout
    for port in (18081, 18082, 18083):
        assert f"127.0.0.1:{port}" in run.stdout
    assert ", 0 client errors" in run.stdout
    assert "Warning: " not in run.stderr, run.stderr[-2000:]  # e.g. ResourceWarning: ...
