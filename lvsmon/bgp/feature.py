"""BGP as one feature of the daemon: what lvsmon.daemon.Director calls, nothing more.

configure(config)   on start and reload: an announcer exists while [bgp] does
tick(config, ...)   after every sync: verdicts from the table just programmed
leave(sync)         SIGTERM / lvsmon drain: less preferred, wait, withdraw
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Collection
from typing import Any

from lvsmon.bgp.announcer import Announcer, BgpStatus, Phase, status_rows, summary_of
from lvsmon.bgp.fingerprint import fingerprint
from lvsmon.bgp.plan import RoutingDaemon
from lvsmon.dataplane.base import Snapshot
from lvsmon.logs import fields
from lvsmon.model import Config, DestKey, ServiceKey
from lvsmon.model.bgp import BgpSettings
from lvsmon.serving import by_address, can_serve, facts_of

log = logging.getLogger("lvsmon.bgp")

Down = Collection[tuple[ServiceKey, DestKey]]


def routing_daemon(settings: BgpSettings) -> RoutingDaemon:
    """The seam: `bgp.routing_daemon` names the implementation (BIRD 2 today)."""
    from lvsmon.bgp.bird import Bird

    return Bird(settings)


class BgpFeature:
    def __init__(self) -> None:
        self.announcer: Announcer | None = None
        self._fingerprints: dict[str, int] = {}  # from the last tick's snapshot

    async def configure(self, config: Config) -> None:
        settings = config.bgp
        if settings is None:
            if self.announcer is not None:  # [bgp] removed on reload: withdraw everything
                await self.announcer.withdraw()
                self.announcer = None
            return
        if self.announcer is None:
            self.announcer = Announcer(settings, routing_daemon(settings))
            await self.announcer.start()
        else:
            await self.announcer.configure(settings)

    async def tick(self, config: Config, snapshot: Snapshot, down: Down) -> None:
        a = self.announcer
        if a is None or config.bgp is None:
            self._fingerprints = {}
            return
        self._fingerprints = fingerprints(config, snapshot)
        programmed = {
            s.service.key: [(d.key, d.weight) for d in s.dests] for s in snapshot.services
        }
        drained = a.phase is Phase.WITHDRAWN
        verdicts = [
            (
                vs,
                can_serve(
                    facts_of(vs, programmed.get(vs.key), down, drained=drained),
                    config.bgp.healthy_threshold,
                ),
            )
            for vs in config.virtual_servers
            if vs.announce
        ]
        await a.update(by_address(verdicts))

    async def leave(self, keep_serving: Callable[[], Awaitable[None]]) -> None:
        """Drain: routes less preferred for `bgp.drain.period` (connections keep being
        served: `keep_serving` runs every second), then withdraw."""
        a = self.announcer
        if a is None:
            return
        if a.announced:
            await a.drain()
            until = time.monotonic() + a.settings.drain.period
            while (left := until - time.monotonic()) > 0:
                await asyncio.sleep(min(1.0, left))
                await keep_serving()
        await a.withdraw()
        log.warning("withdrawn: drain complete", extra=fields(routing_daemon=a.daemon.name))

    async def withdraw(self) -> None:
        """At once, no drain (a start that failed)."""
        if self.announcer is not None:
            await self.announcer.withdraw()

    def rows(self) -> list[dict[str, Any]] | None:
        """The status page's BGP section (/status.json "bgp"); None without [bgp]."""
        a = self.announcer
        return status_rows(a.status(), a.settings) if a is not None else None

    def summary(self) -> dict[str, Any] | None:
        """The announcer's phase, sessions and errors for /status; None without [bgp]."""
        a = self.announcer
        return summary_of(a.status(), a.settings).to_json() if a is not None else None

    def status(self) -> BgpStatus | None:
        return self.announcer.status() if self.announcer is not None else None

    def fingerprints(self) -> dict[str, int]:
        """Per announced virtual server, as of the last tick (for /metrics: no snapshot)."""
        return self._fingerprints


def fingerprints(config: Config, snapshot: Snapshot) -> dict[str, int]:
    """Per announced virtual server, of the table as programmed (list order kept)."""
    announced = {vs.key: vs.name for vs in config.virtual_servers if vs.announce}
    return {
        announced[s.service.key]: fingerprint(s.service)
        for s in snapshot.services
        if s.service.key in announced
    }
