"""The VRRPv3 state machine (RFC 5798 section 6.4), pure: `step(state, event, now)`.

No clock, no sockets: time comes in as `now` (monotonic seconds), deadlines go
out in the state (`next_deadline`), and what to do comes out as `Action` data
that the runner performs. Beyond the RFC:

- FAULT (as keepalived): a tracked interface with no weight is down; the
  group holds no addresses and sends nothing until it recovers to BACKUP.
- preempt_delay: a backup does not preempt a lower-priority master until
  `preempt_delay` after it entered BACKUP (startup or fault recovery).
- Graceful handover: on shutdown a master advertises priority 0 (so the
  backup takes over after its skew time) but KEEPS its addresses until it
  hears the new master (plus one advert interval for packets in flight) or
  `handover_timeout` passes; a planned restart loses no connection attempts.
- A master hearing a lower-priority master answers at once (keepalived's
  `vrrp_higher_prio_send_advert`), so a healed partition settles in one
  round trip instead of one advert interval.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass
from typing import TypeAlias

from lvsmon.model import IPAddress

OWNER = 255


class Role(enum.StrEnum):
    INITIALIZE = "initialize"
    BACKUP = "backup"
    MASTER = "master"
    FAULT = "fault"


ROLES = tuple(Role)


@dataclass(frozen=True, slots=True)
class Params:
    """The group's protocol settings (from its config); replaced on reload."""

    advert_interval: float
    primary: IPAddress  # our own address in the adverts' family: the tie-breaker
    preempt: bool = True
    preempt_delay: float = 0.0
    garp_refresh: float = 0.0
    handover_timeout: float = 1.0


@dataclass(frozen=True, slots=True)
class State:
    params: Params
    priority: int  # effective: the configured priority after tracking
    role: Role = Role.INITIALIZE
    fault: bool = False  # tracking wants FAULT (applies once started)
    started: bool = False
    stopped: bool = False
    master_adver_interval: float = 0.0  # learned from the master's adverts
    adver_at: float | None = None  # MASTER: next advert
    down_at: float | None = None  # BACKUP: the Master_Down_Timer
    refresh_at: float | None = None  # MASTER: next gratuitous ARP / NA refresh
    preempt_after: float = 0.0  # BACKUP: may preempt from this time on
    release_by: float | None = None  # set while handing over (MASTER, shutting down)

    @property
    def releasing(self) -> bool:
        return self.release_by is not None

    @property
    def holds_addresses(self) -> bool:
        return self.role is Role.MASTER

    @property
    def advertised_priority(self) -> int:
        return 0 if self.releasing else self.priority


def initial(params: Params, priority: int) -> State:
    return State(params=params, priority=priority, master_adver_interval=params.advert_interval)


def skew_time(priority: int, interval: float) -> float:
    return ((256 - priority) * interval) / 256


def master_down_interval(priority: int, interval: float) -> float:
    return 3 * interval + skew_time(priority, interval)


def next_deadline(state: State) -> float | None:
    times = [t for t in (state.adver_at, state.down_at, state.refresh_at, state.release_by) if t]
    return min(times) if times else None


# --- events ---


@dataclass(frozen=True, slots=True)
class Startup:
    pass


@dataclass(frozen=True, slots=True)
class Shutdown:
    """Graceful stop: a master hands over, anything else stops at once."""


@dataclass(frozen=True, slots=True)
class Timer:
    """Deadlines up to `now` have passed."""


@dataclass(frozen=True, slots=True)
class Received:
    """A valid advert for this group (the receiver has checked TTL, VRID, auth...)."""

    priority: int
    interval: float
    source: IPAddress


@dataclass(frozen=True, slots=True)
class Track:
    """Tracking's verdict: the effective priority, and whether to be in FAULT."""

    priority: int
    fault: bool = False


@dataclass(frozen=True, slots=True)
class Reconfigure:
    params: Params
    priority: int


Event: TypeAlias = Startup | Shutdown | Timer | Received | Track | Reconfigure


# --- actions ---


@dataclass(frozen=True, slots=True)
class SendAdvert:
    priority: int


