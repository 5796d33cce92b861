"""The data plane seam: the only place lvsmon's core meets a forwarding engine.

Each implementation (`proxy`, the embedded userspace L4 default; `ipvs`, the
kernel's table over generic netlink) takes the operations computed by
`lvsmon.reconcile` and reports what it holds, with counters, as a `Snapshot`;
each declares itself as a `Plane` (lvsmon.dataplane.registry lists them). The
optional abilities a plane may have beyond the table are the runtime-checkable
protocols at the end (the daemon asks with isinstance).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from lvsmon.model import (
    Config,
    DaemonSettings,
    DestKey,
    ServiceKey,
    SyncDaemon,
    SyncState,
    VirtualServer,
)
from lvsmon.model.capabilities import Capabilities
from lvsmon.reconcile import Op


@dataclass(frozen=True, slots=True)
class Counters:
    """Monotonic counters since the entry was created (IPVS stats64 semantics).

    Packet counts are None where the data plane cannot see packets (proxy)."""

    connections: int = 0
    in_bytes: int = 0
    out_bytes: int = 0
    in_packets: int | None = None
    out_packets: int | None = None


@dataclass(frozen=True, slots=True)
class DestStats:
    key: DestKey
    weight: int  # as programmed
    active: int
    inactive: int
    persistent: int
    counters: Counters
    # connects refused or timed out (TCP), ports unreachable (UDP); None: the data plane
    # cannot see them (IPVS forwards packets, it makes no connections of its own)
    connect_failures: int | None = None


@dataclass(frozen=True, slots=True)
class ServiceStats:
    service: VirtualServer  # as programmed, real servers in data-plane list order
    counters: Counters
    dests: tuple[DestStats, ...] = ()


@dataclass(frozen=True, slots=True)
class Snapshot:
    services: tuple[ServiceStats, ...] = field(default_factory=tuple)

    def table(self) -> dict[ServiceKey, VirtualServer]:
        return {s.service.key: s.service for s in self.services}

    def in_use(self, service: ServiceKey, dest: DestKey) -> int:
        for s in self.services:
            if s.service.key == service:
                for d in s.dests:
                    if d.key == dest:
                        return d.active + d.inactive
        return 0


def snapshot_of(table: Mapping[ServiceKey, VirtualServer]) -> Snapshot:
    """A snapshot with zero counters: what a table would look like once programmed."""
    return Snapshot(
        tuple(
            ServiceStats(
                vs,
                Counters(),
                tuple(DestStats(rs.key, rs.weight, 0, 0, 0, Counters()) for rs in vs.real_servers),
            )
            for vs in table.values()
        )
    )


class DataPlane(Protocol):
    name: str

    async def start(self) -> None:
        """Acquire resources (sockets, netlink); called once before the first apply."""

    async def apply(self, ops: Sequence[Op]) -> None:
        """Apply reconcile operations in order. Raises DataPlaneError naming the op."""

    def snapshot(self) -> Snapshot:
        """The programmed table with counters, read in one pass (scrape time)."""

    async def stop(self, grace: float) -> None:
        """Stop accepting; let connections finish for up to `grace` seconds; release."""


class DataPlaneError(Exception):
    """An operation the data plane could not carry out; the message names it."""


@dataclass(frozen=True, slots=True)
class Plane:
    """A data plane's one declaration: lvsmon.dataplane.registry lists them."""

    name: str
    summary: str  # one phrase for docs/dataplanes.md
    static_capabilities: Capabilities  # what the plane can do on any host
    factory: Callable[[DaemonSettings], DataPlane]
    # narrows the static capabilities to this host (ipvs: the kernel's scheduler modules)
    probe: Callable[[Capabilities], Capabilities] | None = None

    def capabilities(self) -> Capabilities:
        caps = self.static_capabilities
        return self.probe(caps) if self.probe is not None else caps


@runtime_checkable
class Versioned(Protocol):
    """A data plane whose `generation` changes whenever its table may have changed (its
    own applies, or a difference any snapshot read): lets the periodic sync rest.
    `read_at` (time.monotonic) is its last full read: a scrape's read that finds the
    generation unchanged re-confirms the table as well as a resync would."""

    generation: int
    read_at: float


@runtime_checkable
class Configurable(Protocol):
    """A data plane with settings beyond the table (ipvs: sysctls, sync daemon, adoption)."""

    async def configure(self, config: Config) -> None: ...


@runtime_checkable
class SyncDaemonControl(Protocol):
    """A data plane with IPVS's connection-sync daemon (ipvs)."""

    async def set_sync_daemon(self, want: SyncDaemon) -> None: ...

    def sync_daemons(self) -> dict[SyncState, SyncDaemon]: ...
