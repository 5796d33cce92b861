"""Programs the BGP fleet topology runs inside its namespaces (tests/netns/fleet.py).

python fleet_apps.py server NAME PORT
    a real server: per connection, read an optional line "<hold ms>", wait
    that long, answer "NAME <peer address>" and close. The peer address is
    the director's back address: the client learns which director served it.

python fleet_apps.py flows ADDRESS PORT WORKERS COUNT HOLD_MS [SECONDS]
    WORKERS concurrent loops making COUNT connections in all (or until
    SECONDS), each from a fresh source port, held HOLD_MS by the server;
    one line per connection on stdout: "<monotonic> ok|fail <answer or error>".

python fleet_apps.py fixed ADDRESS PORT FIRST_PORT N INTERVAL
    N flows with fixed source ports FIRST_PORT.. retried every INTERVAL:
    "<monotonic> <source port> ok|fail <answer>" per attempt, until stdin closes.
    Each closes with RST, so a source port is free again at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import sys
import threading
import time
from collections.abc import Awaitable, Callable

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _serve(name: str, port: int) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.TimeoutError, ValueError):
            peer = writer.get_extra_info("peername")[0]
            line = await asyncio.wait_for(reader.readline(), 10)
            hold = int(line.strip() or 0)
            if hold:
                await asyncio.sleep(hold / 1000)
            writer.write(f"{name} {peer}\n".encode())
            await writer.drain()
        writer.close()

    await _listen(handle, port)


async def _listen(handle: Handler, port: int) -> None:
    server = await asyncio.start_server(handle, "0.0.0.0", port, backlog=1024, reuse_address=True)
    print("listening", flush=True)
    async with server:
        await server.serve_forever()


async def _echo(name: str, port: int) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            writer.write(f"{name}\n".encode())
            await writer.drain()
            while data := await reader.read(4096):
                writer.write(data)
                await writer.drain()
        writer.close()

    await _listen(handle, port)


def _attempt(address: str, port: int, hold: int, source_port: int = 0, timeout: float = 3.0) -> str:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.settimeout(timeout)
    try:
        if source_port:
            s.bind(("0.0.0.0", source_port))
        s.connect((address, port))
        s.sendall(f"{hold}\n".encode())
        answer = s.recv(128).decode(errors="replace").strip()
        result = f"ok {answer}" if answer else "fail empty"
    except OSError as exc:
        result = f"fail {type(exc).__name__}"
    finally:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
    return result


def _flows(address: str, port: int, workers: int, count: int, hold: int, seconds: float) -> None:
    lock = threading.Lock()
    left = [count]
    deadline = time.monotonic() + seconds

    def worker() -> None:
        while time.monotonic() < deadline:
            with lock:
                if left[0] <= 0:
                    return
                left[0] -= 1
            started = time.monotonic()
            result = _attempt(address, port, hold)
            with lock:
                print(f"{started:.6f} {result}", flush=True)

    threads = [threading.Thread(target=worker) for _ in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def _fixed(address: str, port: int, first: int, n: int, interval: float) -> None:
    stop = threading.Event()
    lock = threading.Lock()

    def stop_at_eof() -> None:
        sys.stdin.read()
        stop.set()

    def flow(sport: int) -> None:
        while not stop.is_set():
            started = time.monotonic()
            result = _attempt(address, port, 0, sport, timeout=0.5)
            with lock:
                print(f"{started:.6f} {sport} {result}", flush=True)
            stop.wait(max(0.0, interval - (time.monotonic() - started)))

    threading.Thread(target=stop_at_eof, daemon=True).start()
    threads = [threading.Thread(target=flow, args=(first + i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def _sweep(address: str, port: int, first: int, n: int) -> None:
    lock = threading.Lock()
    ports = iter(range(first, first + n))

    def worker() -> None:
        while True:
            with lock:
                sport = next(ports, None)
            if sport is None:
                return
            result = _attempt(address, port, 0, sport, timeout=2.0)
            with lock:
                print(f"{sport} {result}", flush=True)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def main() -> None:
    what, args = sys.argv[1], sys.argv[2:]
    if what == "server":
        asyncio.run(_serve(args[0], int(args[1])))
    elif what == "echo":
        asyncio.run(_echo(args[0], int(args[1])))
    elif what == "flows":
        seconds = float(args[5]) if len(args) > 5 else 3600.0
        _flows(args[0], int(args[1]), int(args[2]), int(args[3]), int(args[4]), seconds)
    elif what == "sweep":
        _sweep(args[0], int(args[1]), int(args[2]), int(args[3]))
    elif what == "fixed":
        _fixed(args[0], int(args[1]), int(args[2]), int(args[3]), float(args[4]))
    else:
        raise SystemExit(f"unknown program {what!r}")


if __name__ == "__main__":
    main()
