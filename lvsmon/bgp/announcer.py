"""The BGP announcer: verdicts in, a routing daemon told what to announce.

Life cycle (driven by lvsmon.daemon):

    start()      withdraw whatever a previous lvsmon left in the fragment, THEN
                 create the liveness device: a routing daemon never sees the
                 device next to routes this process has not confirmed
    update()     every sync: the VIPs whose verdict is "serving", applied when
                 they change (BIRD diffs; sessions and other routes stay)
    drain()      routes made less preferred (MED / prepend / communities)
    withdraw()   nothing announced, then the device is deleted

A failed apply is retried on the next update; the last error is in status().
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from lvsmon.bgp.liveness import LivenessDevice, LivenessError
from lvsmon.bgp.plan import Plan, RoutingDaemon, RoutingDaemonError, Session, plan_of
from lvsmon.bgp.status import AnnouncerSummary
from lvsmon.logs import fields
from lvsmon.model import IPAddress
from lvsmon.model.bgp import BgpSettings
from lvsmon.serving import Verdict

log = logging.getLogger("lvsmon.bgp")

SESSION_POLL = 2.0


class Phase(StrEnum):
    ACTIVE = "active"  # announcing what can be served
    DRAINING = "draining"  # still announced, less preferred
    WITHDRAWN = "withdrawn"  # nothing announced (drained, or stopped)


PHASES = tuple(Phase)


@dataclass(frozen=True, slots=True)
class VipStatus:
    address: IPAddress
    virtual_server: str  # the one the reason is about
    verdict: Verdict
    announced: bool  # in the routing daemon's last accepted plan


@dataclass(frozen=True, slots=True)
class BgpStatus:
    phase: Phase
    phase_since: float  # unix time
    sessions: tuple[Session, ...]
    vips: tuple[VipStatus, ...]
    routing_daemon: str
    routing_daemon_up: bool
    applies: int
    errors: int
    last_error: str


def _peers(status: BgpStatus, settings: BgpSettings) -> list[dict[str, str]]:
    addresses = {p.name: str(p.address) for p in settings.peers}
    return [
        {"name": s.peer, "address": addresses.get(s.peer, ""), "state": s.state}
        for s in status.sessions
    ]


def summary_of(status: BgpStatus, settings: BgpSettings) -> AnnouncerSummary:
    """The announcer as a whole, for /status (`lvsmon status`): phase, sessions, errors."""
    return AnnouncerSummary(
        phase=status.phase.value,
        phase_since=status.phase_since,
        routing_daemon=status.routing_daemon,
        routing_daemon_up=status.routing_daemon_up,
        sessions=_peers(status, settings),
        errors=status.errors,
        last_error=status.last_error,
    )


def status_rows(status: BgpStatus, settings: BgpSettings) -> list[dict[str, Any]]:
    """One row per VIP for /status.json's "bgp" list (the status page's BGP section):
    prefix, state (announced, draining, withdrawn), next hop, the sessions, and why."""
    peers = _peers(status, settings)
    rows = []
    for v in status.vips:
        if not v.announced:
            state = "withdrawn"
        elif status.phase is Phase.DRAINING:
            state = "draining"
        else:
            state = "announced"
        why = v.verdict.reason.value
        rows.append(
            {
                "prefix": f"{v.address}/{v.address.max_prefixlen}",
                "state": state,
                "next_hop": str(settings.next_hop) if settings.next_hop else "self",
                "peers": peers,
                "why": f"{why}: {v.verdict.detail} ({v.virtual_server})",
            }
        )
    return rows


class Announcer:
    def __init__(self, settings: BgpSettings, daemon: RoutingDaemon):
        self.settings = settings
        self.daemon = daemon
        self.device = LivenessDevice(settings.liveness_interface)
        self.phase = Phase.WITHDRAWN
        self.phase_since = time.time()
        self._verdicts: Mapping[IPAddress, tuple[Verdict, str]] = {}
        self._applied: Plan | None = None
        self._sessions: tuple[Session, ...] = ()
        self._daemon_up = False
        self.applies = 0
        self.errors = 0
        self.last_error = ""
        self._poller: asyncio.Task[None] | None = None

    # --- life cycle ---

    async def start(self) -> None:
        await self._apply(plan_of(self.settings, set()))  # best effort: retried by update()
        self._open_device()
        self._set_phase(Phase.ACTIVE)
        self._poller = asyncio.create_task(self._poll_sessions())

    async def configure(self, settings: BgpSettings) -> None:
        """A reload: a new liveness device name means a new device."""
        if settings.liveness_interface != self.device.name:
            self.device.close()
            self.device = LivenessDevice(settings.liveness_interface)
            if self.phase is not Phase.WITHDRAWN:
                self.device.open()
        self.settings = settings
        await self._sync()

    async def update(self, verdicts: Mapping[IPAddress, tuple[Verdict, str]]) -> None:
        self._verdicts = verdicts
        if self.phase is not Phase.WITHDRAWN and not self.device.up:
            self._open_device()  # retried on every update
        await self._sync()

    async def drain(self) -> None:
        if self.phase is Phase.ACTIVE:
            self._set_phase(Phase.DRAINING)
            log.warning(
                "draining: routes less preferred", extra=fields(period=self.settings.drain.period)
            )
            await self._sync()

    async def withdraw(self) -> None:
        """Nothing announced, the device gone, the session poller stopped."""
        self._set_phase(Phase.WITHDRAWN)
        await self._sync()
        self.device.close()
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
            self._poller = None

    # --- what to announce ---

    def wanted(self) -> Plan:
        """Routes via a device that does not exist would be dead in the routing daemon
        anyway: without the device, the plan is empty and the metrics say so."""
        if self.phase is Phase.WITHDRAWN or not self.device.up:
            return plan_of(self.settings, set())
        serving = {vip for vip, (verdict, _) in self._verdicts.items() if verdict.ok}
        return plan_of(self.settings, serving, draining=self.phase is Phase.DRAINING)

    @property
    def announced(self) -> frozenset[IPAddress]:
        return frozenset(self._applied.vips) if self._applied is not None else frozenset()

    async def _sync(self) -> None:
        plan = self.wanted()
        if plan != self._applied:
            await self._apply(plan)

    async def _apply(self, plan: Plan) -> None:
        try:
            await self.daemon.apply(plan)
        except RoutingDaemonError as exc:
            self._daemon_up = False
            self._error(str(exc))
            return
        before = self.announced
        self._applied, self._daemon_up, self.last_error = plan, True, ""
        self.applies += 1
        after = self.announced
        for vip in sorted(after - before, key=str):
            log.warning("announced", extra=fields(vip=str(vip)))
        for vip in sorted(before - after, key=str):
            verdict = self._verdicts.get(vip)
            why = "drained" if self.phase is Phase.WITHDRAWN or not verdict else verdict[0].reason
            log.warning("withdrawn", extra=fields(vip=str(vip), reason=why))

    def _open_device(self) -> None:
        try:
            self.device.open()
        except LivenessError as exc:
            self.errors += 1
            if str(exc) != self.last_error:
                log.error(
                    "no liveness device: nothing is announced until it exists; will retry",
                    extra=fields(error=str(exc)),
                )
            self.last_error = str(exc)

    def _error(self, message: str) -> None:
        self.errors += 1
        if message != self.last_error:
            log.error("routing daemon not updated; will retry", extra=fields(error=message))
        self.last_error = message

    def _set_phase(self, phase: Phase) -> None:
        self.phase, self.phase_since = phase, time.time()

    async def _poll_sessions(self) -> None:
        while True:
            try:
                self._sessions = await self.daemon.sessions()
                self._daemon_up = True
            except RoutingDaemonError as exc:
                self._sessions = tuple(Session(p.name, "down") for p in self.settings.peers)
                self._daemon_up = False
                self.last_error = str(exc)
            if self._applied != self.wanted():  # a failed apply: retry without a sync
                await self._sync()
            await asyncio.sleep(SESSION_POLL)

    # --- for metrics and /status ---

    def status(self) -> BgpStatus:
        announced = self.announced
        vips = tuple(
            VipStatus(vip, name, verdict, vip in announced)
            for vip, (verdict, name) in sorted(self._verdicts.items(), key=lambda kv: str(kv[0]))
        )
        sessions = self._sessions or tuple(Session(p.name, "idle") for p in self.settings.peers)
        return BgpStatus(
            self.phase,
            self.phase_since,
            sessions,
            vips,
            self.daemon.name,
            self._daemon_up,
            self.applies,
            self.errors,
            self.last_error,
        )
