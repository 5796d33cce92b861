"""One failover group at run time: feeds the pure machine, performs its actions.

Owns the group's timer (a timerfd armed at the machine's next deadline), the
receive-side checks the codec cannot do alone (TTL, unicast source, address
list, replay counter), and the counters behind the metrics.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable

from lvsmon.ha import codec, machine, receive
from lvsmon.ha.announce import Announcer
from lvsmon.ha.handover import Forwarder, Hold, handover_identity
from lvsmon.ha.hooks import Serial, hook_job
from lvsmon.ha.links import Links
from lvsmon.ha.netio import AdvertSocket
from lvsmon.ha.receive import Datagram
from lvsmon.ha.status import GroupStatus
from lvsmon.ha.timer import PreciseTimer
from lvsmon.logs import fields
from lvsmon.model import IPAddress
from lvsmon.model.failover import FailoverGroup

log = logging.getLogger("lvsmon.ha")

REJECT_LOG_EVERY = 60.0  # seconds between log lines for one rejection reason
# The auth replay counter starts from the wall clock so a restarted peer keeps increasing.
_auth_counter = time.time_ns() // 1000


def _next_counter() -> int:
    global _auth_counter
    _auth_counter += 1
    return _auth_counter


class GroupRuntime:
    def __init__(
        self,
        cfg: FailoverGroup,
        sock: AdvertSocket,
        links: Links,
        announcer: Announcer,
        side: Serial,
        on_change: Callable[[bool], None],
    ):
        """Address changes are synchronous (~0.1 ms each); `side` runs hooks and the
        sync daemon in order, beside the loop, so they never delay an advert."""
        self.cfg = cfg
        self.sock = sock
        self._links = links
        self._announcer = announcer
        self._side = side
        self._on_change = on_change
        self._loop = asyncio.get_running_loop()
        self.state = machine.initial(self._params(cfg), cfg.priority)
        self._timer = PreciseTimer(
            self._loop, lambda deadline: self.handle(machine.Timer(), deadline)
        )
        self.sent = 0
        self.received = 0
        self.rejected: Counter[str] = Counter()
        self.transitions: Counter[str] = Counter()
        self.since = time.time()
        self.peer: IPAddress | None = None
        self.peer_priority = 0
        self.peer_last = 0.0
        self._peer_heard = -1e9
        self._replay: dict[IPAddress, int] = {}
        self._reject_logged: dict[str, float] = {}
        self.done = asyncio.Event()
        self._table = Forwarder()  # handover_forward: conntrack on, forwarding at times
        self._forwarding_to: IPAddress | None = None  # the old master, while forwarding
        self._forward_end: asyncio.TimerHandle | None = None
        self._hold: Hold | None = None  # demoted: our VIPs on lo while our proxy drains
        self._hold_end: asyncio.TimerHandle | None = None
        if cfg.handover_forward > 0:  # (replacing a table a killed VRRP process left)
            self._table.track(cfg)

    def _params(self, cfg: FailoverGroup) -> machine.Params:
        return machine.Params(
            advert_interval=cfg.advert_interval,
            primary=self.sock.source,
            preempt=cfg.preempt,
            preempt_delay=cfg.preempt_delay,
            garp_refresh=cfg.garp_refresh,
            handover_timeout=cfg.effective_handover_timeout,
        )

    # --- events in ---

    def handle(
        self, event: machine.Event, deadline: float | None = None, at: float | None = None
    ) -> None:
        """`deadline`: a timer's (it may fire a hair early: never skip a beat);
        `at`: when the event happened (an advert's arrival), if not now."""
        now = self._loop.time()
        if deadline is not None:
            now = max(now, deadline)
        elif at is not None:
            now = min(now, at)
        before = self.state
        self.state, actions = machine.step(before, event, now)
        if self.state.role is not before.role:
            self.transitions[self.state.role.value] += 1
            self.since = time.time()
            log.warning(
                "state change",
                extra=fields(
                    group=self.cfg.name,
                    vrid=self.cfg.vrid,
                    state=self.state.role.value,
                    previous=before.role.value,
                    priority=self.state.priority,
                ),
            )
            self._follow_handover(before.role)  # before the VIP is added: no segment is reset
        # Taking over: announce each address the moment it is added (the VIP first),
        # rather than all of them after the last one is added.
        together = machine.Announce() in actions and machine.AddAddresses() in actions
        for action in actions:
            self._perform(action, before, together)
        self._schedule()
        visible = (self.state.role, self.state.advertised_priority)
        self._on_change(visible != (before.role, before.advertised_priority))

    def reconfigure(self, cfg: FailoverGroup, priority: int) -> None:
        old = self.cfg
        self.cfg = cfg
        if handover_identity(old) != handover_identity(cfg):
            self._stop_forwarding()
            if cfg.handover_forward > 0:
                self._table.track(cfg)
            else:
                self._table.remove(old)
        if self.state.holds_addresses and old.addresses != cfg.addresses:
            gone = [a for a in old.addresses if a not in cfg.addresses]
            new = [a for a in cfg.addresses if a not in old.addresses]
            self._links.remove(gone)
            self._links.add(new)
            self._announcer.burst(new, cfg.garp_repeat, cfg.garp_interval)
        self.handle(machine.Reconfigure(self._params(cfg), priority))

    def abort(self) -> None:
        """Stop at once without handover (the group's identity changed on reload)."""
        if self.state.holds_addresses:
            self._links.remove(self.cfg.addresses)
        self.close()
        self.state = machine.State(params=self.state.params, priority=0, stopped=True)
        self.done.set()

    def on_datagram(self, gram: Datagram) -> None:
        cfg = self.cfg
        expect = receive.Expect(self.sock.source, cfg.advertised, cfg.unicast_peers, cfg.auth_key)
        try:
            adv = receive.accept(gram, expect, self._replay)
        except codec.Rejected as exc:
            return self.reject(exc.reason, exc.detail)
        self.received += 1
        self.peer, self.peer_priority, self.peer_last = gram.source, adv.priority, time.time()
        self._peer_heard = self._loop.time()  # monotonic: is the peer alive (handover)
        self.handle(machine.Received(adv.priority, adv.interval, gram.source), at=gram.arrived)

    def reject(self, reason: str, detail: str = "", count: int = 1) -> None:
        self.rejected[reason] += count
        now = time.monotonic()
        if now - self._reject_logged.get(reason, -REJECT_LOG_EVERY) >= REJECT_LOG_EVERY:
            self._reject_logged[reason] = now
            log.warning(
                "advert rejected",
                extra=fields(
                    group=self.cfg.name, reason=reason, detail=detail, count=self.rejected[reason]
                ),
            )
        self._on_change(False)

    # --- actions out ---

    def _perform(self, action: machine.Action, before: machine.State, together: bool) -> None:
        cfg = self.cfg
        name = cfg.name
        match action:
            case machine.SendAdvert(priority=priority):
                self._send(priority)  # at once: adverts never wait for netlink
            case machine.AddAddresses() if together:
                for address in cfg.addresses:  # each announced as soon as it exists
                    self._links.add([address])
                    self._announcer.burst([address], cfg.garp_repeat, cfg.garp_interval)
            case machine.Announce() if together:
                pass  # done with the addresses
            case machine.AddAddresses():
                self._links.add(cfg.addresses)
            case machine.RemoveAddresses():
                self._links.remove(cfg.addresses)
            case machine.Announce():
                self._announcer.burst(cfg.addresses, cfg.garp_repeat, cfg.garp_interval)
            case machine.RunHook(role=role):
                job = hook_job(cfg, role.value, before.role.value, self.state.priority)
                if job is not None:
                    self._side.submit(name, job)
            case machine.Stopped():
                self.done.set()

    def _send(self, priority: int) -> None:
        cfg = self.cfg
        counter = _next_counter() if cfg.auth_key else None
        adv = codec.Advert(
            cfg.vrid, priority, round(cfg.advert_interval * 100), cfg.advertised, counter
        )
        group = codec.GROUP_V4 if cfg.family == 4 else codec.GROUP_V6
        for dst in cfg.unicast_peers or (group,):
            try:
                self.sock.send(codec.encode(adv, self.sock.source, dst, cfg.auth_key), dst)
                self.sent += 1
            except OSError as exc:
                log.error("cannot send advert", extra=fields(group=cfg.name, error=str(exc)))

    def _schedule(self) -> None:
        deadline = machine.next_deadline(self.state)
        if deadline is None:
            self._timer.cancel()
        else:
            self._timer.arm(deadline)

    def _follow_handover(self, before: machine.Role) -> None:
        """handover_forward, on a change of role. Taking over from a live master (it
        handed over with priority 0, or we preempted it): forward its connections for
        handover_forward seconds. Demoted to backup by a better master: keep the VIPs
        on lo that long, so our proxy finishes its connections. (A stop is the
        daemon's to hold: the data plane drains after this process has gone.)"""
        cfg, peer, role = self.cfg, self.peer, self.state.role
        if role is not machine.Role.MASTER:
            self._stop_forwarding()
        else:
            self._release_hold()  # the VIPs come back to the interface
        if cfg.handover_forward <= 0:
            return
        if role is machine.Role.MASTER and before is machine.Role.BACKUP:
            if peer is not None and peer.version == cfg.family and self._peer_was_master():
                self._stop_forwarding()
                if self._table.start(cfg, peer):
                    self._forwarding_to = peer
                    self._forward_end = self._loop.call_later(
                        cfg.handover_forward, self._stop_forwarding
                    )
        elif role is machine.Role.BACKUP and before is machine.Role.MASTER:
            self._release_hold()
            self._hold = Hold.start([cfg], self._links)
            if self._hold is not None:
                self._hold_end = self._loop.call_later(cfg.handover_forward, self._release_hold)

    def _peer_was_master(self) -> bool:
        """The peer we take over from is alive: it handed over (priority 0) or we
        preempt it (its adverts still come). After a crash its last advert is a
        master-down interval (over 3 advert intervals) old."""
        if self.peer_priority == 0:
            return True
        return self._loop.time() - self._peer_heard < 2 * self.cfg.advert_interval

    def _stop_forwarding(self) -> None:
        if self._forward_end is not None:
            self._forward_end.cancel()
            self._forward_end = None
        if self._forwarding_to is not None:
            self._forwarding_to = None
            self._table.track(self.cfg)
            log.warning("handover forwarding ended", extra=fields(group=self.cfg.name))

    def _release_hold(self) -> None:
        if self._hold_end is not None:
            self._hold_end.cancel()
            self._hold_end = None
        if self._hold is not None:
            self._hold.release()
            self._hold = None

    def close(self) -> None:
        self._timer.close()
        if self._forward_end is not None:
            self._forward_end.cancel()
        self._release_hold()
        if self.cfg.handover_forward > 0:
            self._table.remove(self.cfg)
        self._table.close()

    # --- reporting ---

    def status(self) -> GroupStatus:
        s = self.state
        if s.role is machine.Role.MASTER:
            master = str(self.sock.source)
        elif s.role is machine.Role.BACKUP and self.peer is not None and self.peer_priority:
            master = str(self.peer)
        else:
            master = ""
        return GroupStatus(
            name=self.cfg.name,
            vrid=self.cfg.vrid,
            interface=self.cfg.interface,
            state=s.role.value,
            priority=s.advertised_priority,
            configured_priority=self.cfg.priority,
            source=str(self.sock.source),
            master=master,
            peer=str(self.peer or ""),
            peer_priority=self.peer_priority,
            peer_last_advert=self.peer_last,
            since=self.since,
            adverts_sent=self.sent,
            adverts_received=self.received,
            rejected=dict(self.rejected),
            transitions=dict(self.transitions),
            forwarding_to=str(self._forwarding_to or ""),
        )
