#!/usr/bin/env python3
"""Adaptive weights against static weights, same load, same real servers, in one run.

Three real servers on 127.0.0.2-4 with different capacities: `workers` slots
each, service time 1x, 2x and 4x the base (uniform +-50%); halfway through
each run the 2x server degrades to 8x. Each serves its own exporter with
`backend_inflight_seconds_total` (the integral of requests in the server,
queued or running: a load average's numerator) and `backend_workers`.

The director is lvsmon's proxy data plane (ProxyDataPlane, wlc, IPVS
inactive accounting with default timeouts) driven in-process by the same
loop the daemon runs: desired table -> reconcile -> apply, every second or
when a weight changes. "static" programs the configured weights (100 each);
"adaptive" adds a WeightController scraping the exporters with

    expression = '%s'

and the default control law. An open-loop generator (Poisson arrivals at a
constant rate, the same seeded sequence for both runs; latency counted from
the scheduled send, so a slow balancer cannot hide queueing) drives both.

Prints per run p50/p99 latency, per-phase utilisation and its max/mean
imbalance, and the weights' changes, turns (a weight going up after going
down, or the reverse: oscillation) and coefficient of variation over the
settled second half of each phase; last, medians over --rounds pairs:

    ratio_p99=X.XX        (adaptive / static; target <= 0.7)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

HOSTS = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
MULTS = [1.0, 2.0, 4.0]
DEGRADE = (1, 8.0)  # the 2x server becomes 8x at half time
SIGNALS = {  # the load signal, as node_exporter would give it
    "cpu": "rate(backend_busy_seconds_total) / backend_workers",  # CPU utilisation
    "load": "rate(backend_inflight_seconds_total) / backend_workers",  # load average per CPU
}
ADAPTIVE = """
source = "scrape"
url = "http://${address}:%d/metrics"
expression = '%s'
interval = "1s"
timeout = "500ms"
"""


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def free_port(*hosts: str) -> int:
    import socket

    for _ in range(100):
        with socket.socket() as s:
            s.bind((hosts[0], 0))
            port = int(s.getsockname()[1])
        try:
            for h in hosts[1:]:
                with socket.socket() as s:
                    s.bind((h, port))
        except OSError:
            continue
        return port
    raise RuntimeError("no common free port")


# --- real servers ---------------------------------------------------------------------------


class RealServer:
    def __init__(self, mult: float, workers: int, base: float):
        self.mult, self.workers, self.base = mult, workers, base
        self.slots = asyncio.Semaphore(workers)
        self.inflight = 0
        self.area = 0.0  # integral of inflight over time
        self.busy = 0.0  # worker-seconds spent serving (finished requests)
        self.running: set[float] = set()  # start times of requests being served
        self.changed = time.monotonic()
        self.marks: list[tuple[float, float]] = []  # (t, busy) at phase marks
        self.rng = random.Random(hash(mult))

    def _account(self, delta: int) -> None:
        now = time.monotonic()
        self.area += self.inflight * (now - self.changed)
        self.changed = now
        self.inflight += delta

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._account(+1)
        try:
            await reader.readline()
            async with self.slots:
                t0 = time.monotonic()
                self.running.add(t0)
                try:
                    await asyncio.sleep(self.base * self.mult * self.rng.uniform(0.5, 1.5))
                finally:
                    self.running.discard(t0)
                    self.busy += time.monotonic() - t0
            writer.write(b"ok\n")
            await writer.drain()
        except OSError:
            pass
        finally:
            self._account(-1)
            writer.close()

    async def exporter(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            await reader.readuntil(b"\r\n\r\n")
            self._account(0)
            busy = self.busy + sum(time.monotonic() - t for t in self.running)
            body = (
                f"# TYPE backend_inflight_seconds_total counter\n"
                f"backend_inflight_seconds_total {self.area:.6f}\n"
                f"# TYPE backend_busy_seconds_total counter\n"
                f"backend_busy_seconds_total {busy:.6f}\n"
                f"backend_workers {self.workers}\n"
            ).encode()
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: "
                + str(len(body)).encode()
                + b"\r\nConnection: close\r\n\r\n"
                + body
            )
            await writer.drain()
        writer.close()


async def serve_backends(args: argparse.Namespace) -> None:
    servers = [RealServer(m, args.workers, args.base) for m in MULTS]
    for host, rs in zip(HOSTS, servers, strict=True):
        await asyncio.start_server(rs.handle, host, args.port, backlog=4096)
        await asyncio.start_server(rs.exporter, host, args.exporter_port)
    Path(args.ready).write_text("ready")
    start = time.monotonic()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    i, mult = DEGRADE
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), args.warmup + args.duration / 2)
    if not stop.is_set():
        servers[i].mult = mult
        marks = [s.busy for s in servers]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 3600)
    else:
        marks = [s.busy for s in servers]
    elapsed = time.monotonic() - start
    Path(args.out).write_text(
        json.dumps(
            {
                "busy_first": marks,
                "busy": [s.busy for s in servers],
                "elapsed": elapsed,
                "workers": args.workers,
            }
        )
    )


# --- director -------------------------------------------------------------------------------


async def direct(args: argparse.Namespace) -> None:
    import ipaddress
    import tomllib

    from lvsmon.config.adaptive import read_adaptive
    from lvsmon.configkit import Problem
    from lvsmon.dataplane.proxy import ProxyDataPlane
    from lvsmon.desired import desired_table
    from lvsmon.model import Config, DaemonSettings, VirtualServer
    from lvsmon.model import RealServer as Rs
    from lvsmon.reconcile import reconcile
    from lvsmon.weights.controller import WeightController, group_for
    from lvsmon.weights.effective import table_weights, weight_parts

    reals = tuple(Rs(ipaddress.ip_address(h), args.port, 100) for h in HOSTS)
    vs = VirtualServer(
        "bench", ipaddress.ip_address("127.0.0.1"), args.vip, scheduler="wlc", real_servers=reals
    )
    config = Config(DaemonSettings(), (vs,))
    dp = ProxyDataPlane()
    await dp.start()
    controller: WeightController | None = None
    if args.mode == "adaptive":
        problems: list[Problem] = []
        text = ADAPTIVE % (args.exporter_port, SIGNALS[args.signal])
        spec = read_adaptive(tomllib.loads(text), "bench", problems)
        assert spec is not None, problems
        controller = WeightController()
        controller.configure([group_for(vs, spec)])
        await controller.start()
    timeline: list[tuple[float, list[int]]] = []
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    start = time.monotonic()

    async def sync() -> None:
        factors = controller.factors() if controller is not None else {}
        parts = weight_parts([vs], adaptive=factors)
        snap = dp.snapshot()
        ops = reconcile(desired_table(config, table_weights(parts)), snap.table(), snap.in_use)
        if ops:
            await dp.apply(ops)

    await sync()
    Path(args.ready).write_text("ready")
    next_sample = 0.0
    while not stop.is_set():
        waiters = [asyncio.ensure_future(stop.wait())]
        if controller is not None:
            controller.changed.clear()
            waiters.append(asyncio.ensure_future(controller.changed.wait()))
        await asyncio.wait(waiters, timeout=0.25, return_when="FIRST_COMPLETED")
        for w in waiters:
            w.cancel()
        await sync()
        now = time.monotonic() - start
        if now >= next_sample:
            programmed = dp.snapshot().table()[vs.key].real_servers
            weight = {str(rs.address): rs.weight for rs in programmed}
            timeline.append((now, [weight.get(h, 0) for h in HOSTS]))
            next_sample = now + 0.5
    if controller is not None:
        await controller.stop()
    await dp.stop(0)
    Path(args.out).write_text(json.dumps({"timeline": timeline}))


# --- load generator -------------------------------------------------------------------------


async def generate(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    rng = random.Random(args.seed)
    results: list[tuple[float, float, bool]] = []
    tasks: set[asyncio.Task[None]] = set()

    async def one(due: float) -> None:
        ok = False
        try:
            async with asyncio.timeout(30):
                reader, writer = await asyncio.open_connection("127.0.0.1", args.vip)
                writer.write(b"GET\n")
                ok = (await reader.read()) == b"ok\n"
                writer.close()
        except (OSError, TimeoutError):
            pass
        results.append((due - t0, loop.time() - due, ok))

    t0 = loop.time() + 0.2
    due, end = t0, t0 + args.duration
    while True:
        due += rng.expovariate(args.rate)
        if due >= end:
            break
        wait = due - loop.time()
        if wait > 0:
            await asyncio.sleep(wait)
        task = asyncio.ensure_future(one(due))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.wait(tasks)
    Path(args.out).write_text(json.dumps(results))


# --- orchestration --------------------------------------------------------------------------


def spawn(role: str, tmp: Path, extra: list[str]) -> tuple[subprocess.Popen[bytes], Path]:
    out = tmp / f"{role}.json"
    ready = tmp / f"{role}.ready"
    cmd = [
        sys.executable,
        __file__,
        "--role",
        role,
        "--out",
        str(out),
        "--ready",
        str(ready),
        *extra,
    ]
    proc = subprocess.Popen(cmd, cwd=ROOT)
    if role != "generate":
        deadline = time.monotonic() + 20
        while not ready.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{role} did not start")
            time.sleep(0.05)
    return proc, out


def run(mode: str, args: argparse.Namespace) -> dict[str, Any]:
    common = [
        "--port",
        str(free_port(*HOSTS)),
        "--workers",
        str(args.workers),
        "--base",
        str(args.base),
        "--duration",
        str(args.duration),
        "--warmup",
        str(args.warmup),
    ]
    common += [
        "--exporter-port",
        str(free_port(*HOSTS)),
        "--vip",
        str(free_port("127.0.0.1")),
        "--signal",
        args.signal,
    ]
    with tempfile.TemporaryDirectory(prefix="lvsmon-bench-") as d:
        tmp = Path(d)
        back, back_out = spawn("backends", tmp, common)
        director, dir_out = spawn("director", tmp, [*common, "--mode", mode])
        try:
            time.sleep(args.warmup)
            gen, gen_out = spawn(
                "generate", tmp, [*common, "--rate", str(args.rate), "--seed", str(args.seed)]
            )
            gen.wait(args.duration + 120)
        finally:
            for p in (director, back):
                p.send_signal(signal.SIGTERM)
            for p in (director, back):
                p.wait(30)
        return {
            "backends": json.loads(back_out.read_text()),
            "director": json.loads(dir_out.read_text()),
            "requests": json.loads(gen_out.read_text()),
        }


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def summarise(mode: str, r: dict[str, Any], args: argparse.Namespace) -> dict[str, float]:
    lat = [lat for _, lat, ok in r["requests"] if ok]
    mid = args.duration / 2
    lat1 = [lat for t, lat, ok in r["requests"] if ok and t < mid]
    lat2 = [lat for t, lat, ok in r["requests"] if ok and t >= mid]
    failed = sum(1 for *_, ok in r["requests"] if not ok)
    b = r["backends"]
    half = args.warmup + args.duration / 2
    cap = b["workers"]
    first = [x / (cap * half) for x in b["busy_first"]]
    second = [
        (x - y) / (cap * (b["elapsed"] - half))
        for x, y in zip(b["busy"], b["busy_first"], strict=True)
    ]

    def imbalance(u: list[float]) -> float:
        return max(u) / statistics.mean(u)

    # oscillation: the weights' spread over the settled second half of each phase, and how
    # often a weight turned (up after down or down after up) over the whole run
    tl = r["director"]["timeline"]
    q = args.duration / 4
    cvs, turns = [], []
    for i in range(len(HOSTS)):
        for lo, hi in ((args.warmup + q, half), (half + q, args.warmup + args.duration)):
            ws = [w[i] for t, w in tl if lo <= t < hi]
            if len(ws) > 1 and statistics.mean(ws) > 0:
                cvs.append(statistics.pstdev(ws) / statistics.mean(ws))
        moves = [b2[1][i] - a[1][i] for a, b2 in itertools.pairwise(tl) if b2[1][i] != a[1][i]]
        turns.append(sum(1 for x, y in itertools.pairwise(moves) if (x > 0) != (y > 0)))
    changes = sum(1 for a, b2 in itertools.pairwise(tl) if a[1] != b2[1])
    s = {
        "p50": pct(lat, 0.5) * 1000,
        "p99": pct(lat, 0.99) * 1000,
        "failed": failed,
        "imbalance1": imbalance(first),
        "imbalance2": imbalance(second),
        "imbalance": (imbalance(first) + imbalance(second)) / 2,
        "cv": max(cvs) if cvs else 0.0,
        "changes": changes,
    }
    util = " ".join(f"{u:.2f}" for u in first) + " | " + " ".join(f"{u:.2f}" for u in second)
    print(
        f"{mode:8s} p50={s['p50']:.0f}ms p99={s['p99']:.0f}ms "
        f"(p99 before|after the degradation {pct(lat1, 0.99) * 1000:.0f}|"
        f"{pct(lat2, 0.99) * 1000:.0f}ms) failed={failed} "
        f"utilisation(1x 2x 4x | 1x 8x 4x)={util} "
        f"imbalance(max/mean)={s['imbalance1']:.2f}|{s['imbalance2']:.2f} "
        f"weights_final={tl[-1][1] if tl else []} weight_changes={changes} "
        f"weight_turns={turns} weight_cv_settled={s['cv']:.3f}",
        flush=True,
    )
    return s


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rate", type=float, default=100.0, help="requests per second (open loop)")
    p.add_argument("--duration", type=float, default=60.0, help="seconds per run")
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--workers", type=int, default=4, help="concurrent requests per real server")
    p.add_argument("--base", type=float, default=0.04, help="the 1x service time, seconds")
    p.add_argument("--seed", type=int, default=8)
    p.add_argument("--rounds", type=int, default=1, help="static/adaptive pairs; ratios: median")
    p.add_argument("--timeline", action="store_true", help="print the adaptive weights over time")
    p.add_argument(
        "--signal",
        choices=sorted(SIGNALS),
        default="cpu",
        help="cpu: utilisation (busy time); load: requests in the server per worker",
    )
    p.add_argument("--role", choices=["main", "backends", "director", "generate"], default="main")
    p.add_argument("--mode", choices=["static", "adaptive"], default="static")
    for name in ("--out", "--ready"):
        p.add_argument(name, default="")
    for name in ("--port", "--exporter-port", "--vip"):
        p.add_argument(name, type=int, default=0)
    args = p.parse_args()
    role = {"backends": serve_backends, "director": direct, "generate": generate}.get(args.role)
    if role is not None:
        try:
            import uvloop

            uvloop.run(role(args))
        except ImportError:  # pragma: no cover
            asyncio.run(role(args))
        return 0
    capacity = sum(args.workers / (args.base * m) for m in MULTS)
    degraded = sum(
        args.workers / (args.base * (DEGRADE[1] if i == DEGRADE[0] else m))
        for i, m in enumerate(MULTS)
    )
    log(
        f"capacity {capacity:.0f}/s, {degraded:.0f}/s after the 2x server degrades to 8x; "
        f"offered {args.rate:.0f}/s ({args.rate / capacity:.0%} then {args.rate / degraded:.0%})"
    )
    ratios: dict[str, list[float]] = {"p50": [], "imbalance": [], "p99": []}
    for n in range(args.rounds):
        if args.rounds > 1:
            log(f"round {n + 1} of {args.rounds}")
        static = summarise("static", run("static", args), args)
        result = run("adaptive", args)
        adaptive = summarise("adaptive", result, args)
        if args.timeline:
            for t, w in result["director"]["timeline"][::4]:
                log(f"  t={t:5.1f}s weights={w}")
        for key, values in ratios.items():
            values.append(adaptive[key] / static[key])
    # the median of the rounds' ratios: each round's pair ran back to back, on the same noise
    if args.rounds > 1:
        for key, values in ratios.items():
            print(f"rounds_{key}=" + ",".join(f"{x:.2f}" for x in values))
    for key in ("p50", "imbalance", "p99"):
        print(f"ratio_{key}={statistics.median(ratios[key]):.2f}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
