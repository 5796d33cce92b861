"""A SIGHUP storm under steady traffic: 50 reloads, valid and invalid configs
alternating, while clients connect through the proxy plane all along and one long
connection stays open. Nothing fails, the open connection survives, the daemon ends
on the last valid config, and the reload metric tells the last outcome."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

from tests.integration.harness import Daemon, backends, connect, wait_for
from tests.integration.test_daemon import service
from tests.ports import free_port

SIGNALS = 50
RATE = 20.0  # per second: harsher than the 50 in 10 s, and shorter


class Load:
    """Clients in a loop: connect, greeting, one echo, close. Counts what failed."""

    def __init__(self, port: int):
        self.port = port
        self.ok = 0
        self.failed: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                sock, _ = connect(self.port)
                with sock:
                    sock.sendall(b"ping\n")
                    if sock.recv(16) != b"ping\n":
                        raise ConnectionError("no echo")
                self.ok += 1
            except OSError as exc:
                self.failed.append(repr(exc))
            time.sleep(0.005)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


def write_atomically(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def test_sighup_storm_under_traffic_loses_nothing(tmp_path: Path) -> None:
    with backends("a", "b") as (a, b):
        vip = free_port()
        d = Daemon(tmp_path, service(vip, a.toml(), b.toml(), scheduler="rr"))
        d.start()
        try:
            held, _ = connect(vip)
            load = Load(vip)
            assert d.proc is not None
            for i in range(SIGNALS):
                if i % 2:
                    body = service(vip, a.toml(), b.toml(), scheduler="wlcc")  # invalid
                else:
                    body = service(vip, a.toml(weight=1 + i), b.toml(), scheduler="rr")
                write_atomically(d.path, d.header() + body)
                d.proc.send_signal(signal.SIGHUP)
                time.sleep(1 / RATE)
            last = 1 + (SIGNALS - 2)
            write_atomically(d.path, d.header() + service(vip, a.toml(last), b.toml()))
            d.proc.send_signal(signal.SIGHUP)
            wait_for(
                lambda: d.real_servers("web")[f"127.0.0.1:{a.port}"]["weight"] == last,
                10,
                "the last valid config",
            )
            time.sleep(0.3)
            load.stop()
            print(f"\nSIGHUP storm: {load.ok} requests, {len(load.failed)} failed")
            assert load.ok > 0 and load.failed == []
            held.sendall(b"still here\n")
            assert held.recv(64) == b"still here\n"  # the open connection survived
            held.close()
            assert d.sample("lvsmon_config_last_reload_successful") == 1
            assert d.proc.poll() is None and "Traceback" not in d.log()
            rejected = d.log().count("reload rejected: nothing changed")
            assert rejected >= 1  # the invalid ones were read and refused, not skipped
        finally:
            d.kill()