@dataclass(frozen=True, slots=True)
class AddAddresses:
    pass


@dataclass(frozen=True, slots=True)
class RemoveAddresses:
    pass


@dataclass(frozen=True, slots=True)
class Announce:
    """Gratuitous ARP / unsolicited NA for every address (the runner repeats them)."""


@dataclass(frozen=True, slots=True)
class RunHook:
    role: Role


@dataclass(frozen=True, slots=True)
class Stopped:
    """The group has finished (after Shutdown): the runner may exit."""


Action: TypeAlias = SendAdvert | AddAddresses | RemoveAddresses | Announce | RunHook | Stopped
Result: TypeAlias = tuple[State, tuple[Action, ...]]


def step(state: State, event: Event, now: float) -> Result:
    if state.stopped:
        return state, ()
    match event:
        case Startup():
            return _startup(state, now)
        case Shutdown():
            return _shutdown(state, now)
        case Timer():
            return _timer(state, now)
        case Received():
            return _received(state, event, now)
        case Track(priority=priority, fault=fault):
            return _track(state, priority, fault, now)
        case Reconfigure(params=params, priority=priority):
            return _reconfigure(state, params, priority, now)
    raise TypeError(event)  # pragma: no cover


def _startup(s: State, now: float) -> Result:
    if s.started:
        return s, ()
    s = dataclasses.replace(s, started=True)
    if s.priority == OWNER and not s.fault:
        return _to_master(s, now)
    # Stale addresses left by a crashed predecessor would answer ARP: drop them first.
    if s.fault:
        state, actions = _to_fault(s)
    else:
        state, actions = _to_backup(s, now, s.params.advert_interval, entering=True)
    return state, (RemoveAddresses(), *actions)


def _shutdown(s: State, now: float) -> Result:
    if s.role is Role.MASTER:
        if s.releasing:
            return s, ()
        s = dataclasses.replace(
            s,
            release_by=now + s.params.handover_timeout,
            refresh_at=None,
            adver_at=now + s.params.advert_interval,
        )
        return s, (SendAdvert(0),)
    return _stop(s, release=False)


def _stop(s: State, *, release: bool) -> Result:
    actions: list[Action] = [RemoveAddresses()] if release else []
    was = s.role
    s = dataclasses.replace(
        s,
        role=Role.INITIALIZE,
        stopped=True,
        adver_at=None,
        down_at=None,
        refresh_at=None,
        release_by=None,
    )
    if was is not Role.INITIALIZE:
        actions += [RunHook(Role.INITIALIZE)]
    return s, (*actions, Stopped())


def _timer(s: State, now: float) -> Result:
    if s.role is Role.BACKUP and s.down_at is not None and now >= s.down_at:
        return _to_master(s, now)
    if s.role is not Role.MASTER:
        return s, ()
    if s.release_by is not None and now >= s.release_by:
        return _stop(s, release=True)
    actions: list[Action] = []
    if s.adver_at is not None and now >= s.adver_at:
        actions.append(SendAdvert(s.advertised_priority))
        # Keep the cadence (no drift from late wake-ups) unless a whole interval was missed.
        nxt = s.adver_at + s.params.advert_interval
        s = dataclasses.replace(s, adver_at=nxt if nxt > now else now + s.params.advert_interval)
    if s.refresh_at is not None and now >= s.refresh_at:
        actions.append(Announce())
        s = dataclasses.replace(s, refresh_at=now + s.params.garp_refresh)
    return s, tuple(actions)


def _received(s: State, adv: Received, now: float) -> Result:
    if s.role is Role.BACKUP:
        if adv.priority == 0:
            skew = skew_time(s.priority, s.master_adver_interval)
            return dataclasses.replace(s, down_at=now + skew), ()
        may_preempt = s.params.preempt and now >= s.preempt_after
        if not may_preempt or adv.priority >= s.priority:
            mdi = master_down_interval(s.priority, adv.interval)
            return dataclasses.replace(s, master_adver_interval=adv.interval, down_at=now + mdi), ()
        return s, ()  # a lower-priority master: let the down timer run out and preempt
    if s.role is not Role.MASTER:
        return s, ()
    if s.releasing:
        if adv.priority == 0:
            return s, ()
        # The new master is up; keep serving one more interval for packets in flight.
        linger = now + s.params.advert_interval
        assert s.release_by is not None
        return dataclasses.replace(s, release_by=min(s.release_by, linger), adver_at=None), ()
    if adv.priority == 0:
        return _advertise_now(s, now)
    tie_lost = adv.priority == s.priority and _above(adv.source, s.params.primary)
    if adv.priority > s.priority or tie_lost:
        return _to_backup(s, now, adv.interval, entering=False)
    return _advertise_now(s, now)


