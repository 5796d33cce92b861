#!/usr/bin/env python3
"""Health checking at scale: 10,000 real servers, 1 s interval, TCP and HTTP checks.

The real servers are nginx listeners on loopback (100 addresses 127.0.1.1-100 x
100 ports by default: 10,000 listen sockets in one nginx worker, which the
scheduler usually puts on the other core). lvsmon's HealthMonitor runs them on
uvloop, through the same engine as the daemon: half `tcp` (connect, RST), half
`http` (GET /health, expect 200, read the status line). After a warm-up it
measures for `--seconds`:

  cpu_seconds_per_1000_checks   this process's user+system CPU per 1,000 checks
  p99_lag_ms                    99th percentile of (actual start - scheduled start)
  checks_per_second             sustained (printed last)

Also printed: checks_per_cpu_second (1000 / cpu_seconds_per_1000_checks: what one
whole core would sustain; on a shared machine the achieved rate is capped by the
CPU share this process gets, shown as cpu_utilisation), p50/max lag, failures;
on stderr the user/system split per 1,000 checks and probe durations by type.
On loopback the real server's half of each handshake runs in this process's
softirq and counts as its system time.

Target: 10,000 checks/s on one core with p99 lag < 100 ms. Measured on the
2-core development machine (load average 0.35-1.5 from other work): 0.039-0.047
CPU-seconds per 1,000 checks (user 0.013-0.016, system 0.025-0.031), 10,000
checks/s at 39-47% of a core, p99 lag 8-12 ms (see lvsmon/health/README.md).
`--profile` prints the top functions of a cProfile run of the measured window to
stderr. Needs: nginx-light (scripts/install-test-deps).
"""

from __future__ import annotations

import argparse
import array
import asyncio
import contextlib
import cProfile
import os
import pstats
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import uvloop

from lvsmon.health.monitor import HealthMonitor, Probe, Target
from lvsmon.model import DestKey, ServiceKey
from lvsmon.model.health import CheckType, HealthCheck, HttpSpec, Result

NGINX_CONF = """\
worker_processes 1;
worker_rlimit_nofile {nofile};
daemon off;
master_process off;
user root;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log crit;
events {{ worker_connections {connections}; multi_accept on; }}
http {{
  access_log off;
  client_body_temp_path {tmp}/nginx-tmp;
  server {{
{listens}
    location / {{ return 200 "ok\\n"; }}
  }}
}}
"""


def raise_fd_limit(want: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = max(soft, want)
    with contextlib.suppress(ValueError, OSError):  # root may raise the hard limit too
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, max(hard, target)))
        return target
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(target, hard), hard))
    return min(target, hard)


def endpoints(n: int, base_port: int) -> list[tuple[str, int]]:
    per_address = 100
    return [(f"127.0.1.{i // per_address + 1}", base_port + i % per_address) for i in range(n)]


@contextlib.contextmanager
def nginx(eps: list[tuple[str, int]]) -> Iterator[subprocess.Popen[bytes]]:
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    if not os.path.exists(binary):
        sys.exit("bench/health.py: no nginx (scripts/install-test-deps installs nginx-light)")
    with tempfile.TemporaryDirectory(prefix="lvsmon-bench-health-") as tmp:
        listens = "\n".join(f"    listen {a}:{p} backlog=512;" for a, p in eps)
        conf = Path(tmp) / "nginx.conf"
        conf.write_text(
            NGINX_CONF.format(
                tmp=tmp, listens=listens, nofile=len(eps) * 2 + 4096, connections=len(eps) + 16384
            )
        )
        proc = subprocess.Popen([binary, "-c", str(conf), "-p", tmp])
        try:
            wait_listening(eps[-1])
            yield proc
        finally:
            proc.terminate()
            proc.wait(10)


def wait_listening(ep: tuple[str, int], timeout: float = 30) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(ep, timeout=1):
            return
        time.sleep(0.1)
    sys.exit(f"bench/health.py: nginx did not listen on {ep[0]}:{ep[1]}")


