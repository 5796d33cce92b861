#!/usr/bin/env python3
"""lvsmon's proxy data plane against HAProxy, in the same run, on loopback.

Both balancers sit in front of the same nginx backend and are driven by the
same wrk, in alternating rounds. Two workloads:

  conn_rate   a new connection per request (`Connection: close`), small body
  throughput  keep-alive requests for a large body (bulk relay)

Prints per-round progress, each balancer's CPU seconds per 1,000 connections
(utime+stime from /proc/<pid>/stat), and last the medians of the per-round
ratios lvsmon/haproxy:

  ratio_conn_rate=X.XX
  ratio_throughput=X.XX

lvsmon runs as the real daemon (`lvsmon run -c`) when that works, otherwise
ProxyDataPlane is driven directly in a uvloop subprocess (`--lvsmon embedded`).
Needs: haproxy, wrk, nginx-light (scripts/install-test-deps).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
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
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime


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


def wrk(balancer: Balancer, path: str, conns: int, duration: float, close: bool) -> Result:
    cmd = ["wrk", "-t1", f"-c{conns}", f"-d{max(1, round(duration))}s", "--latency"]
    if close:
        cmd += ["-H", "Connection: close"]
    cmd.append(f"http://127.0.0.1:{balancer.port}{path}")
    before = cpu_seconds(balancer.proc.pid)
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    cpu = cpu_seconds(balancer.proc.pid) - before
    rps, bps, total, errors = parse_wrk(out)
    return Result(rps, bps, total, cpu, errors)


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


# -- the benchmark --------------------------------------------------------------


def measure(
    balancers: list[Balancer], args: argparse.Namespace
) -> dict[str, dict[str, list[Result]]]:
    results: dict[str, dict[str, list[Result]]] = {
        b.name: {"conn": [], "bulk": []} for b in balancers
    }
    log("warm-up ...")
    for b in balancers:
        wrk(b, "/small", args.conns, 1, close=True)
        wrk(b, "/big", args.bulk_conns, 1, close=False)
    for rnd in range(1, args.rounds + 1):
        order = balancers if rnd % 2 else balancers[::-1]
        for b in order:
            r = wrk(b, "/small", args.conns, args.duration, close=True)
            results[b.name]["conn"].append(r)
            log(
                f"round {rnd}/{args.rounds} conn_rate  {b.name:8} {r.requests_per_s:9.0f} conn/s"
                f"  cpu {r.cpu:5.2f}s {r.errors}"
            )
        for b in order:
            r = wrk(b, "/big", args.bulk_conns, args.duration, close=False)
            results[b.name]["bulk"].append(r)
            log(
                f"round {rnd}/{args.rounds} throughput {b.name:8} {r.bytes_per_s / 1e9:9.2f} GB/s"
                f"  cpu {r.cpu:5.2f}s {r.errors}"
            )
    return results


def report(results: dict[str, dict[str, list[Result]]]) -> None:
    lv, ha = results["lvsmon"], results["haproxy"]
    for name, res in results.items():
        per_k = statistics.median(r.cpu / r.requests * 1000 for r in res["conn"] if r.requests)
        rate = statistics.median(r.requests_per_s for r in res["conn"])
        tput = statistics.median(r.bytes_per_s for r in res["bulk"])
        log(
            f"{name:8} conn_rate {rate:9.0f}/s  throughput {tput / 1e9:6.2f} GB/s  "
            f"cpu_per_1k_conns={per_k:.3f}s"
        )
    conn = statistics.median(
        a.requests_per_s / b.requests_per_s for a, b in zip(lv["conn"], ha["conn"], strict=True)
    )
    bulk = statistics.median(
        a.bytes_per_s / b.bytes_per_s for a, b in zip(lv["bulk"], ha["bulk"], strict=True)
    )
    log(f"ratio_conn_rate={conn:.2f}")
    log(f"ratio_throughput={bulk:.2f}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--duration", type=int, default=4, help="seconds per measurement")
    p.add_argument("--conns", type=int, default=64, help="wrk connections, conn_rate")
    p.add_argument("--bulk-conns", type=int, default=8, help="wrk connections, throughput")
    p.add_argument("--lvsmon", choices=("auto", "daemon", "embedded"), default="auto")
    p.add_argument(
        "--serve", nargs=2, type=int, metavar=("PORT", "BACKEND"), help=argparse.SUPPRESS
    )
    args = p.parse_args()
    if args.serve:
        serve(*args.serve)
        return 0
    missing = [tool for tool in ("haproxy", "wrk", "nginx") if not shutil.which(tool)]
    if missing:
        log(f"missing {', '.join(missing)}: run scripts/install-test-deps")
        return 2
    quiet = {"stdout": subprocess.DEVNULL}
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="lvsmon-bench-")))
        cmd, backend = nginx(tmp)
        stack.enter_context(running(cmd, "nginx", backend, **quiet))
        ha_cmd, ha_port = haproxy(tmp, backend)
        ha = stack.enter_context(running(ha_cmd, "haproxy", ha_port, **quiet))
        spec = None if args.lvsmon == "embedded" else lvsmon_daemon(tmp, backend)
        if spec is None and args.lvsmon == "daemon":
            return 2
        kind = "daemon" if spec else "embedded"
        lv_cmd, lv_port = spec or lvsmon_embedded(backend)
        lv = stack.enter_context(running(lv_cmd, f"lvsmon ({kind})", lv_port, **quiet))
        log(
            f"nginx :{backend}  haproxy :{ha_port} (pid {ha.pid})  "
            f"lvsmon {kind} :{lv_port} (pid {lv.pid})"
        )
        balancers = [Balancer("lvsmon", lv_port, lv), Balancer("haproxy", ha_port, ha)]
        report(measure(balancers, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
