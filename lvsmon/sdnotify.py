"""systemd's notify protocol (sd_notify(3)), hand-written: one datagram per state.

    READY=1                       the table is programmed, /metrics answers
    RELOADING=1 MONOTONIC_USEC=   a SIGHUP reload starts (READY=1 again when done)
    STOPPING=1                    shutdown begins (drain, VRRP handover)
    WATCHDOG=1                    from the main loop, every half of WatchdogSec
    STATUS=...                    one line for `systemctl status`

$NOTIFY_SOCKET names an AF_UNIX datagram socket ('@' = the abstract namespace);
$WATCHDOG_USEC (and $WATCHDOG_PID, when set, naming this process) turn the
heartbeat on. Without $NOTIFY_SOCKET every call does nothing. A failed send is
never an error: the service must keep balancing whatever systemd does.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping

log = logging.getLogger("lvsmon.sdnotify")


class Notifier:
    def __init__(self, environ: Mapping[str, str] | None = None):
        env = os.environ if environ is None else environ
        path = env.get("NOTIFY_SOCKET", "")
        self.address = "\0" + path[1:] if path.startswith("@") else path
        self.watchdog_interval = _watchdog_interval(env)
        if environ is None:  # children (VRRP process, exec checks, hooks) must not notify
            for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
                os.environ.pop(name, None)
        self._last_ping = 0.0
        self._sock: socket.socket | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    def send(self, *fields: str) -> bool:
        if not self.address:
            return False
        if self._sock is None:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.setblocking(False)
        try:
            self._sock.sendto("\n".join(fields).encode(), self.address)
        except OSError as exc:
            log.debug("sd_notify failed", extra={"fields": {"error": str(exc)}})
            return False
        return True

    def ready(self, status: str = "") -> None:
        self.send("READY=1", *([f"STATUS={status}"] if status else []))

    def reloading(self) -> None:
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.send("RELOADING=1", f"MONOTONIC_USEC={usec}", "STATUS=reloading")

    def stopping(self) -> None:
        self.send("STOPPING=1", "STATUS=stopping")

    def heartbeat(self) -> None:
        """WATCHDOG=1 when half the watchdog period has passed since the last one."""
        if self.watchdog_interval is None:
            return
        now = time.monotonic()
        if now - self._last_ping >= self.watchdog_interval:
            self._last_ping = now
            self.send("WATCHDOG=1")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _watchdog_interval(env: Mapping[str, str]) -> float | None:
    """Half of $WATCHDOG_USEC in seconds (sd_watchdog_enabled's advice), or None."""
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    pid = env.get("WATCHDOG_PID", "")
    if usec <= 0 or (pid and pid != str(os.getpid())):
        return None
    return usec / 2e6
