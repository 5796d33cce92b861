"""Notify programs: the side effects of a role change (the IPVS sync daemon follows the
role in the main daemon instead: lvsmon.daemon.Director._follow_ha_role).

A hook is the configured argv, executed directly (no shell), with stdin closed
and this environment added:

    LVSMON_HA_GROUP           the failover group's name
    LVSMON_HA_STATE           the state entered: master, backup, fault, stop
    LVSMON_HA_PREVIOUS_STATE  the state left: initialize, backup, master, fault
    LVSMON_HA_PRIORITY        the effective priority

Hooks of one group run one at a time, in order, each killed after
`notify.timeout` (its whole process group: whatever it started dies with it);
they never delay adverts (they run beside the VRRP loop). They run as
`daemon.script_user` (else the daemon's user) with none of its capabilities.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Awaitable, Callable, Sequence

from lvsmon import privilege
from lvsmon.logs import fields
from lvsmon.model.failover import FailoverGroup

log = logging.getLogger("lvsmon.ha")

STATE_NAMES = {"initialize": "stop"}
# Whom hooks run as (daemon.script_user; None: this process's user): the VRRP process
# sets it from its command line.
run_as: privilege.Account | None = None


class Serial:
    """One queue of side effects per group: hooks and sync-daemon changes run in
    the order of the transitions that caused them, one at a time."""

    def __init__(self) -> None:
        self._queues: dict[str, asyncio.Queue[Callable[[], Awaitable[None]]]] = {}
        self._tasks: list[asyncio.Task[None]] = []

    def submit(self, key: str, job: Callable[[], Awaitable[None]]) -> None:
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = asyncio.Queue()
            self._tasks.append(asyncio.ensure_future(self._worker(queue)))
        queue.put_nowait(job)

    @staticmethod
    async def _worker(queue: asyncio.Queue[Callable[[], Awaitable[None]]]) -> None:
        while True:
            job = await queue.get()
            try:
                await job()
            except Exception:  # a failing hook must never stop the VRRP loop
                log.exception("side effect failed")
            finally:
                queue.task_done()

    async def drain(self, timeout: float) -> None:
        """Wait (bounded) for queued jobs, e.g. the stop hook before exiting."""
        waits = [q.join() for q in self._queues.values()]
        if waits:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*waits), timeout)
        for task in self._tasks:
            task.cancel()


def hook_job(
    group: FailoverGroup, state: str, previous: str, priority: int
) -> Callable[[], Awaitable[None]] | None:
    argv = group.hooks.for_state(state)
    if not argv:
        return None
    env = {
        **os.environ,
        "LVSMON_HA_GROUP": group.name,
        "LVSMON_HA_STATE": STATE_NAMES.get(state, state),
        "LVSMON_HA_PREVIOUS_STATE": previous,
        "LVSMON_HA_PRIORITY": str(priority),
    }
    timeout = group.hooks.timeout
    return lambda: run_program(argv, env, timeout)


async def run_program(argv: Sequence[str], env: dict[str, str], timeout: float) -> None:
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            start_new_session=True,
            **privilege.script_launcher(run_as),  # type: ignore[arg-type]
        )
    except OSError as exc:
        log.error(
            "notify program failed to start", extra=fields(argv=" ".join(argv), error=str(exc))
        )
        return
    try:
        code = await asyncio.wait_for(proc.wait(), timeout)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # its own session: the hook and its children
        await proc.wait()
        log.error("notify program timed out", extra=fields(argv=" ".join(argv), timeout=timeout))
        return
    if code:
        log.warning("notify program failed", extra=fields(argv=" ".join(argv), exit=code))