def cpu_seconds() -> tuple[float, float]:
    """(user, system) CPU seconds of this process."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime


class Meter:
    """The observer: lag of every probe start, durations and results, inside the measured
    window. Kept lean: it runs once per check, and its CPU counts in the figures."""

    def __init__(self) -> None:
        self.on = False
        self.lags = array.array("d")
        self.durations: dict[int, array.array[float]] = {}  # by id() of the check
        self.failures: Counter[str] = Counter()

    def __call__(self, probe: Probe, due: float, started: float, result: Result, d: float) -> None:
        if self.on:
            self.lags.append(started - due)
            self.durations[id(probe.key.check)].append(d)  # id: hashing a check is slow
            if not result.ok:
                self.failures[str(result.reason)] += 1


async def measure(eps: list[tuple[str, int]], args: argparse.Namespace) -> dict[str, float]:
    meter = Meter()
    monitor = HealthMonitor(max_in_flight=args.in_flight, observer=meter)
    vs = ServiceKey("tcp", "192.0.2.10", 80)
    tcp = HealthCheck(CheckType.TCP, interval=args.interval, timeout=0.5)
    http = HealthCheck(
        CheckType.HTTP, interval=args.interval, timeout=0.5, spec=HttpSpec(path="/health")
    )
    meter.durations = {id(tcp): array.array("d"), id(http): array.array("d")}
    monitor.configure(
        Target(vs, DestKey(a, p), http if i % 2 else tcp, "bench") for i, (a, p) in enumerate(eps)
    )
    await monitor.start()
    await asyncio.sleep(args.warmup)
    profiler = cProfile.Profile() if args.profile else None
    meter.on = True
    (user0, sys0), t0 = cpu_seconds(), time.monotonic()
    if profiler:
        profiler.enable()
    await asyncio.sleep(args.seconds)
    if profiler:
        profiler.disable()
    (user1, sys1), t1 = cpu_seconds(), time.monotonic()
    cpu0, cpu1 = user0 + sys0, user1 + sys1
    meter.on = False
    await monitor.stop()
    if profiler:
        pstats.Stats(profiler, stream=sys.stderr).sort_stats("tottime").print_stats(25)
    lags = sorted(meter.lags)
    checks = len(lags)
    if checks:  # user: Python; system: the kernel, incl. loopback's real-server half
        print(
            f"per 1000 checks: user {(user1 - user0) / checks * 1000:.4f} s, "
            f"system {(sys1 - sys0) / checks * 1000:.4f} s",
            file=sys.stderr,
        )
    print(
        f"results: ok {checks - meter.failures.total()}, failed {dict(meter.failures)}",
        file=sys.stderr,
    )
    for check in (tcp, http):
        q = sorted(meter.durations[id(check)])
        if q:
            print(
                f"{check.type} duration ms: p50 {q[len(q) // 2] * 1000:.2f} "
                f"p99 {q[int(len(q) * 0.99)] * 1000:.2f} max {q[-1] * 1000:.2f}",
                file=sys.stderr,
            )
    return {
        "checks": checks,
        "cpu_seconds_per_1000_checks": (cpu1 - cpu0) / checks * 1000 if checks else float("nan"),
        "p50_lag_ms": lags[len(lags) // 2] * 1000 if lags else float("nan"),
        "p99_lag_ms": lags[int(len(lags) * 0.99)] * 1000 if lags else float("nan"),
        "max_lag_ms": lags[-1] * 1000 if lags else float("nan"),
        "checks_per_second": checks / (t1 - t0),
        "cpu_utilisation": (cpu1 - cpu0) / (t1 - t0),
        "failures": meter.failures.total(),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--servers", type=int, default=10_000)
    p.add_argument("--interval", type=float, default=1.0)
    p.add_argument("--seconds", type=float, default=10.0, help="measured window")
    p.add_argument("--warmup", type=float, default=3.0)
    p.add_argument("--in-flight", type=int, default=256)
    p.add_argument("--base-port", type=int, default=21000)
    p.add_argument("--profile", action="store_true")
    args = p.parse_args()
    got = raise_fd_limit(args.servers * 2 + 4096)
    if got < args.in_flight + 1024:
        sys.exit(f"bench/health.py: RLIMIT_NOFILE is {got}; need {args.in_flight + 1024}")
    eps = endpoints(args.servers, args.base_port)
    with nginx(eps):
        print(
            f"{args.servers} real servers on nginx; interval {args.interval:g}s; "
            f"measuring {args.seconds:g}s after {args.warmup:g}s",
            file=sys.stderr,
        )
        r = uvloop.run(measure(eps, args))
    # the machine may be shared: what one full core would sustain at this cost per check
    print(f"checks_per_cpu_second={1000 / r['cpu_seconds_per_1000_checks']:.0f}")
    print(f"cpu_utilisation={r['cpu_utilisation']:.2f}")
    print(f"failures={r['failures']:.0f}")
    print(f"p50_lag_ms={r['p50_lag_ms']:.2f}")
    print(f"max_lag_ms={r['max_lag_ms']:.2f}")
    print(f"cpu_seconds_per_1000_checks={r['cpu_seconds_per_1000_checks']:.4f}")
    print(f"p99_lag_ms={r['p99_lag_ms']:.2f}")
    print(f"checks_per_second={r['checks_per_second']:.0f}")


if __name__ == "__main__":
    main()