def _advertise_now(s: State, now: float) -> Result:
    s = dataclasses.replace(s, adver_at=now + s.params.advert_interval)
    return s, (SendAdvert(s.advertised_priority),)


def _track(s: State, priority: int, fault: bool, now: float) -> Result:
    actions: tuple[Action, ...] = ()
    changed = priority != s.priority
    s = dataclasses.replace(s, priority=priority, fault=fault)
    if not s.started:
        return s, ()
    if fault and s.releasing:
        return _stop(s, release=True)
    if fault and s.role is not Role.FAULT:
        return _to_fault(s)
    if not fault and s.role is Role.FAULT:
        return _to_backup(s, now, s.params.advert_interval, entering=True)
    if changed and s.role is Role.MASTER and not s.releasing:
        # Tell the backup now: if it is better placed it preempts on this advert.
        s, actions = _advertise_now(s, now)
    return s, actions


def _reconfigure(s: State, params: Params, priority: int, now: float) -> Result:
    old = s.params
    s = dataclasses.replace(s, params=params)
    if s.role is Role.MASTER and s.refresh_at is None and params.garp_refresh and not s.releasing:
        s = dataclasses.replace(s, refresh_at=now + params.garp_refresh)
    elif s.role is Role.MASTER and not params.garp_refresh:
        s = dataclasses.replace(s, refresh_at=None)
    if s.role is Role.MASTER and params.advert_interval != old.advert_interval:
        s = dataclasses.replace(s, adver_at=now)
    if s.role is Role.BACKUP and params.preempt_delay != old.preempt_delay:
        s = dataclasses.replace(
            s, preempt_after=s.preempt_after - old.preempt_delay + params.preempt_delay
        )
    state, actions = _track(s, priority, s.fault, now)
    follow, more = _timer(state, now)
    return follow, actions + more


def _to_master(s: State, now: float) -> Result:
    p = s.params
    s = dataclasses.replace(
        s,
        role=Role.MASTER,
        down_at=None,
        adver_at=now + p.advert_interval,
        refresh_at=now + p.garp_refresh if p.garp_refresh else None,
    )
    return s, (
        SendAdvert(s.priority),
        AddAddresses(),
        Announce(),
        RunHook(Role.MASTER),
    )


def _to_backup(s: State, now: float, interval: float, *, entering: bool) -> Result:
    """Enter BACKUP: `entering` from INITIALIZE/FAULT (starts the preempt delay)."""
    was_master = s.role is Role.MASTER
    s = dataclasses.replace(
        s,
        role=Role.BACKUP,
        adver_at=None,
        refresh_at=None,
        master_adver_interval=interval,
        down_at=now + master_down_interval(s.priority, interval),
        preempt_after=now + s.params.preempt_delay if entering else s.preempt_after,
    )
    actions: list[Action] = [RemoveAddresses()] if was_master else []
    return s, (*actions, RunHook(Role.BACKUP))


def _to_fault(s: State) -> Result:
    actions: list[Action] = []
    if s.role is Role.MASTER:
        # We cannot serve: announce priority 0 so the backup takes over in skew time.
        actions += [SendAdvert(0), RemoveAddresses()]
    s = dataclasses.replace(
        s, role=Role.FAULT, adver_at=None, down_at=None, refresh_at=None, release_by=None
    )
    return s, (*actions, RunHook(Role.FAULT))


def _above(a: IPAddress, b: IPAddress) -> bool:
    """RFC 5798 tie-break: the numerically higher primary address wins."""
    return (a.version, int(a)) > (b.version, int(b))
