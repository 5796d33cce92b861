#!/usr/bin/env python3
"""lvsmon's proxy data plane against HAProxy, in the same run, on loopback.

Both balancers sit in front of the same nginx backend and are driven by the
same wrk, in alternating rounds. Two workloads:

  conn_rate   a new connection per request (`Connection: close`), small body
  throughput  keep-alive requests for a large body (bulk relay)

Prints per-round progress, each balancer's CPU seconds per 1,000 connections
(utime+stime from /proc/<pid>/stat), the CPU the load generator and backend
spent per connection, the machine's load during the runs, and last the
medians of the per-round ratios lvsmon/haproxy:

  ratio_conn_rate=X.XX
  ratio_throughput=X.XX

lvsmon runs as the real daemon (`lvsmon run -c`) when that works, otherwise
ProxyDataPlane is driven directly in a uvloop subprocess (`--lvsmon embedded`).

Fairness: every balancer is single-threaded and gets the same wrk (one
thread), nginx (one worker), listen backlog (4096) and rounds, in rotating
order. By default nothing is pinned: balancer, wrk and nginx share the
machine's CPUs as the scheduler sees fit. `--pin` puts each balancer alone on
the last CPU and wrk+nginx on the others, identically for every balancer.
`--reference` adds a bare-bones uvloop Protocol relay (no scheduling or
accounting) to the same rounds: the ceiling of that design on this machine.
Needs: haproxy, wrk, nginx-light (scripts/install-test-deps).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")
BIG_BODY = 8 * 1024 * 1024
SMALL_BODY = 128

NGINX_CONF = """\
worker_processes 1;
worker_rlimit_nofile 16384;
daemon off;
master_process off;
user root;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log crit;
events {{ worker_connections 8000; multi_accept on; }}
http {{
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 10000000;
  client_body_temp_path {tmp}/nginx-tmp;
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    root {tmp}/www;
  }}
}}
"""

HAPROXY_CONF = """\
global
  nbthread 1
  maxconn 4096
  tune.bufsize 262144
defaults
  mode tcp
  timeout connect 3s
  timeout client 30s
  timeout server 30s
  option splice-auto
frontend fe
  bind 127.0.0.1:{port} backlog 4096
  default_backend be
backend be
  balance roundrobin
  server s1 127.0.0.1:{backend}
"""

LVSMON_CONF = """\
[daemon]
dataplane = "proxy"
metrics_listen = "127.0.0.1:{metrics}"
log_level = "warning"

[[virtual_server]]
name = "bench"
address = "127.0.0.1"
port = {port}
protocol = "tcp"
scheduler = "rr"

[[virtual_server.real_server]]
address = "127.0.0.1"
port = {backend}
weight = 1
"""


@dataclass
class Result:
    requests_per_s: float
    bytes_per_s: float
    requests: int
    cpu: float  # balancer CPU seconds during the run
    peers_cpu: float  # wrk + nginx CPU seconds during the run
    busy: float  # fraction of all CPUs busy during the run (any process)
    load: float  # 1-minute load average at the end of the run
    errors: str


@dataclass
class Balancer:
    name: str
    port: int
    proc: subprocess.Popen[bytes]


def log(msg: str) -> None:
    print(msg, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_listening(port: int, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited with {proc.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise SystemExit(f"{what} is not listening on {port}")


def cpu_seconds(pid: int) -> float:
    return sum(user_system_seconds(pid))


def user_system_seconds(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a process, from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK  # utime, stime


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)  # wrk runs to completion
    return r.ru_utime + r.ru_stime


def cpu_times() -> tuple[int, int]:
    """(idle, total) jiffies of all CPUs."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return values[3] + values[4], sum(values)  # idle + iowait


