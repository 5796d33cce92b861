"""Slow start: a returning real server's weight ramps up instead of jumping.

Pure. `slow_start_fraction(since, now, window)`: linear from 0 to 1 over
`window` seconds after the server came back at `since` (HAProxy's slowstart;
IPVS has none). lvsmon.weights.effective multiplies it into the weight and
rounds once: never to 0 while the server is up (it must receive some work to
show it copes), and a configured 0 stays 0 (the operator drained it).

Why it matters: least-connection schedulers (lc, wlc, sed, nq) send every new
connection to the server with the fewest, so a server returning with none
would get all new connections until it caught up; with its weight low at
first, the schedulers' weighted overhead (connections / weight) shares the
load out gradually instead.
"""

from __future__ import annotations


def slow_start_fraction(since: float, now: float, window: float) -> float:
    """The ramp as a fraction, linear over `window` after the server came back at `since`."""
    if window <= 0 or now - since >= window:
        return 1.0
    return max(0.0, (now - since) / window)


def ramp_ends(since: float, window: float) -> float:
    """When the ramp reaches the goal (for a caller that wants to sync until then)."""
    return since + max(window, 0.0)
