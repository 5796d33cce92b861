"""`exec`: an external program decides (keepalived's MISC_CHECK). No shell.

    argv = [program, *args]   {address} {port} {virtual_server} in args are replaced
    env  = the daemon's, plus LVSMON_REAL_SERVER_ADDRESS, LVSMON_REAL_SERVER_PORT,
           LVSMON_VIRTUAL_SERVER, LVSMON_CHECK_TIMEOUT (seconds)

Exit 0: up. Exit 1: down. With `dynamic_weight = true` (keepalived's
misc_dynamic), exit 2..255: up with weight exit-2 (so 2 = weight 0, quiesced
but up; 255 = weight 253). Any other exit, a signal, or a program that cannot
start: down (exec_failed).

The program runs as `daemon.script_user` (or the daemon's user), with no
capability of the daemon's, and in its own session (so its own process group); on timeout
the whole group is SIGKILLed and the program reaped, and after a normal exit
whatever it left behind in its group is killed too: no strays, no zombies.
Its stdout+stderr (capped at max_response_bytes) give the log line's detail.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from asyncio.subprocess import DEVNULL, PIPE, STDOUT, Process
from typing import Any

from lvsmon import privilege
from lvsmon.model.health import OK, ExecSpec, Reason, Result, fail

# Whom programs run as (daemon.script_user; None: the daemon's own user). Set by the
# daemon at start and on reload (run_as), read by every check it starts.
_run_as: privilege.Account | None = None


def run_as(user: privilege.Account | None) -> None:
    global _run_as
    _run_as = user


class ExecChecker:
    def __init__(
        self, spec: ExecSpec, address: str, port: int, virtual_server: str, cap: int, timeout: float
    ):
        self.phase = "start"
        self.cap = cap
        values = {"{address}": address, "{port}": str(port), "{virtual_server}": virtual_server}
        self.argv = [spec.program, *(_substitute(a, values) for a in spec.args)]
        self.dynamic = spec.dynamic_weight
        self.extra_env = {
            "LVSMON_REAL_SERVER_ADDRESS": address,
            "LVSMON_REAL_SERVER_PORT": str(port),
            "LVSMON_VIRTUAL_SERVER": virtual_server,
        }
        self.timeout = timeout  # the program may want to know its budget

    async def __call__(self) -> Result:
        self.phase = "start the program"
        env = {**os.environ, **self.extra_env, "LVSMON_CHECK_TIMEOUT": f"{self.timeout:g}"}
        creating = asyncio.ensure_future(
            asyncio.create_subprocess_exec(
                *self.argv,
                stdin=DEVNULL,
                stdout=PIPE,
                stderr=STDOUT,
                env=env,
                start_new_session=True,
                **privilege.script_launcher(_run_as),  # type: ignore[arg-type]
            )
        )
        try:
            # shielded: a timeout while the process is being set up (a loaded machine
            # can take that long) must not lose it: it is killed and reaped once it exists
            proc = await asyncio.shield(creating)
        except asyncio.CancelledError:
            _ABANDONED.add(creating)
            creating.add_done_callback(_kill_when_created)
            raise
        except OSError as exc:
            return fail(Reason.EXEC_FAILED, f"cannot run {self.argv[0]}: {exc.strerror}")
        reading = asyncio.ensure_future(_read_capped(proc, self.cap))
        try:
            self.phase = "wait for the program"
            code = await proc.wait()
            _kill_group(proc.pid)  # leftovers of a program that exited
            output = await reading
        finally:
            if proc.returncode is None:  # timed out (cancelled): kill the group, reap
                _kill_group(proc.pid)
                reading.cancel()
                await proc.wait()
        return self._judge(code, output)

    def _judge(self, code: int, output: bytes) -> Result:
        last = output.decode("utf-8", "replace").strip().splitlines()
        said = f": {last[-1][:200]}" if last else ""
        if code == 0:
            return OK
        if self.dynamic and 2 <= code <= 255:
            return Result(True, weight=code - 2)
        if code < 0:
            return fail(Reason.EXEC_FAILED, f"killed by {signal.Signals(-code).name}{said}")
        return fail(Reason.EXEC_FAILED, f"exit {code}{said}")


# processes whose check gave up while they were being created: held here until
# killed and reaped (the loop keeps only weak references to tasks)
_ABANDONED: set[asyncio.Future[Any]] = set()


def _kill_when_created(creating: asyncio.Future[Process]) -> None:
    _ABANDONED.discard(creating)
    if creating.cancelled() or creating.exception() is not None:
        return
    proc = creating.result()
    _kill_group(proc.pid)
    reaping = asyncio.ensure_future(proc.wait())
    _ABANDONED.add(reaping)
    reaping.add_done_callback(_ABANDONED.discard)


async def settle() -> None:
    """Wait until every abandoned program is killed and reaped (the monitor's stop)."""
    while _ABANDONED:
        await asyncio.gather(*list(_ABANDONED), return_exceptions=True)
        await asyncio.sleep(0)  # let done-callbacks add the reapers


def _substitute(arg: str, values: dict[str, str]) -> str:
    for name, value in values.items():
        arg = arg.replace(name, value)
    return arg


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


async def _read_capped(proc: Process, cap: int) -> bytes:
    """The output up to `cap` bytes; the rest is read and dropped (never blocks the program)."""
    assert proc.stdout is not None
    kept = bytearray()
    while chunk := await proc.stdout.read(65536):
        if len(kept) < cap:
            kept += chunk[: cap - len(kept)]
    return bytes(kept)
