"""The daemon's handle on its VRRP process (keepalived keeps VRRP apart for the same
reason: adverts must leave on time while checkers, a reload or a scrape keep
the daemon's loop busy).

    ha = HAProcess(config.failover_groups)
    await ha.start()                      # spawn; groups start in BACKUP
    ha.status()                           # latest GroupStatus per group (metrics, status)
    ha.configure(new_groups)              # on reload: unchanged groups keep their state
    ha.set_real_server_health({"web": (3, 4)})   # per virtual server: (up, configured)
    await ha.stop()                       # graceful: masters hand over first

The child is in the caller's process group, so killing the group kills both;
if the parent dies alone the child notices (EOF) and hands over. A child that
dies unexpectedly leaves addresses nobody answers for: the parent removes them at
once, then restarts the child after `RESTART_DELAY` (it comes back as backup).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import pickle
import socket
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from lvsmon.ha.status import GroupStatus
from lvsmon.logs import fields
from lvsmon.model.failover import FailoverGroup

log = logging.getLogger("lvsmon.ha")

RESTART_DELAY = 1.0
MAX_MESSAGE = 1 << 20


def release_addresses(groups: Sequence[FailoverGroup]) -> None:
    """Remove every address of `groups` from this namespace's interfaces: left by a VRRP
    process that died without handing over, they would still answer ARP."""
    from lvsmon.ha.handover import held_addresses
    from lvsmon.ha.links import NetlinkLinks

    try:
        links = NetlinkLinks()
    except OSError as exc:
        log.error("cannot remove the failover addresses", extra=fields(error=str(exc)))
        return
    try:
        for group in groups:
            links.remove(group.addresses)
        links.remove(held_addresses(groups))  # kept on lo by a drain that did not finish
    finally:
        links.close()


class HAProcess:
    def __init__(
        self,
        groups: Sequence[FailoverGroup],
        *,
        log_level: str = "warning",
        script_user: str = "",
        command_prefix: Sequence[str] = (),
        on_status: Callable[[tuple[GroupStatus, ...]], None] | None = None,
    ):
        """`command_prefix` runs the child under e.g. `ip netns exec NS` (tests, bench)."""
        self._groups = tuple(groups)
        self._log_level = log_level
        self._script_user = script_user  # notify hooks run as this user ("": the child's)
        self._prefix = tuple(command_prefix)
        self._on_status = on_status
        self._status: dict[str, GroupStatus] = {}
        self._health: dict[str, tuple[int, int]] | None = None
        self._chan: socket.socket | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._watch: asyncio.Task[None] | None = None
        self._stopping = False
        self.restarts = 0

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    async def start(self) -> None:
        await self._spawn()
        self._watch = asyncio.ensure_future(self._watchdog())

    async def _spawn(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        argv = [
            *self._prefix,
            sys.executable,
            "-m",
            "lvsmon.ha.child",
            "--fd",
            str(theirs.fileno()),
            "--log-level",
            self._log_level,
            *(["--script-user", self._script_user] if self._script_user else []),
        ]
        try:
            self._proc = await asyncio.create_subprocess_exec(*argv, pass_fds=(theirs.fileno(),))
        finally:
            theirs.close()
        ours.setblocking(False)
        self._chan = ours
        asyncio.get_running_loop().add_reader(ours.fileno(), self._readable)
        self._send(("configure", self._groups))
        if self._health is not None:
            self._send(("health", self._health))

    async def _watchdog(self) -> None:
        while True:
            assert self._proc is not None
            code = await self._proc.wait()
            self._close_chan()
            if self._stopping:
                return
            self.restarts += 1
            log.error(
                "VRRP process exited; restarting", extra=fields(exit=code, delay=RESTART_DELAY)
            )
            self._orphaned()
            await asyncio.sleep(RESTART_DELAY)
            if self._stopping:
                return
            await self._spawn()

    def _orphaned(self) -> None:
        """The child died without handing over: nothing answers for its addresses now.
        Remove them at once (the restarted child would, as backup, a second later) so
        the peer that takes over is the only one holding them, and stop reporting the
        dead child's role. Not possible across a namespace prefix (tests, bench)."""
        self._status = {
            name: dataclasses.replace(s, state="initialize", priority=0)
            for name, s in self._status.items()
        }
        if self._on_status is not None:
            self._on_status(tuple(self._status.values()))
        if not self._prefix:
            release_addresses(self._groups)

    def status(self) -> tuple[GroupStatus, ...]:
        return tuple(self._status.values())

    def configure(self, groups: Sequence[FailoverGroup]) -> None:
        self._groups = tuple(groups)
        self._send(("configure", self._groups))

    def set_real_server_health(self, health: Mapping[str, tuple[int, int]]) -> None:
        self._health = dict(health)
        self._send(("health", self._health))

    async def stop(self, timeout: float | None = None) -> None:
        """Graceful: waits for every master's handover (bounded), then for the exit."""
        if self._proc is None:
            return
        self._stopping = True
        if timeout is None:
            timeout = max((g.effective_handover_timeout for g in self._groups), default=0) + 5
        self._send(("stop",))
        try:
            await asyncio.wait_for(self._proc.wait(), timeout)
        except TimeoutError:
            log.error("VRRP process did not stop; killing it", extra=fields(pid=self._proc.pid))
            with contextlib.suppress(ProcessLookupError):
                self._proc.kill()
            await self._proc.wait()
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        self._close_chan()

    # --- the channel ---

    def _send(self, message: tuple[Any, ...]) -> None:
        if self._chan is None:
            return
        try:
            self._chan.send(pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL))
        except OSError as exc:
            log.error("cannot reach the VRRP process", extra=fields(error=str(exc)))

    def _readable(self) -> None:
        while self._chan is not None:
            try:
                data = self._chan.recv(MAX_MESSAGE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                data = b""
            if not data:
                self._close_chan()
                return
            message = pickle.loads(data)
            if message[0] == "status":
                self._status = {s.name: s for s in message[1]}
                if self._on_status is not None:
                    self._on_status(message[1])

    def _close_chan(self) -> None:
        if self._chan is not None:
            with contextlib.suppress(ValueError, OSError):
                asyncio.get_running_loop().remove_reader(self._chan.fileno())
            self._chan.close()
            self._chan = None
