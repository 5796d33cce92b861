"""State of the proxy data plane that is not sockets: destinations, scheduling,
persistence templates and IPVS-style connection accounting.

Pure apart from the clock value passed in; the relays in `proxy_tcp` and
`proxy_udp` drive it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import socket
from collections import deque
from collections.abc import Callable, Sequence
from typing import Protocol, cast

from lvsmon import schedulers
from lvsmon.dataplane.base import Counters, DataPlaneError, DestStats, ServiceStats
from lvsmon.model import DestKey, Forwarding, IPAddress, RealServer, Timeouts, VirtualServer
from lvsmon.schedulers import Dest, Flow, Scheduler

log = logging.getLogger("lvsmon.proxy")

_new_tuple = tuple.__new__


class DestState(Dest):
    """A real server as the proxy runs it: scheduler view plus counters."""

    __slots__ = (
        "connect_failures",
        "connections",
        "family",
        "host",
        "in_bytes",
        "out_bytes",
        "real_server",
        "removed",
        "sockaddr",
    )

    def __init__(self, rs: RealServer) -> None:
        super().__init__(rs.address, rs.port, rs.weight, rs.upper_threshold, rs.lower_threshold)
        self.real_server = rs
        self.host = str(rs.address)
        self.family = socket.AF_INET6 if rs.address.version == 6 else socket.AF_INET
        self.sockaddr = (self.host, rs.port)  # for connect(), built once
        self.connections = 0
        self.in_bytes = 0
        self.out_bytes = 0
        self.connect_failures = 0
        self.removed = False

    def edit(self, rs: RealServer) -> None:
        self.real_server = rs
        self.set_weight(rs.weight)
        self.upper_threshold = rs.upper_threshold
        self.lower_threshold = rs.lower_threshold
        self.refresh_overload()

    # Accounting, named after the IPVS transitions. Opening/closing an entry
    # re-evaluates the upper/lower threshold as ip_vs_bind_dest/unbind_dest do.
    def open_inactive(self) -> None:
        self.inactive += 1
        self.refresh_overload()

    def close_inactive(self) -> None:
        self.inactive -= 1
        self.refresh_overload()

    # A TCP connection's state changes move it between the two counts and leave
    # the thresholds alone, as IPVS's state transitions do.
    def establish(self) -> None:
        """The real server accepted: the connection counts active from now on."""
        self.inactive -= 1
        self.active += 1
        self.connections += 1

    def close_active(self) -> None:
        """The first FIN or close on either side of an established connection."""
        self.active -= 1
        self.inactive += 1

    def stats(self) -> DestStats:
        return DestStats(
            key=self.real_server.key,
            weight=self.weight,
            active=self.active,
            inactive=self.inactive,
            persistent=self.persistent,
            counters=Counters(self.connections, self.in_bytes, self.out_bytes),
            connect_failures=self.connect_failures,
        )


class Template:
    """An IPVS persistence template: client network -> real server."""

    __slots__ = ("controls", "dest", "expires", "key", "timeout")

    def __init__(self, key: int, dest: DestState, now: float, timeout: float) -> None:
        self.key = key
        self.dest = dest
        self.timeout = timeout
        self.expires = now + timeout
        self.controls = 0  # connections it still controls (ip_vs_conn.n_control)

    def release(self) -> None:
        self.controls -= 1


def check_supported(vs: VirtualServer) -> None:
    if vs.fwmark:
        raise DataPlaneError(
            f"virtual server {vs.name!r} ({vs.key}): the proxy data plane cannot "
            'balance firewall-mark services; use dataplane = "ipvs"'
        )
    if vs.protocol.value not in ("tcp", "udp"):
        raise DataPlaneError(
            f"virtual server {vs.name!r} ({vs.key}): the proxy data plane supports "
            f"tcp and udp, not {vs.protocol.value}"
        )
    if vs.address is None:
        raise DataPlaneError(f"virtual server {vs.name!r} ({vs.key}) has no address")


def create_scheduler(vs: VirtualServer) -> Scheduler:
    try:
        return schedulers.create(vs.scheduler, vs.scheduler_flags)
    except ValueError as exc:
        raise DataPlaneError(f"virtual server {vs.name!r} ({vs.key}): {exc}") from None


class ServiceState:
    """One virtual server: its destinations (kernel order, newest first),
    scheduler, persistence templates and counters."""

    def __init__(self, vs: VirtualServer) -> None:
        check_supported(vs)
        self.vs = vs.attributes()
        self.key = vs.key
        self.address = cast(IPAddress, vs.address)
        self.protocol = vs.protocol.value
        self.scheduler = create_scheduler(vs)
        self.dests: list[DestState] = []
        # deleted destinations that still have connections, revived by a re-add
        # like the kernel's destination trash
        self.trash: dict[DestKey, DestState] = {}
        self.templates: dict[int, Template] = {}
        self.connections = 0
        self.in_bytes = 0
        self.out_bytes = 0
        self._shift = 0
        self._set_persistence_mask()

    # -- programming ---------------------------------------------------------

    def edit(self, vs: VirtualServer) -> None:
        check_supported(vs)
        old = self.vs
        if (vs.scheduler, vs.scheduler_flags) != (old.scheduler, old.scheduler_flags):
            self.scheduler = create_scheduler(vs)
            self.scheduler.update(self.dests)
        self.vs = vs.attributes()
        self._set_persistence_mask()

    def _set_persistence_mask(self) -> None:
        bits = self.address.max_prefixlen
        self._shift = bits - max(0, min(self.vs.persistence_netmask, bits))

    def find(self, key: DestKey) -> DestState | None:
        for dest in self.dests:
            if dest.real_server.key == key:
                return dest
        return None

    def add_dest(self, rs: RealServer) -> None:
        if rs.forwarding is not Forwarding.NAT:
            raise DataPlaneError(
                f"real server {rs.label}: the proxy data plane only forwards like NAT, "
                f"not {rs.forwarding.value}"
            )
        if self.find(rs.key) is not None:
            raise DataPlaneError(f"real server {rs.label} already exists in {self.key}")
        dest = self.trash.pop(rs.key, None)
        if dest is None:
            dest = DestState(rs)
        else:
            dest.removed = False
            dest.edit(rs)
        self.dests.insert(0, dest)  # IPVS adds at the list head
        self.scheduler.update(self.dests)

    def edit_dest(self, rs: RealServer) -> None:
        if rs.forwarding is not Forwarding.NAT:
            raise DataPlaneError(
                f"real server {rs.label}: the proxy data plane only forwards like NAT, "
                f"not {rs.forwarding.value}"
            )
        dest = self._require(rs.key)
        dest.edit(rs)
        self.scheduler.update(self.dests)

    def delete_dest(self, key: DestKey) -> None:
        dest = self._require(key)
        self.dests.remove(dest)
        dest.removed = True
        for tkey, tmpl in list(self.templates.items()):
            if tmpl.dest is dest:
                self._drop_template(tkey, tmpl)
        if dest.total_connections:
            self.trash[key] = dest  # its connections finish; counts stay right on re-add
        self.scheduler.update(self.dests)

    def _require(self, key: DestKey) -> DestState:
        dest = self.find(key)
        if dest is None:
            raise DataPlaneError(f"real server {key} not found in {self.key}")
        return dest

    # -- scheduling ----------------------------------------------------------

    def pick(
        self, src: IPAddress, src_port: int, now: float
    ) -> tuple[DestState | None, Template | None]:
        """The destination of a new connection and the template that pins it."""
        timeout = self.vs.persistence_timeout
        if timeout <= 0:
            return self.schedule(src, src_port, now, ()), None
        key = int(src) >> self._shift
        tmpl = self.templates.get(key)
        if tmpl is not None:
            # a quiesced (weight 0) or overloaded destination keeps its clients
            # (expire_quiescent_template = 0); a deleted one was dropped already
            tmpl.timeout = timeout
            tmpl.expires = now + timeout
            tmpl.controls += 1
            return tmpl.dest, tmpl
        dest = self.schedule(src, src_port, now, ())
        if dest is None:
            return None, None
        tmpl = Template(key, dest, now, timeout)
        tmpl.controls = 1
        self.templates[key] = tmpl
        dest.persistent += 1
        return dest, tmpl

    def schedule(
        self, src: IPAddress, src_port: int, now: float, tried: Sequence[DestState]
    ) -> DestState | None:
        """Ask the scheduler, hiding destinations this connection already failed on.

        Hiding is done by flagging them overloaded for the duration of the call,
        which every scheduler honours, so it works for any algorithm."""
        # Flow(...) without NamedTuple's Python-level __new__: once per connection
        flow: Flow = _new_tuple(Flow, (src, src_port, self.address, self.vs.port, self.protocol))
        if not tried:  # the dests are DestStates; no cast(), it is a call at runtime
            return self.scheduler.schedule(self.dests, flow, now)  # type: ignore[return-value]
        saved = [(dest, dest.overloaded) for dest in tried]
        for dest, _ in saved:
            dest.overloaded = True
        try:
            chosen = cast(DestState | None, self.scheduler.schedule(self.dests, flow, now))
        finally:
            for dest, flag in saved:
                dest.overloaded = flag
        return None if chosen in tried else chosen

    # -- expiry --------------------------------------------------------------

    def expire(self, now: float) -> None:
        for key, tmpl in list(self.templates.items()):
            if now < tmpl.expires:
                continue
            if tmpl.controls > 0:  # still controls connections: re-arm, as IPVS does
                tmpl.expires = now + tmpl.timeout
            else:
                self._drop_template(key, tmpl)
        for dkey, dest in list(self.trash.items()):
            if not dest.total_connections:
                del self.trash[dkey]

    def _drop_template(self, key: int, tmpl: Template) -> None:
        del self.templates[key]
        tmpl.dest.persistent -= 1

    def clear_templates(self) -> None:
        for key, tmpl in list(self.templates.items()):
            self._drop_template(key, tmpl)

    # -- reporting -----------------------------------------------------------

    def stats(self) -> ServiceStats:
        reals = tuple(d.real_server for d in self.dests)
        return ServiceStats(
            service=dataclasses.replace(self.vs, real_servers=reals),
            counters=Counters(self.connections, self.in_bytes, self.out_bytes),
            dests=tuple(d.stats() for d in self.dests),
        )


class Lingering:
    """Closed TCP connections that IPVS still counts as inactive for tcp_fin.

    tcp_fin is fixed per data plane and the clock is monotonic, so expiry times
    arrive in order and a FIFO is enough (no timer per connection)."""

    def __init__(self, timeouts: Timeouts, clock: Callable[[], float]) -> None:
        self._fin = timeouts.tcp_fin
        self._clock = clock
        self._queue: deque[tuple[float, DestState, Template | None]] = deque()

    def __len__(self) -> int:
        return len(self._queue)

    def add(self, dest: DestState, tmpl: Template | None) -> None:
        self._queue.append((self._clock() + self._fin, dest, tmpl))

    def expire(self, now: float) -> None:
        queue = self._queue
        while queue and queue[0][0] <= now:
            _, dest, tmpl = queue.popleft()
            dest.close_inactive()
            if tmpl is not None:
                tmpl.release()


class Connection(Protocol):
    """What the data plane needs of a live relay to sweep and stop it."""

    def check_idle(self, now: float, since: float) -> None: ...

    def reset(self) -> None: ...


class Runtime:
    """What every relay of one data plane shares: loop, clock, timeouts, registry."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        timeouts: Timeouts,
        connect_timeout: float,
        clock: Callable[[], float],
    ) -> None:
        self.loop = loop
        self.timeouts = timeouts
        self.connect_timeout = connect_timeout
        self.clock = clock
        self.lingering = Lingering(timeouts, clock)
        self.conns: set[Connection] = set()
        self._drained: asyncio.Future[None] | None = None

    def forget(self, conn: Connection) -> None:
        conns = self.conns
        conns.discard(conn)
        if not conns and self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    async def drained(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for every connection to finish."""
        if not self.conns:
            return True
        self._drained = self.loop.create_future()
        try:
            async with asyncio.timeout(timeout):
                await self._drained
        except TimeoutError:
            return False
        finally:
            self._drained = None
        return True
