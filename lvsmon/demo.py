"""`lvsmon demo`: balancing you can watch, on the embedded data plane, no root needed.

Starts the config's real servers as tiny local HTTP servers, runs the real
daemon (`lvsmon run`) as a subprocess, sends a steady trickle of client
connections through the virtual server, and redraws the live table each
second. Half-way it quiesces one real server with a SIGHUP reload, and later
restores it, to show a reload that changes weights without a client error.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
from collections import Counter
from pathlib import Path

from lvsmon import config as configmod
from lvsmon.client import fetch_view
from lvsmon.model import Config, VirtualServer
from lvsmon.status import render_table

CLIENTS = 6  # concurrent client loops
HOLD = (0.05, 0.4)  # seconds a client keeps its connection open


class RealServers:
    """One tiny HTTP/1.0 server per configured real server; counts its own hits."""

    def __init__(self) -> None:
        self.hits: Counter[str] = Counter()
        self._servers: list[asyncio.Server] = []

    async def start(self, vs: VirtualServer) -> None:
        for rs in vs.real_servers:
            label = rs.label

            async def handle(
                reader: asyncio.StreamReader, writer: asyncio.StreamWriter, label: str = label
            ) -> None:
                with contextlib.suppress(Exception):
                    await reader.readuntil(b"\r\n\r\n")
                    self.hits[label] += 1
                    body = f"served by {label}\n".encode()
                    head = b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body)
                    writer.write(head + body)
                    await writer.drain()
                writer.close()

            try:
                server = await asyncio.start_server(handle, str(rs.address), rs.port)
            except OSError as exc:
                raise SystemExit(f"lvsmon demo: real server {label}: {exc.strerror}") from None
            self._servers.append(server)

    def close(self) -> None:
        for server in self._servers:
            server.close()


async def _client(vs: VirtualServer, stats: Counter[str], stop: asyncio.Event) -> None:
    host, port = str(vs.address), vs.port
    while not stop.is_set():
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 2)
            await asyncio.sleep(random.uniform(*HOLD))  # a connection that stays active a while
            writer.write(b"GET / HTTP/1.0\r\nHost: demo\r\n\r\n")
            reply = await asyncio.wait_for(reader.read(), 2)
            writer.close()
            stats["ok" if reply.startswith(b"HTTP/1.0 200") else "bad reply"] += 1
        except (OSError, TimeoutError):
            stats["error"] += 1
            await asyncio.sleep(0.2)


async def _wait_ready(address: str, daemon: subprocess.Popen[bytes], timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if daemon.poll() is not None:
            raise SystemExit(f"lvsmon demo: the daemon exited with code {daemon.returncode}")
        with contextlib.suppress(urllib.error.URLError, OSError):
            await asyncio.to_thread(fetch_view, address, 1.0)
            return
        await asyncio.sleep(0.1)
    raise SystemExit(f"lvsmon demo: the daemon did not answer on {address} within {timeout:g}s")


def _quiesced_copy(text: str, vs: VirtualServer, weight: int) -> str:
    """The config text with the last real server of `vs` set to `weight`."""
    last = vs.real_servers[-1]
    pattern = re.compile(
        rf'(address\s*=\s*"{re.escape(str(last.address))}"\s*\n\s*port\s*=\s*{last.port}\s*\n'
        r"\s*weight\s*=\s*)\d+"
    )
    return pattern.sub(rf"\g<1>{weight}", text, count=1)


async def _demo(cfg: Config, path: Path, duration: float) -> int:
    vs = cfg.virtual_servers[0]
    servers = RealServers()
    await servers.start(vs)
    work = Path(tempfile.mkdtemp(prefix="lvsmon-demo-"))
    live = work / "lvsmon.toml"  # the demo edits a copy, never your file
    original = path.read_text()
    live.write_text(original)
    address = str(cfg.daemon.metrics_listen)
    with open(work / "daemon.log", "wb") as log:  # the daemon keeps its own descriptor
        daemon = subprocess.Popen(
            [sys.executable, "-m", "lvsmon.cli", "run", "-c", str(live)], stderr=log
        )
    stats: Counter[str] = Counter()
    stop = asyncio.Event()
    clients: list[asyncio.Task[None]] = []
    try:
        await _wait_ready(address, daemon)
        clients = [asyncio.create_task(_client(vs, stats, stop)) for _ in range(CLIENTS)]
        start = time.monotonic()
        phase, note = 0, ""
        while not duration or time.monotonic() - start < duration:
            elapsed = time.monotonic() - start
            if (step := _maybe_reload(elapsed, phase, live, original, vs, daemon)) is not None:
                phase, note = phase + 1, step
            view = await asyncio.to_thread(fetch_view, address)
            _draw(render_table(view), servers.hits, stats, elapsed, note)
            await asyncio.sleep(1)
    finally:
        stop.set()
        for task in clients:
            task.cancel()
        await asyncio.gather(*clients, return_exceptions=True)
        daemon.send_signal(signal.SIGTERM)
        await asyncio.to_thread(daemon.wait, 20)
        servers.close()
    print(
        f"\ndemo finished: {stats['ok']} requests served, {stats['error']} client errors; "
        f"daemon log: {work / 'daemon.log'}"
    )
    return 0 if daemon.returncode == 0 else 1


def _maybe_reload(
    elapsed: float,
    phase: int,
    live: Path,
    original: str,
    vs: VirtualServer,
    daemon: subprocess.Popen[bytes],
) -> str | None:
    """At 8 s quiesce the last real server, at 16 s restore it; returns what it did."""
    last = vs.real_servers[-1].label
    if phase == 0 and elapsed >= 8:
        live.write_text(_quiesced_copy(original, vs, 0))
        daemon.send_signal(signal.SIGHUP)
        return f"t=8s: {last} set to weight 0 (quiesce) and reloaded with SIGHUP"
    if phase == 1 and elapsed >= 16:
        live.write_text(original)
        daemon.send_signal(signal.SIGHUP)
        return f"t=16s: {last} restored to its weight, reloaded again"
    return None


def _draw(table: str, hits: Counter[str], stats: Counter[str], elapsed: float, note: str) -> None:
    tty = sys.stdout.isatty()
    total = sum(hits.values()) or 1
    lines = [
        "\x1b[H\x1b[2J" if tty else "",
        f"lvsmon demo — {elapsed:4.0f}s — Ctrl-C to stop",
        "",
        table,
        "",
        "requests answered by each real server:",
    ]
    for label, n in sorted(hits.items()):
        bar = "#" * round(40 * n / total)
        lines.append(f"  {label:<22} {n:>6}  {bar}")
    lines.append(f"\nclients: {stats['ok']} ok, {stats['error']} errors")
    if note:
        lines.append(note)
    print("\n".join(lines), flush=True)


def run_demo(config_path: str, duration: float) -> int:
    path = Path(config_path)
    if not path.exists():
        print(
            f"lvsmon demo: {config_path} not found (run it from the lvsmon checkout, or pass -c)",
            file=sys.stderr,
        )
        return 1
    cfg = configmod.load(path)
    if cfg.daemon.dataplane != "proxy" or not cfg.virtual_servers:
        print(
            f'lvsmon demo: {config_path}: needs dataplane = "proxy" and a virtual server',
            file=sys.stderr,
        )
        return 1
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    try:
        return asyncio.run(_demo(cfg, path, duration))
    except KeyboardInterrupt:
        return 0
