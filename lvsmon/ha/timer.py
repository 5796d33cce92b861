"""A microsecond-precise one-shot timer on the event loop (Linux timerfd).

asyncio sleeps in epoll_wait, whose timeout is whole milliseconds rounded up,
so `call_at` fires up to ~1 ms late; keepalived's timers are timerfds. The
master-down timer decides the failover time, so it gets the same precision:
an absolute CLOCK_MONOTONIC deadline (the clock of `loop.time()`) on a timerfd
watched with `add_reader`.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
from collections.abc import Callable

CLOCK_MONOTONIC = 1
TFD_NONBLOCK = 0o4000
TFD_CLOEXEC = 0o2000000
TFD_TIMER_ABSTIME = 1


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return result


class PreciseTimer:
    """Calls `callback(deadline)` at `deadline` (loop.time() seconds); re-arming replaces."""

    def __init__(self, loop: asyncio.AbstractEventLoop, callback: Callable[[float], None]):
        self._loop = loop
        self._callback = callback
        self._fd = _check(_libc.timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC))
        self._deadline: float | None = None
        loop.add_reader(self._fd, self._fired)

    def arm(self, deadline: float) -> None:
        if self._fd < 0:
            return
        self._deadline = deadline
        sec = int(deadline)
        nsec = max(1, int((deadline - sec) * 1e9))  # all zero would disarm
        spec = _Itimerspec(_Timespec(0, 0), _Timespec(sec, nsec))
        _check(_libc.timerfd_settime(self._fd, TFD_TIMER_ABSTIME, ctypes.byref(spec), None))

    def cancel(self) -> None:
        self._deadline = None
        if self._fd < 0:
            return
        spec = _Itimerspec(_Timespec(0, 0), _Timespec(0, 0))
        _check(_libc.timerfd_settime(self._fd, 0, ctypes.byref(spec), None))

    def _fired(self) -> None:
        try:
            os.read(self._fd, 8)
        except BlockingIOError:  # re-armed or cancelled after it expired: not ours
            return
        deadline, self._deadline = self._deadline, None
        if deadline is not None:
            self._callback(deadline)

    def close(self) -> None:
        if self._fd >= 0:
            self._loop.remove_reader(self._fd)
            os.close(self._fd)
            self._fd = -1
