"""The embedded userspace data plane: an L4 proxy with IPVS semantics.

One listener per virtual server (TCP and UDP, NAT-like forwarding only),
scheduling through `lvsmon.schedulers`, IPVS persistence templates and
active/inactive accounting. Runs on whatever asyncio loop is running it
(uvloop in the daemon), on plain non-blocking sockets: TCP listeners
(`proxy_accept`) and relays (`proxy_tcp`) share one epoll instance the loop
watches (`proxy_poller`), UDP sockets are loop readers (`proxy_udp`). The
socket-free state, scheduling and accounting included, is in `proxy_state`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence

from lvsmon import schedulers
from lvsmon.dataplane.base import DataPlaneError, Plane, Snapshot
from lvsmon.dataplane.proxy_accept import TcpListener
from lvsmon.dataplane.proxy_poller import Poller
from lvsmon.dataplane.proxy_state import Runtime, ServiceState
from lvsmon.dataplane.proxy_udp import UdpListener
from lvsmon.model import DaemonSettings, ServiceKey, Timeouts, VirtualServer
from lvsmon.model.capabilities import Capabilities
from lvsmon.reconcile import (
    AddDest,
    AddService,
    DeleteDest,
    DeleteService,
    EditDest,
    EditService,
    Op,
)

log = logging.getLogger("lvsmon.proxy")


class ProxyDataPlane:
    """`DataPlane` implementation: non-blocking sockets relaying TCP and UDP."""

    name = "proxy"

    def __init__(
        self,
        timeouts: Timeouts = Timeouts(),  # noqa: B008 - frozen, shared safely
        *,
        connect_timeout: float = 3.0,
        clock: Callable[[], float] = time.monotonic,
        sweep_interval: float = 1.0,
    ) -> None:
        self._timeouts = timeouts
        self._connect_timeout = connect_timeout
        self._clock = clock
        self._sweep_interval = sweep_interval
        self._rt: Runtime | None = None
        self._poller: Poller | None = None  # every TCP socket, on one epoll
        self._services: dict[ServiceKey, ServiceState] = {}
        self._tcp: dict[ServiceKey, TcpListener] = {}
        self._udp: dict[ServiceKey, UdpListener] = {}
        # deleted UDP services whose flows still run: their socket carries the replies
        self._udp_draining: dict[ServiceKey, UdpListener] = {}
        self._sweeper: asyncio.TimerHandle | None = None
        self._last_sweep = 0.0

    # -- DataPlane -------------------------------------------------------------

    async def start(self) -> None:
        if self._rt is not None:
            return
        loop = asyncio.get_running_loop()
        self._rt = Runtime(loop, self._timeouts, self._connect_timeout, self._clock)
        self._poller = Poller(self._rt)
        self._last_sweep = self._clock()
        self._sweeper = loop.call_later(self._sweep_interval, self._sweep)
        log.debug("proxy data plane started on %s", type(loop).__module__)

    async def apply(self, ops: Sequence[Op]) -> None:
        await self.start()
        for op in ops:
            try:
                await self._apply(op)
            except DataPlaneError as exc:
                raise DataPlaneError(f"{op}: {exc}") from exc
            log.debug("applied: %s", op)

    def snapshot(self) -> Snapshot:
        return Snapshot(tuple(svc.stats() for svc in self._services.values()))

    async def stop(self, grace: float) -> None:
        rt = self._rt
        if rt is None:
            return
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for tcp in self._tcp.values():
            tcp.close()
        for listener in (*self._udp.values(), *self._udp_draining.values()):
            listener.close()  # UDP flows have nothing to finish
        self._tcp.clear()
        self._udp.clear()
        self._udp_draining.clear()
        self._services.clear()
        if not await rt.drained(grace):
            log.info("stop: resetting %d connections still open after %.1fs", len(rt.conns), grace)
            for conn in list(rt.conns):
                conn.reset()
            if not await rt.drained(5.0):
                log.warning("stop: %d connections did not close", len(rt.conns))
        if self._poller is not None:
            self._poller.close()
            self._poller = None
        self._rt = None

    # -- operations ------------------------------------------------------------

    async def _apply(self, op: Op) -> None:
        match op:
            case AddService(service):
                await self._add_service(service)
            case EditService(service):
                self._service(service.key).edit(service)
            case DeleteService(key):
                self._delete_service(key)
            case AddDest(key, dest):
                self._service(key).add_dest(dest)
            case EditDest(key, dest):
                self._service(key).edit_dest(dest)
            case DeleteDest(key, dest_key):
                self._service(key).delete_dest(dest_key)

    def _service(self, key: ServiceKey) -> ServiceState:
        try:
            return self._services[key]
        except KeyError:
            raise DataPlaneError(f"virtual server {key} does not exist") from None

    async def _add_service(self, vs: VirtualServer) -> None:
        key = vs.key
        if key in self._services:
            raise DataPlaneError(f"virtual server {key} already exists")
        svc = ServiceState(vs)
        rt = self._runtime()
        if svc.protocol == "tcp":
            assert self._poller is not None  # started with the runtime
            self._tcp[key] = TcpListener(self._poller, svc)
        else:
            listener = self._udp_draining.pop(key, None)
            if listener is None:
                listener = UdpListener(rt, svc)
            else:
                listener.adopt(svc)
            self._udp[key] = listener
        self._services[key] = svc

    def _delete_service(self, key: ServiceKey) -> None:
        self._service(key)
        del self._services[key]
        tcp = self._tcp.pop(key, None)
        if tcp is not None:
            tcp.close()  # accepted connections are left to finish
        listener = self._udp.pop(key, None)
        if listener is not None:
            if listener.flows:
                listener.draining = True
                self._udp_draining[key] = listener
            else:
                listener.close()

    def _runtime(self) -> Runtime:
        if self._rt is None:
            raise DataPlaneError("proxy data plane is not started")
        return self._rt

    # -- timers ----------------------------------------------------------------

    def _sweep(self) -> None:
        """Once per sweep interval: expire idle relays, lingering entries, templates."""
        rt = self._rt
        if rt is None:
            return
        try:
            now, since = rt.clock(), self._last_sweep
            self._last_sweep = now
            rt.lingering.expire(now)  # before templates: it releases their control
            for conn in list(rt.conns):
                conn.check_idle(now, since)
            for listener in (*self._udp.values(), *self._udp_draining.values()):
                listener.expire(now, since)
            for key, listener in list(self._udp_draining.items()):
                if not listener.flows:
                    listener.close()
                    del self._udp_draining[key]
            for svc in self._services.values():
                svc.expire(now)
        finally:
            self._sweeper = rt.loop.call_later(self._sweep_interval, self._sweep)


def _create(settings: DaemonSettings) -> ProxyDataPlane:
    return ProxyDataPlane(settings.timeouts)


PLANE = Plane(
    name="proxy",
    summary="embedded userspace L4 proxy (the default; runs anywhere, unprivileged)",
    static_capabilities=Capabilities(
        name="proxy",
        protocols=frozenset({"tcp", "udp"}),
        # a userspace proxy terminates the client connection: that is NAT
        forwarding=frozenset({"nat"}),
        fwmark=False,
        schedulers=schedulers.available(),
        why="the userspace proxy terminates connections (NAT only, no fwmark, no SCTP)",
        # only to listen on ports below 1024
        privileges=frozenset({"CAP_NET_BIND_SERVICE"}),
    ),
    factory=_create,
)
