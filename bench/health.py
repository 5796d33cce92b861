#!/usr/bin/env python3
"""Health checking at scale: 10,000 real servers, 1 s interval, TCP and HTTP checks,
against HAProxy's health checks on the same real servers in the same run.

The real servers are nginx listeners on loopback (100 addresses 127.0.1.1-100 x
100 ports by default: 10,000 listen sockets in one nginx worker, which the
scheduler usually puts on the other core). lvsmon's HealthMonitor runs them on
uvloop, through the same engine as the daemon: half `tcp` (connect, RST), half
`http` (GET /health, expect 200, read the status line). The anchor is HAProxy
2.6, one thread, checking the same listeners the same way (`option tcp-check`,
`option httpchk`, `inter 1s`; bench/health_haproxy.py says why not keepalived).
In alternating rounds (`--rounds`), each checker runs alone for a warm-up and a
measured window of `--seconds`. Checks are counted for both by the kernel (TCP
ActiveOpens, in a network namespace of the bench's own: it re-runs itself under
`unshare --net`, so it needs root); CPU is the checker process's user+system
time. Printed, medians over the rounds:

  checks_per_second, p50/p99/max_lag_ms, checks_per_cpu_second   lvsmon
  haproxy_checks_per_second
  lvsmon_cpu_seconds_per_1000_checks, haproxy_cpu_seconds_per_1000_checks
  ratio_cpu_per_check_vs_haproxy   lvsmon / HAProxy, the median of the
                                   per-round ratios (printed last)

p99_lag_ms is the 99th percentile of (actual start - scheduled start);
checks_per_cpu_second (1000 / cpu per 1,000 checks) is what one whole core
would sustain: on a shared machine the achieved rate is capped by the CPU share
the process gets (cpu_utilisation). On stderr: each round, lvsmon's own count
of its checks beside the kernel's, the user/system split and probe durations by
type, HAProxy's verdict (servers up). On loopback the real server's half of
each handshake runs in the checker's softirq and counts as its system time,
for both checkers alike.

Target: 10,000 checks/s on one core with p99 lag < 100 ms; measured figures are
in lvsmon/health/README.md. `--profile` prints the top functions of a cProfile
run of lvsmon's measured windows to stderr. Needs: nginx-light, haproxy
(scripts/install-test-deps).
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
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import uvloop

from lvsmon.health.monitor import HealthMonitor, Probe, Target
from lvsmon.model import DestKey, ServiceKey
from lvsmon.model.health import CheckType, HealthCheck, HttpSpec, Result

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.health_haproxy import haproxy, in_private_netns, servers_up, tcp_active_opens
from bench.proxy import user_system_seconds

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


@dataclass
class Nginx:
    """The real servers: one nginx and its work directory."""

    proc: subprocess.Popen[bytes]
    tmp: Path


@contextlib.contextmanager
def nginx(eps: list[tuple[str, int]]) -> Iterator[Nginx]:
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
            yield Nginx(proc, Path(tmp))
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


async def measure_lvsmon(eps: list[tuple[str, int]], args: argparse.Namespace) -> dict[str, float]:
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
    opens0 = tcp_active_opens()
    (user0, sys0), t0 = cpu_seconds(), time.monotonic()
    if profiler:
        profiler.enable()
    await asyncio.sleep(args.seconds)
    if profiler:
        profiler.disable()
    (user1, sys1), t1 = cpu_seconds(), time.monotonic()
    opens1 = tcp_active_opens()
    cpu = user1 + sys1 - user0 - sys0
    meter.on = False
    await monitor.stop()
    if profiler:
        pstats.Stats(profiler, stream=sys.stderr).sort_stats("tottime").print_stats(25)
    lags = sorted(meter.lags)
    own = len(lags)
    checks = opens1 - opens0
    print(
        f"  lvsmon: {checks} checks counted by the kernel, {own} by lvsmon; "
        f"results ok {own - meter.failures.total()}, failed {dict(meter.failures)}",
        file=sys.stderr,
    )
    cpu_split("lvsmon", user1 - user0, sys1 - sys0, checks)
    for check in (tcp, http):
        q = sorted(meter.durations[id(check)])
        if q:
            print(
                f"  lvsmon {check.type} duration ms: p50 {q[len(q) // 2] * 1000:.2f} "
                f"p99 {q[int(len(q) * 0.99)] * 1000:.2f} max {q[-1] * 1000:.2f}",
                file=sys.stderr,
            )
    return {
        "cpu_seconds_per_1000_checks": cpu / checks * 1000 if checks else float("nan"),
        "p50_lag_ms": lags[len(lags) // 2] * 1000 if lags else float("nan"),
        "p99_lag_ms": lags[int(len(lags) * 0.99)] * 1000 if lags else float("nan"),
        "max_lag_ms": lags[-1] * 1000 if lags else float("nan"),
        "checks_per_second": checks / (t1 - t0),
        "cpu_utilisation": cpu / (t1 - t0),
        "failures": meter.failures.total(),
    }


def measure_haproxy(
    eps: list[tuple[str, int]], real_servers: Nginx, args: argparse.Namespace
) -> dict[str, float]:
    with haproxy(eps, real_servers.tmp) as proc:
        time.sleep(args.warmup)
        opens0, (user0, sys0) = tcp_active_opens(), user_system_seconds(proc.pid)
        t0 = time.monotonic()
        time.sleep(args.seconds)
        (user1, sys1), t1 = user_system_seconds(proc.pid), time.monotonic()
        opens1 = tcp_active_opens()
        up, total = servers_up(real_servers.tmp / "haproxy")
    checks = opens1 - opens0
    cpu = user1 + sys1 - user0 - sys0
    print(f"  haproxy: {checks} checks counted by the kernel; {up}/{total} up", file=sys.stderr)
    cpu_split("haproxy", user1 - user0, sys1 - sys0, checks)
    return {
        "cpu_seconds_per_1000_checks": cpu / checks * 1000 if checks else float("nan"),
        "checks_per_second": checks / (t1 - t0),
        "cpu_utilisation": cpu / (t1 - t0),
        "down": total - up,
    }


def cpu_split(who: str, user: float, system: float, checks: int) -> None:
    """user: the checker's own code; system: the kernel, incl. loopback's real-server half."""
    if checks:
        print(
            f"  {who} per 1000 checks: user {user / checks * 1000:.4f} s, "
            f"system {system / checks * 1000:.4f} s",
            file=sys.stderr,
        )


def median(rounds: list[dict[str, float]], key: str) -> float:
    return statistics.median(r[key] for r in rounds)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--servers", type=int, default=10_000)
    p.add_argument("--interval", type=float, default=1.0)
    p.add_argument("--rounds", type=int, default=3, help="rounds of each checker, alternating")
    p.add_argument("--seconds", type=float, default=10.0, help="measured window per round")
    p.add_argument("--warmup", type=float, default=3.0)
    p.add_argument("--in-flight", type=int, default=256)
    p.add_argument("--base-port", type=int, default=21000)
    p.add_argument("--profile", action="store_true")
    args = p.parse_args()
    in_private_netns(sys.argv)  # the kernel's TCP counters count only the checkers
    if args.interval != 1.0:
        sys.exit("bench/health.py: the HAProxy anchor is configured for inter 1s")
    got = raise_fd_limit(args.servers * 2 + 4096)
    if got < args.in_flight + 1024:
        sys.exit(f"bench/health.py: RLIMIT_NOFILE is {got}; need {args.in_flight + 1024}")
    eps = endpoints(args.servers, args.base_port)
    lv: list[dict[str, float]] = []
    ha: list[dict[str, float]] = []
    with nginx(eps) as real_servers:
        print(
            f"{args.servers} real servers on nginx; interval {args.interval:g}s; "
            f"{args.rounds} rounds of {args.seconds:g}s each after {args.warmup:g}s",
            file=sys.stderr,
        )
        for n in range(args.rounds):
            print(f"round {n + 1} (load average {os.getloadavg()[0]:.2f})", file=sys.stderr)
            for who in ("lvsmon", "haproxy") if n % 2 == 0 else ("haproxy", "lvsmon"):
                if who == "lvsmon":
                    lv.append(uvloop.run(measure_lvsmon(eps, args)))
                else:
                    ha.append(measure_haproxy(eps, real_servers, args))
    ratios = [
        a["cpu_seconds_per_1000_checks"] / b["cpu_seconds_per_1000_checks"]
        for a, b in zip(lv, ha, strict=True)
    ]
    print(f"ratio per round: {', '.join(f'{r:.2f}' for r in ratios)}", file=sys.stderr)
    # the machine may be shared: what one full core would sustain at this cost per check
    print(f"checks_per_cpu_second={1000 / median(lv, 'cpu_seconds_per_1000_checks'):.0f}")
    print(f"cpu_utilisation={median(lv, 'cpu_utilisation'):.2f}")
    print(f"failures={sum(r['failures'] for r in lv):.0f}")
    print(f"p50_lag_ms={median(lv, 'p50_lag_ms'):.2f}")
    print(f"max_lag_ms={median(lv, 'max_lag_ms'):.2f}")
    print(f"p99_lag_ms={median(lv, 'p99_lag_ms'):.2f}")
    print(f"checks_per_second={median(lv, 'checks_per_second'):.0f}")
    print(f"haproxy_cpu_utilisation={median(ha, 'cpu_utilisation'):.2f}")
    print(f"haproxy_servers_down={max(r['down'] for r in ha):.0f}")
    print(f"haproxy_checks_per_second={median(ha, 'checks_per_second'):.0f}")
    print(f"lvsmon_cpu_seconds_per_1000_checks={median(lv, 'cpu_seconds_per_1000_checks'):.4f}")
    print(f"haproxy_cpu_seconds_per_1000_checks={median(ha, 'cpu_seconds_per_1000_checks'):.4f}")
    print(f"ratio_cpu_per_check_vs_haproxy={statistics.median(ratios):.2f}")


if __name__ == "__main__":
    main()
