"""The wall clock jumps under a running daemon (+1 h, then -2 h) and nothing notices:
health checks keep their interval, client connections keep working, the verdicts
do not move. The daemon runs under libfaketime (Debian's faketime) with the
monotonic clock left alone, so only time.time() and friends jump."""

from __future__ import annotations

import os
import time
from pathlib import Path

from tests.integration.harness import Daemon, backends, reached, wait_for
from tests.integration.test_daemon import service
from tests.ports import free_port

LIBFAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1")
CHECK = '[virtual_server.health_check]\ntype = "tcp"\ninterval = "200ms"\ntimeout = "100ms"\n'


def faketime_env(offset_file: Path) -> dict[str, str]:
    assert LIBFAKETIME.exists(), "needs Debian's faketime (scripts/install-test-deps)"
    return {
        **os.environ,
        "LD_PRELOAD": str(LIBFAKETIME),
        "FAKETIME_TIMESTAMP_FILE": str(offset_file),
        "FAKETIME_NO_CACHE": "1",  # re-read the offset at every call: the jump is at once
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
    }


def test_a_wall_clock_jump_moves_no_timer(tmp_path: Path) -> None:
    offset = tmp_path / "faketime.rc"
    offset.write_text("+0\n")
    with backends("a", "b") as (a, b):
        vip = free_port()
        d = Daemon(tmp_path, service(vip, a.toml(), b.toml(), scheduler="rr", extra=CHECK))
        proc = d.launch(env=faketime_env(offset))
        try:
            wait_for(d.status, 20, "the daemon")
            label = f"127.0.0.1:{a.port}"

            def checks() -> float:
                return d.sample("lvsmon_healthcheck_duration_seconds_count", real_server=label) or 0

            wait_for(lambda: checks() >= 2, 10, "the first checks")
            rates = []
            for jump in ("+0", "+3600", "-7200"):
                offset.write_text(f"{jump}\n")
                before, began = checks(), time.monotonic()
                served = {reached(vip) for _ in range(4)}
                time.sleep(1.0)
                rates.append((checks() - before) / (time.monotonic() - began))
                assert served == {"a", "b"}, (jump, served)
            print(f"\nhealth checks per second at +0, +1 h, -1 h wall clock: {rates}")
            # the interval is 200 ms whatever the wall clock says: a timer on the wall
            # clock would stall for an hour after -2 h (rate 0) or fire all at once
            assert all(0 < r < rates[0] * 3 for r in rates), rates
            assert all(r["state"] == "up" for r in d.real_servers("web").values())
            assert not d.sample("lvsmon_real_server_transitions_total")
            assert proc.poll() is None and "Traceback" not in d.log()
        finally:
            d.kill()