_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def parse_wrk(out: str) -> tuple[float, float, int, str]:
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    m = re.search(r"Transfer/sec:\s+([\d.]+)([KMGT]?)B", out)
    bps = float(m.group(1)) * _UNITS[m.group(2)] if m else 0.0
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    errors = []
    if m_err := re.search(r"Socket errors: (.*)", out):
        errors.append(m_err.group(1).strip())
    if m_non := re.search(r"Non-2xx or 3xx responses: (\d+)", out):
        errors.append(f"non-2xx {m_non.group(1)}")
    return rps, bps, total, "; ".join(errors)


@dataclass
class Placement:
    """CPUs for the balancer under test and for the load generator + backend."""

    balancer: set[int] | None = None
    peers: set[int] | None = None

    def describe(self) -> str:
        if self.balancer is None:
            return "unpinned: balancer, wrk and nginx share all CPUs"
        return (
            f"pinned: each balancer alone on CPU {_cpus(self.balancer)}, "
            f"wrk+nginx on CPU {_cpus(self.peers or set())} (the same for every balancer)"
        )

    def pin(self, cpus: set[int] | None) -> Callable[[], None] | None:
        if cpus is None:
            return None
        return lambda: os.sched_setaffinity(0, cpus)


def _cpus(cpus: set[int]) -> str:
    return ",".join(str(c) for c in sorted(cpus))


def wrk(
    balancer: Balancer,
    nginx_pid: int,
    path: str,
    conns: int,
    duration: float,
    close: bool,
    placement: Placement,
) -> Result:
    cmd = ["wrk", "-t1", f"-c{conns}", f"-d{max(1, round(duration))}s", "--latency"]
    if close:
        cmd += ["-H", "Connection: close"]
    cmd.append(f"http://127.0.0.1:{balancer.port}{path}")
    before = cpu_seconds(balancer.proc.pid)
    peers = children_cpu() + cpu_seconds(nginx_pid)
    idle, total = cpu_times()
    out = subprocess.run(
        cmd, check=True, capture_output=True, text=True, preexec_fn=placement.pin(placement.peers)
    ).stdout
    cpu = cpu_seconds(balancer.proc.pid) - before
    peers = children_cpu() + cpu_seconds(nginx_pid) - peers
    idle2, total2 = cpu_times()
    busy = 1 - (idle2 - idle) / max(1, total2 - total)
    rps, bps, n, errors = parse_wrk(out)
    return Result(rps, bps, n, cpu, peers, busy, os.getloadavg()[0], errors)


# -- processes ------------------------------------------------------------------


