"""TCP and HTTP checks against real servers on loopback that misbehave on command.

Each verdict and each transition's timing is asserted on a running HealthMonitor
(interval 100 ms): down after `fall` x interval, up after `rise` x interval,
each within one interval (plus the timeout, for probes that time out).
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import replace

import pytest

from lvsmon.health.monitor import Target
from lvsmon.model import DestKey
from lvsmon.model.health import CheckType, HealthCheck, HttpSpec, Reason, TcpSpec
from tests.integration.test_health_support import (
    WEB,
    Misbehaving,
    Watch,
    first_verdict,
    run,
)
from tests.ports import free_port

I = 0.1  # interval  # noqa: E741
TIMEOUT = 0.05
HTTP = HealthCheck(
    CheckType.HTTP,
    interval=I,
    timeout=TIMEOUT,
    rise=2,
    fall=3,
    spec=HttpSpec(path="/health", expect_body=re.compile(b"healthy")),
)

# mode -> (reason, detail pattern)
MISBEHAVIOUR = {
    "refuse": (Reason.REFUSED, "connection refused"),
    "hang": (Reason.TIMEOUT, r"no answer within 0.05s \(read the status line\)"),
    "slow": (Reason.TIMEOUT, "no answer within"),
    "status": (Reason.BAD_STATUS, "status 503"),
    "body": (Reason.BAD_BODY, "expect_body did not match"),
    "reset": (Reason.RESET, "connection reset"),
    "close": (Reason.CLOSED, "closed by the real server before the status line ended"),
}


def assert_took(elapsed: float, rounds: int, slack: float = 0.0) -> None:
    """A transition after about `rounds` probes (the count itself is asserted from the
    verdict's text): not after one probe, not after many. The bounds allow a probe of
    scheduling jitter each way: on a loaded 2-core CI box one late probe is followed by
    a punctual one (CI once saw 3 probes in 0.137 s at a 0.1 s interval)."""
    low, high = (rounds - 2) * I, (rounds + 2) * I + slack
    assert low <= elapsed <= high, f"{elapsed:.3f}s for {rounds} x {I}s"


@pytest.mark.parametrize("mode", sorted(MISBEHAVIOUR))
def test_misbehaviour_goes_down_after_fall_and_back_after_rise(mode: str) -> None:
    reason, detail = MISBEHAVIOUR[mode]
    server = Misbehaving()

    async def scenario() -> None:
        async with Watch([Target(WEB, server.dest, HTTP, "web")]) as w:
            (probe,) = await w.settled()
            await asyncio.sleep(2 * I)
            assert probe.state.up and w.quiet() == []
            t0 = server.set(mode)
            down = await w.next()
            assert not down.up and down.reason is reason, down
            assert re.search(detail, down.why), down.why
            assert down.why.startswith("3 consecutive failures")
            slack = TIMEOUT if reason is Reason.TIMEOUT else 0.0
            assert_took(down.at - t0, HTTP.fall, slack)
            assert w.monitor.down() == {(WEB, server.dest)}
            assert sum(probe.failures.values()) >= HTTP.fall
            t1 = server.set("ok")
            up = await w.next()
            assert up.up and up.why == "2 consecutive successes"
            assert_took(up.at - t1, HTTP.rise)
            assert w.monitor.down() == frozenset()

    try:
        run(scenario())
    finally:
        server.close()


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_tcp_check_refused_and_back_on_ipv4_and_ipv6(host: str) -> None:
    server = Misbehaving(host)
    check = HealthCheck(CheckType.TCP, interval=I, timeout=TIMEOUT, rise=1, fall=2)

    async def scenario() -> None:
        async with Watch([Target(WEB, server.dest, check, "web")]) as w:
            (probe,) = await w.settled()
            assert probe.state.up
            t0 = server.set("refuse")
            down = await w.next()
            assert down.reason is Reason.REFUSED
            assert_took(down.at - t0, check.fall)
            t1 = server.set("hang")  # a TCP check only needs the handshake
            up = await w.next()
            assert up.up
            assert_took(up.at - t1, check.rise)

    try:
        run(scenario())
    finally:
        server.close()


def test_a_flapping_server_does_not_flap_the_verdict() -> None:
    """200 and 503 alternately: neither 3 failures nor 2 successes in a row while up."""
    server = Misbehaving()

    async def scenario() -> None:
        async with Watch([Target(WEB, server.dest, HTTP, "web")]) as w:
            (probe,) = await w.settled()
            server.set("flap")
            await asyncio.sleep(12 * I)
            assert probe.state.up and w.quiet() == []
            assert probe.failures[Reason.BAD_STATUS] >= 4

    try:
        run(scenario())
    finally:
        server.close()


def test_a_10_mb_answer_is_read_only_up_to_the_cap() -> None:
    server = Misbehaving()
    server.set("big")
    capped = replace(HTTP, max_response_bytes=65536)

    async def scenario() -> None:
        # the body starts with "status: healthy": found in the first 64 KiB
        probe = await first_verdict(capped, server.dest)
        assert probe.state.up and probe.durations.sum < 0.05 * sum(probe.durations.counts)
        # a pattern only past the cap is never seen: bad_body, not a 10 MB read
        assert isinstance(capped.spec, HttpSpec)
        tail = replace(capped, spec=replace(capped.spec, expect_body=re.compile(b"not-there")))
        start = time.monotonic()
        probe = await first_verdict(tail, server.dest)
        assert not probe.state.up and probe.state.reason is Reason.BAD_BODY
        assert "first 65" in probe.state.detail and time.monotonic() - start < 1.0

    try:
        run(scenario())
        time.sleep(0.2)
        assert server.cut_short >= 2  # each probe reset the connection long before 10 MB
    finally:
        server.close()


def test_status_ranges_and_head_requests() -> None:
    server = Misbehaving()
    server.set("status")

    async def scenario() -> None:
        spec = HttpSpec(method="HEAD", expect_status=((200, 299), (503, 503)))
        ok = await first_verdict(replace(HTTP, spec=spec), server.dest)
        assert ok.state.up
        bad = await first_verdict(replace(HTTP, spec=HttpSpec()), server.dest)
        assert not bad.state.up and bad.state.detail == "status 503"

    try:
        run(scenario())
    finally:
        server.close()


def test_nothing_listening_and_connect_port_override() -> None:
    server = Misbehaving()

    async def scenario() -> None:
        dead = DestKey("127.0.0.1", free_port())
        probe = await first_verdict(HTTP, dead)
        assert probe.state.reason is Reason.REFUSED
        # the real server's own port is dead, the check goes to the server's port
        moved = replace(HTTP, connect_port=server.port)
        assert (await first_verdict(moved, dead)).state.up

    try:
        run(scenario())
    finally:
        server.close()


def test_one_probe_for_two_virtual_servers() -> None:
    server = Misbehaving()
    other = WEB._replace(port=8080)

    async def scenario() -> None:
        targets = [Target(WEB, server.dest, HTTP, "web"), Target(other, server.dest, HTTP, "alt")]
        async with Watch(targets) as w:
            await w.settled()
            before = server.requests
            await asyncio.sleep(10 * I)
            assert 8 <= server.requests - before <= 12  # one probe, not two
            server.set("status")
            events = [await w.next(), await w.next()]
            assert {e.target.virtual_server for e in events} == {"web", "alt"}
            assert w.monitor.down() == {(WEB, server.dest), (other, server.dest)}

    try:
        run(scenario())
    finally:
        server.close()


def test_checks_run_on_the_stdlib_loop_too() -> None:
    server = Misbehaving()

    async def scenario() -> None:
        assert (await first_verdict(HTTP, server.dest)).state.up
        server.set("reset")
        assert (await first_verdict(HTTP, server.dest)).state.reason is Reason.RESET

    try:
        asyncio.run(scenario())
    finally:
        server.close()


def test_tcp_send_expect_banner_literal_hex_and_any() -> None:
    """An SMTP-like server: a banner, then one answer per line; `bye` closes silently."""
    import contextlib
    import socket
    import threading

    from lvsmon.model.health import SendExpectSpec

    listener = socket.create_server(("127.0.0.1", 0))
    dest = DestKey("127.0.0.1", listener.getsockname()[1])

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn, contextlib.suppress(OSError):  # probes end with RST
                conn.sendall(b"220 mail ready\r\n")
                line = conn.recv(100)
                if not line.startswith(b"bye"):
                    conn.sendall(b"250 " + line)

    threading.Thread(target=serve, daemon=True).start()

    def check(**spec: object) -> HealthCheck:
        send_expect = SendExpectSpec(**spec)  # type: ignore[arg-type]
        return HealthCheck(CheckType.SEND_EXPECT, interval=1.0, timeout=0.5, spec=send_expect)

    async def verdict(c: HealthCheck) -> tuple[bool, Reason | None]:
        probe = await first_verdict(c, dest)
        return probe.state.up, probe.state.reason

    async def scenario() -> None:
        assert await verdict(check(expect=re.compile(b"^220 "))) == (True, None)
        assert await verdict(
            check(send=b"\x00\xffHELO\r\n", expect=re.compile(re.escape(b"250 \x00\xff")))
        ) == (True, None)
        assert await verdict(check(send=b"x\r\n", expect_any=True)) == (True, None)
        assert await verdict(check(expect=re.compile(b"^554"))) == (False, Reason.TIMEOUT)
        assert await verdict(check(send=b"bye\r\n", expect=re.compile(b"^250"))) == (
            False,
            Reason.BAD_ANSWER,
        )
        assert await verdict(check(send=b"x\r\n")) == (True, None)  # nothing to expect

    try:
        run(scenario())
    finally:
        listener.close()


def test_no_socket_outlives_its_probe() -> None:
    """Timeouts, refusals, resets and answers, with an in-flight cap: after stop(), no
    file descriptor the probes opened is left (the servers' own ones, in this process
    too, are told apart by their local port)."""
    import os
    import socket

    servers = {mode: Misbehaving() for mode in ("ok", "hang", "reset", "close", "status")}
    for mode, server in servers.items():
        server.set(mode)
    dead = DestKey("127.0.0.1", free_port())
    targets = [
        Target(WEB, s.dest, c, "web")
        for s in servers.values()
        for c in (HTTP, replace(HTTP, type=CheckType.TCP, spec=TcpSpec()))
    ]
    targets.append(Target(WEB, dead, HTTP, "web"))

    def local_port(fd: int) -> int:
        try:
            with socket.socket(fileno=os.dup(fd)) as sock:
                return int(sock.getsockname()[1])
        except OSError:  # not a socket
            return -1

    async def scenario() -> set[int]:
        before = set(os.listdir("/proc/self/fd"))
        async with Watch(targets, max_in_flight=3) as w:
            await asyncio.sleep(8 * I)
            assert w.monitor.in_flight <= 3
            assert sum(sum(p.durations.counts) for p in w.monitor.probes()) >= 4 * len(targets)
        new = set(os.listdir("/proc/self/fd")) - before
        return {local_port(int(fd)) for fd in new}

    try:
        assert run(scenario()) <= {s.port for s in servers.values()}
    finally:
        for server in servers.values():
            server.close()
