"""SIGHUP with a hostile config keeps the running config, its table and its connections,
and counts the failure (issue 14: a reload with any fuzzed input changes nothing).

One daemon, one established connection held through every reload: deep nesting, NaN,
wrong types, a FIFO / /dev/zero / oversized web config, invalid UTF-8, the config path
turned into a directory, and structural mutations of the daemon's own config drawn by
the fuzz generator. After each: the daemon answers, /status shows the old table, the
held connection still echoes, new connections are balanced as before,
lvsmon_config_last_reload_successful is 0 and lvsmon_config_reload_failures_total went
up by one. A valid reload at the end is applied.
"""

from __future__ import annotations

import os
import socket
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fuzz.mutations import dumps, mutations
from tests.integration.harness import Daemon, backends, connect, wait_for
from tests.integration.test_daemon import service
from tests.ports import free_port


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[tuple[Daemon, int]]:
    vip = free_port()
    with backends("a", "b") as (a, b):
        d = Daemon(tmp_path, service(vip, a.toml(), b.toml(), scheduler="rr"))
        try:
            yield d.start(), vip
        finally:
            d.kill()


def _hostile(d: Daemon, tmp: Path) -> Iterator[tuple[str, str | None]]:
    """(what, raw config text); None: the config path itself is made hostile."""
    good = d.path.read_text()
    header = d.header()
    fifo = tmp / "fifo"
    os.mkfifo(fifo)
    huge = tmp / "huge.yml"
    with huge.open("wb") as f:
        f.truncate(64 * 2**20)
    yield "deep nesting", header + "x = " + "[" * 100_000 + "]" * 100_000 + "\n"
    yield (
        "NaN timeout",
        good.replace('scheduler = "rr"', 'scheduler = "rr"\npersistence_timeout = nan'),
    )
    yield "a list as name", good.replace('name = "web"', "name = [1, 2]")
    yield (
        "web config is a FIFO",
        good.replace("[daemon]\n", f'[daemon]\nweb_config_file = "{fifo}"\n'),
    )
    yield (
        "web config is /dev/zero",
        good.replace("[daemon]\n", '[daemon]\nweb_config_file = "/dev/zero"\n'),
    )
    yield (
        "web config of 64 MiB",
        good.replace("[daemon]\n", f'[daemon]\nweb_config_file = "{huge}"\n'),
    )
    yield "invalid UTF-8", header + "\n# \xff\xfe\n"
    yield "the config is a directory", None
    doc = tomllib.loads(good)
    # not [daemon]: a mutation that is still valid there may move the metrics listener
    all_mutations = [(w, m) for w, m in mutations(doc) if not w.startswith("daemon")]
    # a fixed spread over the whole document (the unit tier runs every one)
    for what, mutated in all_mutations[:: max(1, len(all_mutations) // 25)]:
        yield f"mutation: {what}", dumps(mutated)


def _table(d: Daemon) -> list[tuple[object, ...]]:
    """What is programmed, without the counters that move with every connection."""
    return [
        (
            vs["name"],
            vs["address"],
            vs["port"],
            vs["scheduler"],
            sorted((rs["address"], rs["port"], rs["weight"]) for rs in vs["real_servers"]),
        )
        for vs in d.status()["virtual_servers"]
    ]


def _echo(sock: socket.socket) -> bytes:
    sock.sendall(b"ping")
    data = b""
    while len(data) < 4:
        chunk = sock.recv(4 - len(data))
        if not chunk:
            break
        data += chunk
    return data


def test_hostile_reloads_change_nothing(daemon: tuple[Daemon, int], tmp_path: Path) -> None:
    d, vip = daemon
    good = d.path.read_text()
    before = _table(d)
    held, _ = connect(vip)
    failures = d.sample("lvsmon_config_reload_failures_total")
    assert failures == 0
    rejected = 0
    for what, text in _hostile(d, tmp_path):
        if text is None:
            d.path.unlink()
            d.path.mkdir()
            d.reload()
            d.path.rmdir()
            d.path.write_text(good)
        elif "\xff" in text:
            d.path.write_bytes(text.encode("latin-1"))
            d.reload()
        else:
            d.reload(raw=text)
        if d.sample("lvsmon_config_last_reload_successful") == 1:
            d.reload(raw=good)  # a mutation that is still a valid config (a weight changed)
            continue
        rejected += 1
        assert d.proc is not None and d.proc.poll() is None, f"{what}: the daemon died"
        assert d.sample("lvsmon_config_reload_failures_total") == failures + rejected, what
        assert _table(d) == before, what
        assert _echo(held) == b"ping", f"{what}: the held connection broke"
        names = set()
        for _ in range(4):
            sock, name = connect(vip)
            sock.close()
            names.add(name)
        assert names == {"a", "b"}, what
        d.reload(raw=good)  # back to the running config before the next attempt
        wait_for(lambda: d.sample("lvsmon_config_last_reload_successful") == 1, 10, "recovery")
    assert rejected >= 10
    assert "Traceback" not in d.log()
    held.close()
