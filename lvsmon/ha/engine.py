"""The VRRP loop: every group of this director, their sockets, tracking, status.

Runs in its own process (see process.py) so adverts keep their cadence
whatever the daemon does. One raw socket per (interface, family), shared by
the groups on it and dispatched by VRID. Interfaces are probed every
`LINK_POLL` (an ioctl each: cheap) for tracking.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence

from lvsmon.ha import machine, tracking
from lvsmon.ha.announce import Announcer
from lvsmon.ha.group import GroupRuntime
from lvsmon.ha.hooks import Serial
from lvsmon.ha.links import Links, NetlinkLinks, NoAddress
from lvsmon.ha.netio import AdvertSocket
from lvsmon.ha.status import GroupStatus
from lvsmon.logs import fields
from lvsmon.model.failover import FailoverGroup

log = logging.getLogger("lvsmon.ha")

LINK_POLL = 0.05
STATUS_EVERY = 0.25  # counters are pushed at most this often; state changes at once
HOOK_DRAIN = 5.0
# Adverts read per wake-up. A full batch means a flood (a peer sends a few per second):
# reading then pauses FLOOD_PAUSE, which bounds the CPU a flood can take (the kernel
# drops the excess) and lets the real-time process block, so RLIMIT_RTTIME never fires.
READ_BATCH = 64
FLOOD_PAUSE = 0.002

SocketKey = tuple[str, int]
Publish = Callable[[tuple[GroupStatus, ...]], None]


class Engine:
    def __init__(self, publish: Publish, links: Links | None = None):
        self._publish = publish
        self._links = links or NetlinkLinks()
        self._announcer = Announcer(self._links)
        self._side = Serial()
        self._probe = tracking.LinkProbe()
        self._loop = asyncio.get_running_loop()
        self._configs: dict[str, FailoverGroup] = {}
        self._groups: dict[str, GroupRuntime] = {}
        self._sockets: dict[SocketKey, AdvertSocket] = {}
        self._health: tracking.Health = {}
        self._tracked: dict[str, tuple[int, bool]] = {}
        self._stopping = False
        self._dirty = False
        self._pushed = 0.0
        self._waiting_logged: set[str] = set()

    # --- commands from the parent ---

    def configure(self, groups: Sequence[FailoverGroup]) -> None:
        new = {g.name: g for g in groups}
        for name, runtime in list(self._groups.items()):
            cfg = new.get(name)
            if cfg is None or _identity(cfg) != _identity(runtime.cfg):
                log.warning("failover group removed or redefined", extra=fields(group=name))
                runtime.abort()
                del self._groups[name]
        self._configs = new
        for name, cfg in new.items():
            current = self._groups.get(name)
            if current is not None and cfg != current.cfg:
                current.reconfigure(cfg, self._evaluate(cfg)[0])
        self._close_unused_sockets()
        self._start_waiting()
        self._push()

    def set_health(self, health: tracking.Health) -> None:
        self._health = dict(health)
        self._track()

    def shutdown(self) -> None:
        """Graceful: masters hand over (priority 0, keep addresses until relieved)."""
        if self._stopping:
            return
        self._stopping = True
        log.warning("VRRP stopping", extra=fields(groups=len(self._groups)))
        for runtime in list(self._groups.values()):
            runtime.handle(machine.Shutdown())

    # --- the loop ---

    async def run(self) -> None:
        """Until shutdown() and every group has finished its handover."""
        poll = asyncio.ensure_future(self._poll_forever())
        try:
            while not (self._stopping and all(g.done.is_set() for g in self._groups.values())):
                await asyncio.sleep(LINK_POLL)
        finally:
            poll.cancel()
            await self._side.drain(HOOK_DRAIN)
            self._push()
            for group in self._groups.values():
                group.close()
            for key in list(self._sockets):
                self._close_socket(key)
            self._announcer.close()
            self._probe.close()
            if isinstance(self._links, NetlinkLinks):
                self._links.close()

    async def _poll_forever(self) -> None:
        while True:
            if not self._stopping:
                self._start_waiting()
                self._track()
            if self._dirty and time.monotonic() - self._pushed >= STATUS_EVERY:
                self._push()
            await asyncio.sleep(LINK_POLL)

    def _start_waiting(self) -> None:
        """Start groups whose interface has a source address (it may come later)."""
        if self._stopping:
            return
        for name, cfg in self._configs.items():
            if name in self._groups:
                continue
            try:
                sock = self._socket(cfg)
            except (NoAddress, OSError) as exc:
                if name not in self._waiting_logged:
                    self._waiting_logged.add(name)
                    log.error("failover group waiting", extra=fields(group=name, error=str(exc)))
                continue
            self._waiting_logged.discard(name)
            runtime = GroupRuntime(
                cfg, sock, self._links, self._announcer, self._side, self._changed
            )
            self._groups[name] = runtime
            with contextlib.suppress(OSError):  # an interface may be missing: built later
                self._announcer.frames(cfg.addresses)
            priority, fault = self._tracked[name] = self._evaluate(cfg)
            runtime.handle(machine.Track(priority, fault))
            runtime.handle(machine.Startup())

    def _evaluate(self, cfg: FailoverGroup) -> tuple[int, bool]:
        down = self._probe.down(tracking.tracked_interfaces(cfg))
        return tracking.evaluate(cfg, down, self._health)

    def _track(self) -> None:
        for name, runtime in self._groups.items():
            verdict = self._evaluate(runtime.cfg)
            if verdict != self._tracked.get(name):
                self._tracked[name] = verdict
                log.warning(
                    "tracking changed",
                    extra=fields(group=name, priority=verdict[0], fault=verdict[1]),
                )
                runtime.handle(machine.Track(*verdict))

    # --- sockets ---

    def _socket(self, cfg: FailoverGroup) -> AdvertSocket:
        key = (cfg.interface, cfg.family)
        sock = self._sockets.get(key)
        if sock is None:
            vips = [a.address for g in self._configs.values() for a in g.addresses]
            source = self._links.primary(cfg.interface, cfg.family, vips)
            sock = AdvertSocket(cfg.interface, cfg.family, source)
            self._sockets[key] = sock
            self._loop.add_reader(sock.fileno(), self._readable, key)
        return sock

    def _readable(self, key: SocketKey) -> None:
        sock = self._sockets.get(key)
        if sock is None:
            return
        here = [g for g in self._groups.values() if (g.cfg.interface, g.cfg.family) == key]
        seen = sock.overflows
        grams, more = sock.receive(READ_BATCH)
        if sock.overflows > seen:  # dropped unread: whose they were is unknown, so each group's
            for g in here:
                g.reject("overflow", f"{sock.overflows - seen} dropped", sock.overflows - seen)
        for gram in grams:
            vrid = gram.payload[1] if len(gram.payload) >= 2 else None
            match = [g for g in here if g.cfg.vrid == vrid]
            if match:
                match[0].on_datagram(gram)
                continue
            for g in here:  # nobody's: each group on this link saw a stray advert
                g.reject("truncated" if vrid is None else "vrid", f"vrid {vrid} from {gram.source}")
        if more:  # a flood: rest a moment so timers run and the process blocks (RLIMIT_RTTIME)
            self._loop.remove_reader(sock.fileno())
            self._loop.call_later(FLOOD_PAUSE, self._resume, key, sock)

    def _resume(self, key: SocketKey, sock: AdvertSocket) -> None:
        if self._sockets.get(key) is sock:
            self._loop.add_reader(sock.fileno(), self._readable, key)

    def _close_socket(self, key: SocketKey) -> None:
        sock = self._sockets.pop(key)
        self._loop.remove_reader(sock.fileno())
        sock.close()

    def _close_unused_sockets(self) -> None:
        used = {(g.interface, g.family) for g in self._configs.values()}
        for key in [k for k in self._sockets if k not in used]:
            self._close_socket(key)

    # --- status ---

    def _changed(self, urgent: bool) -> None:
        self._dirty = True
        if urgent:
            self._push()

    def _push(self) -> None:
        self._dirty = False
        self._pushed = time.monotonic()
        self._publish(self.status())

    def status(self) -> tuple[GroupStatus, ...]:
        return tuple(g.status() for g in self._groups.values())


def _identity(cfg: FailoverGroup) -> tuple[object, ...]:
    """What cannot change under a running group: a change restarts it."""
    return (cfg.vrid, cfg.interface, cfg.family, cfg.unicast_peers, cfg.auth_key)
