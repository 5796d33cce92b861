"""Every timer runs on the monotonic clock: the wall clock (time.time(), datetime.now())
is read only where a timestamp is reported. A new call site must be added here with
the reason it cannot move a timer. tests/integration/test_wall_clock_jump.py jumps
the wall clock under the running daemon."""

from __future__ import annotations

import re
import socket
import struct
import time
from pathlib import Path

from lvsmon.ha.netio import SO_TIMESTAMPNS, _arrival
from lvsmon.model import DestKey, ServiceKey
from lvsmon.statuspage.admin import Action, AdminState, override_for

PACKAGE = Path(__file__).resolve().parents[2] / "lvsmon"
WALL_CLOCK = re.compile(r"\btime\.time(_ns)?\(\)|\bdatetime\.(now|utcnow)\(|\bdate\.today\(")
# (file, what the line holds): reporting only
ALLOWED = {
    ("ha/netio.py", "age = time.time()"),  # kernel receive stamp -> monotonic, guarded
    ("ha/group.py", "self.since = time.time()"),  # status: in this state since
    ("ha/group.py", "self.peer_last"),  # lvsmon_ha_peer_last_advert_timestamp_seconds
    ("ha/group.py", "_auth_counter = time.time_ns()"),  # replay counter start, not a timer
    ("daemon.py", "self.reload_ok_at = time.time()"),  # ..._reload_success_timestamp_seconds
    ("daemon.py", "ReloadRecord(time.time()"),  # the status page's list of reloads
    ("health/monitor.py", "wall = time.time()"),  # the status page: since when a verdict holds
    ("health/monitor.py", "probe.last_failure"),  # the status page: when a check last failed
    ("statuspage/page.py", "now=time.time(),"),  # the page's clock, for "3 s ago"
    ("statuspage/page.py", "override_for(action, user, time.time(), time.monotonic())"),
    ("status.py", "render(groups, time.time())"),  # `lvsmon status`: "since ... ago"
    ("status.py", "render_bgp(announcer, view.bgp or [], time.time())"),  # BGP phase: since
    # lvsmon_bgp_drain_state_since_timestamp_seconds (the drain period waits on the loop)
    ("bgp/announcer.py", "self.phase_since = time.time()"),
    ("bgp/announcer.py", "self.phase, self.phase_since = phase, time.time()"),
}


def test_the_wall_clock_is_read_only_for_timestamps() -> None:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for line in path.read_text().splitlines():
            if WALL_CLOCK.search(line) and not line.lstrip().startswith("#"):
                rel = str(path.relative_to(PACKAGE))
                if not any(rel == f and what in line for f, what in ALLOWED):
                    found.append(f"{rel}: {line.strip()}")
    assert found == [], "wall clock read outside the reporting allow-list:\n" + "\n".join(found)


def test_an_advert_stamped_an_hour_off_the_wall_clock_arrives_now() -> None:
    """The VRRP process turns the kernel's (wall clock) receive stamp into monotonic
    time; after a wall clock step the two disagree, and the stamp is ignored rather
    than moving the master-down timer by an hour. (libfaketime cannot run the VRRP
    process: it breaks timerfd_settime on CLOCK_MONOTONIC.)"""
    for step in (3600.0, -3600.0):
        stamp = time.time() + step
        anc = [(socket.SOL_SOCKET, SO_TIMESTAMPNS, struct.pack("@qq", int(stamp), 0))]
        before = time.monotonic()
        assert before <= _arrival(anc) <= time.monotonic()
    fresh = time.time_ns() - 200_000_000  # an ordinary stamp: 200 ms ago is honoured
    # (seconds and nanoseconds: whole seconds alone made it up to 1.2 s old, out of range)
    anc = [(socket.SOL_SOCKET, SO_TIMESTAMPNS, struct.pack("@qq", *divmod(fresh, 10**9)))]
    assert _arrival(anc) < time.monotonic() - 0.1


def test_a_temporary_weight_lapses_on_the_monotonic_clock() -> None:
    """Found by the allow-list above: the status page's temporary weights expired on the
    wall clock, so a step of the clock ended them early or kept them for hours."""
    key = (ServiceKey("tcp", "192.0.2.1", 80), DestKey("10.0.0.2", 80))
    state = AdminState()
    wall, mono = 1.7e9, 50.0
    state.set(key, override_for(Action("weight", "web", "10.0.0.2:80", 7, 60.0), "a", wall, mono))
    override = state.get(key)
    assert override is not None and override.until == wall + 60  # shown in Unix time
    assert state.expire(mono + 59) == []  # whatever the wall clock says now
    assert state.expire(mono + 60) == [key]
