"""The proxy's UDP relay: one socket per virtual server, one flow per client
address, each flow with its own connected socket to its real server.

Plain non-blocking sockets with loop.add_reader: no transports or coroutines
on the datagram path. UDP flows count as inactive connections (IPVS) and end
after `timeouts.udp` without traffic in either direction.
"""

from __future__ import annotations

import logging
import socket
from typing import Any

from lvsmon.dataplane.proxy_net import bind_socket, family_of, parse_address
from lvsmon.dataplane.proxy_state import DestState, Runtime, ServiceState, Template

log = logging.getLogger("lvsmon.proxy")

MAX_DATAGRAM = 65535
# Datagrams handled per readiness callback, so one busy socket cannot starve the loop.
BATCH = 64

Address = tuple[Any, ...]  # (host, port) or (host, port, flowinfo, scope_id)


class UdpListener:
    """The virtual server's socket: new client addresses become flows."""

    def __init__(self, rt: Runtime, svc: ServiceState) -> None:
        self.rt = rt
        self.svc = svc
        self.sock = bind_socket(svc.vs.name, svc.address, svc.vs.port, socket.SOCK_DGRAM)
        self.flows: dict[Address, UdpFlow] = {}
        self.draining = False  # deleted: existing flows go on, no new ones
        self.closed = False
        rt.loop.add_reader(self.sock.fileno(), self._readable)

    def adopt(self, svc: ServiceState) -> None:
        """Re-added while draining: new flows belong to the new service."""
        self.svc = svc
        self.draining = False

    def _readable(self) -> None:
        sock = self.sock
        flows = self.flows
        for _ in range(BATCH):
            try:
                data, addr = sock.recvfrom(MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.debug("%s: receive failed: %r", self.svc.key, exc)
                return
            flow = flows.get(addr)
            if flow is None:
                if self.draining:
                    continue
                flow = self._new_flow(addr)
                if flow is None:
                    continue
            flow.send(data)

    def _new_flow(self, addr: Address) -> UdpFlow | None:
        svc = self.svc
        now = self.rt.clock()
        src = parse_address(addr[0])
        dest, tmpl = svc.pick(src, addr[1], now)
        tried: list[DestState] = []
        while dest is not None:
            try:
                upstream = _connected_socket(dest)
            except OSError as exc:
                dest.connect_failures += 1
                log.debug("%s: real server %s unreachable: %r", svc.key, dest.label, exc)
                tried.append(dest)
                dest = svc.schedule(src, addr[1], now, tried)
                continue
            flow = UdpFlow(self, addr, dest, tmpl, upstream, now)
            self.flows[addr] = flow
            return flow
        log.debug("%s: no real server available for %s", svc.key, addr[0])
        if tmpl is not None:
            tmpl.release()
        return None

    def reply(self, data: bytes, addr: Address) -> bool:
        try:
            self.sock.sendto(data, addr)
        except OSError as exc:  # full buffer or unroutable: dropped, as UDP may
            log.debug("%s: reply to %s dropped: %r", self.svc.key, addr[0], exc)
            return False
        return True

    def expire(self, now: float, since: float) -> None:
        for flow in list(self.flows.values()):
            flow.check_idle(now, since)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for flow in list(self.flows.values()):
            flow.close()
        self.rt.loop.remove_reader(self.sock.fileno())
        self.sock.close()


def _connected_socket(dest: DestState) -> socket.socket:
    sock = socket.socket(family_of(dest.address), socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        sock.connect((dest.host, dest.port))
    except BaseException:
        sock.close()
        raise
    return sock


class UdpFlow:
    """One client address of a UDP virtual server and its real server."""

    __slots__ = (
        "client",
        "closed",
        "dest",
        "last_seen",
        "listener",
        "seen",
        "sock",
        "svc",
        "tmpl",
    )

    def __init__(
        self,
        listener: UdpListener,
        client: Address,
        dest: DestState,
        tmpl: Template | None,
        sock: socket.socket,
        now: float,
    ) -> None:
        self.listener = listener
        self.svc = listener.svc
        self.client = client
        self.dest = dest
        self.tmpl = tmpl
        self.sock = sock
        self.seen = False
        self.last_seen = now
        self.closed = False
        dest.open_inactive()
        dest.connections += 1
        self.svc.connections += 1
        listener.rt.loop.add_reader(sock.fileno(), self._readable)

    def send(self, data: bytes) -> None:
        try:
            self.sock.send(data)
        except (BlockingIOError, InterruptedError):
            return  # dropped, as UDP may
        except OSError as exc:
            self._failed(exc)
            return
        n = len(data)
        self.dest.in_bytes += n
        self.svc.in_bytes += n
        self.seen = True

    def _readable(self) -> None:
        sock = self.sock
        for _ in range(BATCH):
            try:
                data = sock.recv(MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self._failed(exc)
                return
            if self.listener.reply(data, self.client):
                n = len(data)
                self.dest.out_bytes += n
                self.svc.out_bytes += n
                self.seen = True

    def _failed(self, exc: OSError) -> None:
        # ECONNREFUSED: the real server's port is closed (ICMP port unreachable).
        # End the flow so the client's next datagram is scheduled afresh.
        self.dest.connect_failures += 1
        log.debug("%s: real server %s failed: %r", self.svc.key, self.dest.label, exc)
        self.close()

    def check_idle(self, now: float, since: float) -> None:
        """Close if idle too long; `seen` means traffic after the sweep at `since`."""
        if self.seen:
            self.seen = False
            self.last_seen = max(self.last_seen, since)
        elif now - self.last_seen >= self.listener.rt.timeouts.udp:
            self.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        listener = self.listener
        if listener.flows.get(self.client) is self:
            del listener.flows[self.client]
        listener.rt.loop.remove_reader(self.sock.fileno())
        self.sock.close()
        self.dest.close_inactive()
        if self.tmpl is not None:
            self.tmpl.release()
