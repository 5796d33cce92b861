"""The VRRP process: `python -m lvsmon.ha.child --fd N`, started by process.HAProcess.

It talks to its parent over an AF_UNIX SOCK_SEQPACKET socket (one pickled
message per packet; both ends are this package, nothing else can reach it).

    parent -> child   ("configure", groups) | ("health", {vs: (up, total)}) | ("stop",)
    child -> parent   ("status", (GroupStatus, ...)) | ("stopped",)

A closed socket (the parent died) counts as "stop": the masters hand over,
since a dead daemon no longer serves the addresses. SIGTERM does the same;
SIGINT is left to the parent (a terminal's Ctrl-C reaches both).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import os
import pickle
import resource
import signal
import socket
import sys
from collections.abc import Sequence
from typing import Any

from lvsmon import logs, privilege
from lvsmon.ha import hooks
from lvsmon.ha.engine import Engine
from lvsmon.logs import fields

log = logging.getLogger("lvsmon.ha")

RT_PRIORITY = 10  # low SCHED_RR priority: ahead of every normal task, behind kernel threads
RTTIME_LIMIT = (1_000_000, 2_000_000)  # µs of CPU without blocking: SIGXCPU, then SIGKILL
NICE = -10  # the fallback where real-time scheduling is not allowed
MAX_MESSAGE = 1 << 20


def prioritise() -> str:
    """Run VRRP ahead of the daemon's work (keepalived: vrrp_rt_priority, vrrp_rlimit_rttime).

    Measured with 100 ms adverts while the parent's loop is blocked and the CPUs
    are oversubscribed (tests/netns/test_process.py): nice -10 still sent some
    adverts 30-90 ms late, SCHED_RR about 1 ms. RLIMIT_RTTIME bounds a runaway
    loop (the parent then restarts the child as backup); SCHED_RESET_ON_FORK
    keeps hooks and ipvsadm out of the real-time class.
    """
    try:
        resource.setrlimit(resource.RLIMIT_RTTIME, RTTIME_LIMIT)
        policy = os.SCHED_RR | os.SCHED_RESET_ON_FORK
        os.sched_setscheduler(0, policy, os.sched_param(RT_PRIORITY))
        return "SCHED_RR"
    except (OSError, ValueError):
        with contextlib.suppress(OSError):
            os.nice(NICE)
        return f"nice {NICE}"


def send(chan: socket.socket, message: tuple[Any, ...]) -> None:
    with contextlib.suppress(OSError):  # the parent is gone: nothing to tell
        chan.send(pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL))


async def serve(chan: socket.socket) -> None:
    loop = asyncio.get_running_loop()
    chan.setblocking(False)
    engine = Engine(lambda status: send(chan, ("status", status)))
    # scapy leaves ~10^5 long-lived objects; a full collection walking them stalled the
    # loop 10-20 ms (measured at takeover). They never die: keep them out of the GC.
    gc.collect()
    gc.freeze()
    # Only now: imports (scapy's included) are done, so RLIMIT_RTTIME cannot bite them.
    scheduling = prioritise()
    log.info("VRRP process started", extra=fields(pid=os.getpid(), scheduling=scheduling))

    def readable() -> None:
        while True:
            try:
                data = chan.recv(MAX_MESSAGE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                data = b""
            if not data:
                loop.remove_reader(chan.fileno())
                engine.shutdown()
                return
            message = pickle.loads(data)
            match message[0]:
                case "configure":
                    engine.configure(message[1])
                case "health":
                    engine.set_health(message[1])
                case "stop":
                    engine.shutdown()

    loop.add_reader(chan.fileno(), readable)
    loop.add_signal_handler(signal.SIGTERM, engine.shutdown)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    await engine.run()
    send(chan, ("stopped",))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lvsmon.ha.child")
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--log-level", default="warning")
    parser.add_argument("--script-user", default="", help="run notify hooks as this user")
    args = parser.parse_args(argv)
    logs.setup(args.log_level)
    if args.script_user:
        hooks.run_as = privilege.Account.named(args.script_user)
    chan = socket.socket(fileno=args.fd)
    try:
        asyncio.run(serve(chan))
    except Exception:
        log.exception("VRRP process failed", extra=fields(pid=os.getpid()))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