@contextlib.contextmanager
def running(
    cmd: list[str], what: str, port: int, **kw: object
) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(cmd, **kw)  # type: ignore[call-overload]
    try:
        wait_listening(port, proc, what)
        yield proc
    finally:
        stop(proc)


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL if it has not exited within 10 s."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def nginx(tmp: Path) -> tuple[list[str], int]:
    port = free_port()
    (tmp / "www").mkdir()
    (tmp / "nginx-tmp").mkdir()
    (tmp / "www" / "small").write_bytes(b"x" * SMALL_BODY)
    (tmp / "www" / "big").write_bytes(os.urandom(1024 * 1024) * (BIG_BODY // (1024 * 1024)))
    conf = tmp / "nginx.conf"
    conf.write_text(NGINX_CONF.format(tmp=tmp, port=port))
    return ["nginx", "-e", str(tmp / "nginx-error.log"), "-p", str(tmp), "-c", str(conf)], port


def haproxy(tmp: Path, backend: int) -> tuple[list[str], int]:
    port = free_port()
    conf = tmp / "haproxy.cfg"
    conf.write_text(HAPROXY_CONF.format(port=port, backend=backend))
    return ["haproxy", "-db", "-f", str(conf)], port


def lvsmon_daemon(tmp: Path, backend: int) -> tuple[list[str], int] | None:
    """The real daemon, if this tree has one that accepts the config."""
    port = free_port()
    conf = tmp / "lvsmon.toml"
    conf.write_text(LVSMON_CONF.format(port=port, backend=backend, metrics=free_port()))
    cmd = [sys.executable, "-m", "lvsmon.cli"]
    check = subprocess.run([*cmd, "check", "-c", str(conf)], capture_output=True, text=True)
    if check.returncode != 0:
        log(f"lvsmon daemon unavailable ({check.stderr.strip()[:200]}); using embedded")
        return None
    return [*cmd, "run", "-c", str(conf)], port


def lvsmon_embedded(backend: int) -> tuple[list[str], int]:
    port = free_port()
    return [sys.executable, __file__, "--serve", str(port), str(backend)], port


def reference_relay(backend: int) -> tuple[list[str], int]:
    port = free_port()
    return [sys.executable, __file__, "--serve-reference", str(port), str(backend)], port


def serve(port: int, backend: int) -> None:
    """`--serve`: ProxyDataPlane alone on uvloop, until SIGTERM."""
    import asyncio
    import ipaddress

    import uvloop

    from lvsmon.dataplane.proxy import ProxyDataPlane
    from lvsmon.model import RealServer, VirtualServer
    from lvsmon.reconcile import AddDest, AddService

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        vs = VirtualServer("bench", ipaddress.ip_address("127.0.0.1"), port, scheduler="rr")
        rs = RealServer(ipaddress.ip_address("127.0.0.1"), backend)
        dp = ProxyDataPlane()
        await dp.start()
        await dp.apply([AddService(vs), AddDest(vs.key, rs)])
        await stop.wait()
        await dp.stop(1.0)

    uvloop.run(main())


def serve_reference(port: int, backend: int) -> None:
    """`--serve-reference`: the least an asyncio-Protocol relay on uvloop does per
    connection (create_connection in a task, write-through, FIN forwarding), with
    no scheduling, accounting or timeouts. Not a data plane: a measuring stick."""
    import asyncio

    import uvloop

    class Upstream(asyncio.Protocol):
        def __init__(self, client: Client) -> None:
            self.client = client
            self.eof = False

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.client.attach(transport)  # type: ignore[arg-type]

        def data_received(self, data: bytes) -> None:
            self.client.transport.write(data)

        def eof_received(self) -> bool:
            self.eof = True
            client = self.client
            if client.eof:
                client.close()
            else:
                client.transport.write_eof()
            return True

        def connection_lost(self, exc: Exception | None) -> None:
            self.client.close()

    class Client(asyncio.Protocol):
        transport: asyncio.Transport
        task: asyncio.Task[tuple[asyncio.Transport, asyncio.Protocol]]

        def __init__(self) -> None:
            self.up: asyncio.Transport | None = None
            self.upstream = Upstream(self)
            self.held: list[bytes] = []
            self.eof = False

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport  # type: ignore[assignment]
            loop = asyncio.get_running_loop()
            connect = loop.create_connection(lambda: self.upstream, "127.0.0.1", backend)
            self.task = loop.create_task(connect)  # kept: tasks are weakly referenced

        def attach(self, up: asyncio.Transport) -> None:
            self.up = up
            if self.held:
                up.write(b"".join(self.held))
            if self.eof:
                up.write_eof()

        def data_received(self, data: bytes) -> None:
            if self.up is None:
                self.held.append(data)
            else:
                self.up.write(data)

        def eof_received(self) -> bool:
            self.eof = True
            if self.up is not None:
                if self.upstream.eof:
                    self.close()
                else:
                    self.up.write_eof()
            return True

        def connection_lost(self, exc: Exception | None) -> None:
            self.close()

        def close(self) -> None:
            # close() after write_eof() in the same iteration can double-free in
            # uvloop 0.23's shutdown callback; closing both only once is enough here
            for transport in (self.transport, self.up):
                if transport is not None and not transport.is_closing():
                    transport.close()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        server = await loop.create_server(Client, "127.0.0.1", port, backlog=4096)
        await stop.wait()
        server.close()

    uvloop.run(main())


# -- the benchmark --------------------------------------------------------------


def measure(
    balancers: list[Balancer], nginx_pid: int, placement: Placement, args: argparse.Namespace
) -> dict[str, dict[str, list[Result]]]:
    results: dict[str, dict[str, list[Result]]] = {
        b.name: {"conn": [], "bulk": []} for b in balancers
    }

    def run(b: Balancer, bulk: bool, duration: float) -> Result:
        path, conns = ("/big", args.bulk_conns) if bulk else ("/small", args.conns)
        return wrk(b, nginx_pid, path, conns, duration, not bulk, placement)

    log("warm-up ...")
    for b in balancers:
        run(b, False, 1)
        run(b, True, 1)
    for rnd in range(1, args.rounds + 1):
        shift = (rnd - 1) % len(balancers)  # alternate (rotate) who goes first
        order = balancers[shift:] + balancers[:shift]
        for b in order:
            r = run(b, False, args.duration)
            results[b.name]["conn"].append(r)
            log(
                f"round {rnd}/{args.rounds} conn_rate  {b.name:8} {r.requests_per_s:9.0f} conn/s"
                f"  cpu {r.cpu:5.2f}s  wrk+nginx {r.peers_cpu:5.2f}s  busy {r.busy:4.0%}"
                f"  load {r.load:4.2f} {r.errors}"
            )
        for b in order:
            r = run(b, True, args.duration)
            results[b.name]["bulk"].append(r)
            log(
                f"round {rnd}/{args.rounds} throughput {b.name:8} {r.bytes_per_s / 1e9:9.2f} GB/s"
                f"  cpu {r.cpu:5.2f}s  wrk+nginx {r.peers_cpu:5.2f}s  busy {r.busy:4.0%}"
                f"  load {r.load:4.2f} {r.errors}"
            )
    return results


def paired_ratio(a: list[Result], b: list[Result], key: Callable[[Result], float]) -> float:
    return statistics.median(key(x) / key(y) for x, y in zip(a, b, strict=True))


def report(results: dict[str, dict[str, list[Result]]]) -> None:
    every = [r for res in results.values() for runs in res.values() for r in runs]
    loads = [r.load for r in every]
    log(
        f"machine during the runs: load {statistics.median(loads):.2f} "
        f"(min {min(loads):.2f}, max {max(loads):.2f}), "
        f"CPUs busy {statistics.median(r.busy for r in every):.0%} (median, any process)"
    )
    for name, res in results.items():
        conn = [r for r in res["conn"] if r.requests]
        per_k = statistics.median(r.cpu / r.requests * 1000 for r in conn)
        peers_k = statistics.median(r.peers_cpu / r.requests * 1000 for r in conn)
        rate = statistics.median(r.requests_per_s for r in res["conn"])
        tput = statistics.median(r.bytes_per_s for r in res["bulk"])
        log(
            f"{name:8} conn_rate {rate:9.0f}/s  throughput {tput / 1e9:6.2f} GB/s  "
            f"cpu_per_1k_conns={per_k:.3f}s  (wrk+nginx {peers_k:.3f}s)"
        )
    ha = results["haproxy"]
    for name in results:
        if name in ("haproxy", "lvsmon"):
            continue
        c = paired_ratio(results[name]["conn"], ha["conn"], lambda r: r.requests_per_s)
        t = paired_ratio(results[name]["bulk"], ha["bulk"], lambda r: r.bytes_per_s)
        log(f"{name}/haproxy: conn_rate {c:.2f}  throughput {t:.2f}")
    lv = results["lvsmon"]
    log(f"ratio_conn_rate={paired_ratio(lv['conn'], ha['conn'], lambda r: r.requests_per_s):.2f}")
    log(f"ratio_throughput={paired_ratio(lv['bulk'], ha['bulk'], lambda r: r.bytes_per_s):.2f}")


def placement_for(pin: bool) -> Placement:
    if not pin:
        return Placement()
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        raise SystemExit("--pin needs at least 2 CPUs")
    return Placement(balancer={cpus[-1]}, peers=set(cpus[:-1]))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    # many short rounds: each pair is measured close together, so a burst of load
    # from elsewhere on the machine moves one pair, not the median
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--duration", type=int, default=3, help="seconds per measurement")
    p.add_argument("--conns", type=int, default=64, help="wrk connections, conn_rate")
    p.add_argument("--bulk-conns", type=int, default=8, help="wrk connections, throughput")
    p.add_argument("--lvsmon", choices=("auto", "daemon", "embedded"), default="auto")
    p.add_argument("--pin", action="store_true", help="pin each balancer alone on one CPU")
    p.add_argument(
        "--reference", action="store_true", help="also measure a bare uvloop Protocol relay"
    )
    p.add_argument(
        "--serve", nargs=2, type=int, metavar=("PORT", "BACKEND"), help=argparse.SUPPRESS
    )
    p.add_argument(
        "--serve-reference", nargs=2, type=int, metavar=("PORT", "BACKEND"), help=argparse.SUPPRESS
    )
    args = p.parse_args()
    if args.serve:
        serve(*args.serve)
        return 0
    if args.serve_reference:
        serve_reference(*args.serve_reference)
        return 0
    missing = [tool for tool in ("haproxy", "wrk", "nginx") if not shutil.which(tool)]
    if missing:
        log(f"missing {', '.join(missing)}: run scripts/install-test-deps")
        return 2
    placement = placement_for(args.pin)
    quiet = {"stdout": subprocess.DEVNULL}
    balancer_kw = {**quiet, "preexec_fn": placement.pin(placement.balancer)}
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="lvsmon-bench-")))
        cmd, backend = nginx(tmp)
        ng = stack.enter_context(
            running(cmd, "nginx", backend, **quiet, preexec_fn=placement.pin(placement.peers))
        )
        ha_cmd, ha_port = haproxy(tmp, backend)
        ha = stack.enter_context(running(ha_cmd, "haproxy", ha_port, **balancer_kw))
        spec = None if args.lvsmon == "embedded" else lvsmon_daemon(tmp, backend)
        if spec is None and args.lvsmon == "daemon":
            return 2
        lv = None
        kind = "daemon"
        if spec is not None:
            try:
                lv = stack.enter_context(running(spec[0], "lvsmon daemon", spec[1], **balancer_kw))
                lv_port = spec[1]
            except SystemExit as exc:
                if args.lvsmon == "daemon":
                    raise
                log(f"{exc}; using embedded")
        if lv is None:
            kind = "embedded"
            lv_cmd, lv_port = lvsmon_embedded(backend)
            lv = stack.enter_context(running(lv_cmd, "lvsmon (embedded)", lv_port, **balancer_kw))
        balancers = [Balancer("lvsmon", lv_port, lv), Balancer("haproxy", ha_port, ha)]
        if args.reference:
            ref_cmd, ref_port = reference_relay(backend)
            ref = stack.enter_context(running(ref_cmd, "reference relay", ref_port, **balancer_kw))
            balancers.append(Balancer("minimal", ref_port, ref))
        log(
            f"nginx :{backend}  haproxy :{ha_port} (pid {ha.pid})  "
            f"lvsmon {kind} :{lv_port} (pid {lv.pid})"
            + (f"  minimal :{balancers[2].port}" if args.reference else "")
        )
        log(
            f"wrk -t1 -c{args.conns} (conn_rate, Connection: close) / -c{args.bulk_conns} "
            f"(throughput, {BIG_BODY >> 20} MiB keep-alive); {args.rounds} rounds of "
            f"{args.duration}s; {os.cpu_count()} CPUs, {placement.describe()}"
        )
        report(measure(balancers, ng.pid, placement, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
