"""Slow start: a returning real server's weight ramps up instead of jumping.

Pure. `ramp_weight(goal, since, now, window)`: linear from 1 to `goal` over
`window` seconds after the server came back at `since` (HAProxy's slowstart;
IPVS has none). Weight 1 at the start, never 0: the server must receive some
work to show it copes. A goal of 0 stays 0 (the operator drained it).

Why it matters: least-connection schedulers (lc, wlc, sed, nq) send every new
connection to the server with the fewest, so a server returning with none
would get all new connections until it caught up; with its weight low at
first, the schedulers' weighted overhead (connections / weight) shares the
load out gradually instead.
"""

from __future__ import annotations

import math


def ramp_weight(goal: int, since: float, now: float, window: float) -> int:
    if goal <= 0:
        return goal
    elapsed = now - since
    if window <= 0 or elapsed >= window:
        return goal
    if elapsed <= 0:
        return 1
    return max(1, min(goal, math.ceil(goal * elapsed / window)))


def slow_start_fraction(since: float, now: float, window: float) -> float:
    """The ramp as a fraction, linear over `window` after the server came back at `since`."""
    if window <= 0 or now - since >= window:
        return 1.0
    return max(0.0, (now - since) / window)


def ramp_ends(since: float, window: float) -> float:
    """When the ramp reaches the goal (for a caller that wants to sync until then)."""
    return since + max(window, 0.0)
