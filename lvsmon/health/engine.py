"""The engine that runs probes: one epoll set, one loop timer, FIFO timelines.

Scheduling. Starts and deadlines live on two `Timeline`s (ticker.py) served by
one loop timer that fires at the first entry's time but never more often
than every `tick`: under load one wake-up starts a batch (10k checks/s at a
5 ms tick: ~50 per wake-up), each at most a tick late.

I/O. A `SocketChecker` run (tcp, plain http) is plain callbacks: its socket
joins the engine's epoll set (edge-triggered, one epoll_ctl per run; close()
takes it out), the loop watches that set through one fd, and each readiness
event calls the checker directly. No coroutine, task, future or timer handle
per run: that bookkeeping, not the sockets, was most of what a check cost.
Any other checker is a coroutine run in a task of its own, cancelled at its
timeout.

The in-flight limit is a counter: a run that finds no free slot waits in a
FIFO and starts when one frees (the wait shows as lag, never as an error).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import select
from collections import deque
from collections.abc import Callable
from time import monotonic

from lvsmon.health.probe import Probe
from lvsmon.health.probes import CoroutineChecker, SocketChecker, classify
from lvsmon.health.ticker import Timeline
from lvsmon.logs import fields
from lvsmon.model.health import Reason, Result, fail

log = logging.getLogger("lvsmon.health")

TICK = 0.005
MAX_SLACK = 0.1  # how late a run may start and still keep the probe's rhythm (see _run)
OnResult = Callable[[Probe, Result, float], None]  # (probe, result, ended): every run's end


class Engine:
    def __init__(self, max_in_flight: int, on_result: OnResult, *, tick: float = TICK):
        self.size = max_in_flight
        self.tick = tick
        self._on_result = on_result
        self._free = max_in_flight
        self._waiting: deque[Probe] = deque()  # due, no free slot yet
        self._draining = False
        self._starts: Timeline[Probe] = Timeline()  # lanes: the interval
        self._deadlines: Timeline[Probe] = Timeline()  # lanes: the timeout
        self._fds: dict[int, Probe] = {}  # socket runs in flight
        self._tasks: set[asyncio.Task[Result]] = set()  # coroutine runs in flight
        self._loop: asyncio.AbstractEventLoop | None = None
        self._epoll: select.epoll | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._wake_at = math.inf

    @property
    def in_flight(self) -> int:
        return self.size - self._free

    # --- lifecycle ---

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._epoll = select.epoll()
        loop.add_reader(self._epoll.fileno(), self._on_events)

    async def stop(self) -> None:
        loop, epoll = self._loop, self._epoll
        if loop is None or epoll is None:
            return
        self._loop = None  # from here on nothing starts
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._wake_at = math.inf
        loop.remove_reader(epoll.fileno())
        for probe in self._fds.values():
            self._checker(probe).abort()
            probe.busy = False
        self._fds.clear()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        epoll.close()
        self._epoll = None
        self._starts.clear()
        self._deadlines.clear()
        self._waiting.clear()
        self._free = self.size

    def add(self, probe: Probe, delay: float) -> None:
        """Schedule `probe`: its first run in `delay` seconds, then every interval."""
        check = probe.key.check
        probe.interval, probe.timeout = check.interval, check.timeout
        probe.slack = min(check.interval / 10, MAX_SLACK)
        probe.live, probe.overdue, probe.expired = True, False, False
        probe.next_due = when = monotonic() + delay
        self._starts.add(probe, when)
        self._wake_by(when)

    def drop(self, probe: Probe) -> None:
        """Stop `probe` (a reload removed it): its run in flight ends with no result."""
        probe.live = False
        if not probe.busy:
            return
        if probe.task is not None:
            probe.task.cancel()  # the task gives its slot back
            return
        self._fds.pop(probe.fd, None)
        self._checker(probe).abort()
        probe.busy = False
        self._release()

    # --- timeline ---

    def _wake_by(self, when: float) -> None:
        """Make sure the timer fires by `when` (a tick of slack: no re-arming for less)."""
        if self._loop is None or when + self.tick >= self._wake_at:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._wake_at = when
        self._timer = self._loop.call_later(max(0.0, when - monotonic()), self._tick)

    def _tick(self) -> None:
        self._timer = None
        self._wake_at = -math.inf  # no re-arming while the batch runs: armed once below
        now = monotonic()
        for probe in self._deadlines.pop_due(now):
            if probe.busy and probe.deadline <= now:  # else a finished run's entry
                self._expire(probe)
        for probe in self._starts.pop_due(now):
            if not probe.live:
                continue
            if self._free and not probe.busy:  # _due(), inlined for the usual case
                self._free -= 1
                self._run(probe)
            else:
                self._due(probe)
        self._wake_at = math.inf
        if self._loop is not None:
            first = min(self._starts.next_time(), self._deadlines.next_time())
            if first < math.inf:
                self._wake_at = first = max(first, monotonic() + self.tick)
                self._timer = self._loop.call_later(first - monotonic(), self._tick)

    def _due(self, probe: Probe) -> None:
        if probe.busy:  # the last run is still being cancelled: start when it ends
            probe.overdue = True
        elif self._free:
            self._free -= 1
            self._run(probe)
        else:
            self._waiting.append(probe)

    # --- runs ---

    def _run(self, probe: Probe) -> None:
        """Start a run in a slot already taken."""
        now = monotonic()
        probe.busy = True
        probe.due = due = probe.next_due
        probe.started = now
        interval, timeout = probe.interval, probe.timeout
        # the next run is due one interval after this one was due, so a probe keeps its
        # rate (a start a few ms late does not push every later one back); a run later
        # than `slack` restarts the rhythm from its actual start instead, so a late run
        # never squeezes the next by more than that and lag never builds into a burst
        probe.next_due = nxt = due + interval if now - due < probe.slack else now + interval
        self._starts.add(probe, nxt, interval)
        probe.deadline = end = now + timeout
        self._deadlines.add(probe, end, timeout)
        if end + self.tick < self._wake_at:  # a run started outside a tick
            self._wake_by(end)
        checker = probe.checker
        if isinstance(checker, SocketChecker):
            epoll = self._epoll
            assert epoll is not None
            try:
                fd = checker.start()
                epoll.register(fd, checker.events)
            except Exception as exc:  # no socket (EMFILE), unreachable at once...
                checker.abort()
                self._finish(probe, classify(exc))
                return
            probe.fd = fd
            self._fds[fd] = probe
        else:
            assert self._loop is not None
            task = probe.task = self._loop.create_task(_result_of(checker))
            self._tasks.add(task)
            task.add_done_callback(functools.partial(self._task_done, probe))

    def _on_events(self) -> None:
        fds, epoll = self._fds, self._epoll
        assert epoll is not None
        for fd, events in epoll.poll(0):
            probe = fds.get(fd)
            if probe is None:
                continue
            checker: SocketChecker = probe.checker  # type: ignore[assignment]
            try:
                result = checker.ready(events)
            except Exception as exc:  # reset, refused...
                checker.abort()
                result = classify(exc)
            if result is not None:
                del fds[fd]
                self._finish(probe, result)

    def _task_done(self, probe: Probe, task: asyncio.Task[Result]) -> None:
        # a done callback, not a handler in the coroutine: a task cancelled before its
        # first step never runs its own code, and its slot must come back all the same
        self._tasks.discard(task)
        if not task.cancelled():
            self._finish(probe, task.result())
        elif probe.expired and self._loop is not None:  # its timeout, not a drop or stop
            self._finish(probe, self._timeout(probe))
        else:
            probe.busy = probe.expired = False
            probe.task = None
            self._release()

    def _expire(self, probe: Probe) -> None:
        if probe.task is not None:
            probe.expired = True  # its task turns the cancellation into the result
            probe.task.cancel()
            return
        self._fds.pop(probe.fd, None)
        self._checker(probe).abort()
        self._finish(probe, self._timeout(probe))

    @staticmethod
    def _timeout(probe: Probe) -> Result:
        return fail(Reason.TIMEOUT, f"no answer within {probe.timeout:g}s ({probe.checker.phase})")

    def _finish(self, probe: Probe, result: Result) -> None:
        ended = monotonic()
        probe.busy = probe.expired = False
        probe.task = None
        if self._waiting:
            self._release()
        else:
            self._free += 1
        if not probe.live:
            return
        try:
            self._on_result(probe, result, ended)
        except Exception:  # a bug in a consumer must not stall the other probes
            log.exception("health result handling failed", extra=fields(probe=str(probe.key)))
        if probe.overdue:
            probe.overdue = False
            self._due(probe)

    def _release(self) -> None:
        """A slot frees: to the first waiting probe, else back to the pool."""
        self._free += 1
        if not self._waiting or self._draining or self._loop is None:
            return
        self._draining = True  # runs that fail at once release again: loop, don't recurse
        try:
            while self._free and self._waiting:
                probe = self._waiting.popleft()
                if probe.live and not probe.busy:
                    self._free -= 1
                    self._run(probe)
        finally:
            self._draining = False

    @staticmethod
    def _checker(probe: Probe) -> SocketChecker:
        checker = probe.checker
        assert isinstance(checker, SocketChecker)
        return checker


async def _result_of(checker: CoroutineChecker) -> Result:
    try:
        return await checker()
    except Exception as exc:
        return classify(exc)
