"""The notify protocol's sending side against a real AF_UNIX datagram socket."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from lvsmon.sdnotify import Notifier


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[str, socket.socket]]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = str(tmp_path / "notify")
    sock.bind(path)
    sock.settimeout(5)
    yield path, sock
    sock.close()


def test_states_are_datagrams_of_newline_separated_fields(
    listener: tuple[str, socket.socket],
) -> None:
    path, sock = listener
    n = Notifier({"NOTIFY_SOCKET": path})
    n.ready("2 virtual servers on ipvs")
    assert sock.recv(4096) == b"READY=1\nSTATUS=2 virtual servers on ipvs"
    n.reloading()
    fields = dict(f.split("=", 1) for f in sock.recv(4096).decode().split("\n"))
    assert fields["RELOADING"] == "1" and int(fields["MONOTONIC_USEC"]) > 0
    n.stopping()
    assert sock.recv(4096) == b"STOPPING=1\nSTATUS=stopping"
    n.close()


def test_abstract_socket_names() -> None:
    name = f"lvsmon-test-{os.getpid()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(5)
    n = Notifier({"NOTIFY_SOCKET": "@" + name})
    try:
        n.ready()
        assert sock.recv(4096) == b"READY=1"
    finally:
        n.close()
        sock.close()


def test_watchdog_only_for_this_pid_and_at_half_the_period(
    listener: tuple[str, socket.socket],
) -> None:
    path, sock = listener
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "4000000"}
    assert Notifier(env).watchdog_interval == 2.0
    assert Notifier({**env, "WATCHDOG_PID": "1"}).watchdog_interval is None
    assert Notifier({**env, "WATCHDOG_PID": str(os.getpid())}).watchdog_interval == 2.0
    n = Notifier(env)
    n.heartbeat()
    n.heartbeat()  # not due again yet: one datagram
    assert sock.recv(4096) == b"WATCHDOG=1"
    sock.settimeout(0.2)
    with pytest.raises(TimeoutError):
        sock.recv(4096)
    n.close()


def test_without_a_socket_nothing_is_sent_and_nothing_fails() -> None:
    n = Notifier({})
    assert not n.enabled and not n.send("READY=1")
    n.heartbeat()
    nowhere = Notifier({"NOTIFY_SOCKET": "/nonexistent/socket"})
    assert nowhere.send("READY=1") is False
    nowhere.close()
