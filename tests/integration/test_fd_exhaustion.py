"""The proxy plane out of file descriptors (`ulimit -n` 256): new client connections are
refused at once (not left hanging), /metrics still answers, and when the clients go
the virtual server accepts again."""

from __future__ import annotations

import contextlib
import resource
import socket
from pathlib import Path

from tests.integration.harness import Daemon, backends, wait_for
from tests.integration.test_daemon import service
from tests.ports import free_port

LIMIT = 256
CLIENTS = 300  # more than LIMIT: each proxied connection also holds one to a real server


def open_client(port: int) -> tuple[socket.socket | None, str]:
    """('established', socket) once the real server's greeting arrives, or why not."""
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=2)
    except ConnectionError:  # reset during the handshake: refused
        return None, "refused"
    try:
        greeting = s.recv(64)
    except TimeoutError:
        s.close()
        return None, "hung"
    except OSError:
        s.close()
        return None, "refused"
    if not greeting:
        s.close()
        return None, "refused"
    return s, "established"


def accepts(port: int) -> bool:
    """One client gets through (and is closed again)."""
    s, what = open_client(port)
    if s is not None:
        s.close()
    return what == "established"


def test_out_of_descriptors_refuses_cleanly_keeps_metrics_and_recovers(tmp_path: Path) -> None:
    with backends("a") as (a,):
        vip = free_port()
        d = Daemon(tmp_path, service(vip, a.toml()))

        def low_limit() -> None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (LIMIT, LIMIT))

        d.launch(preexec_fn=low_limit)
        held: list[socket.socket] = []
        try:
            wait_for(d.status, 20, "the daemon")
            outcomes: dict[str, int] = {}
            for _ in range(CLIENTS):
                s, what = open_client(vip)
                outcomes[what] = outcomes.get(what, 0) + 1
                assert what != "hung", outcomes
                if s is not None:
                    held.append(s)
            print(f"\nulimit -n {LIMIT}, {CLIENTS} clients: {outcomes}")
            assert outcomes.get("hung", 0) == 0, outcomes
            assert outcomes.get("refused", 0) > 0 and len(held) > LIMIT // 4, outcomes
            assert d.sample("lvsmon_build_info") == 1  # /metrics answers at the limit
            assert "Traceback" not in d.log()
            for s in held:  # the clients go: the virtual server accepts again
                s.close()
            held.clear()
            wait_for(lambda: accepts(vip), 10, "recovery")
            assert d.sample("lvsmon_build_info") == 1
        finally:
            for s in held:
                with contextlib.suppress(OSError):
                    s.close()
            d.kill()
