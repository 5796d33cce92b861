"""The rise/fall state machine of one probe. Pure: no I/O, no clock reads.

    step(state, result, now, rise=, fall=) -> (state, transition | None)

- A new probe starts `up` and unsettled: its first result decides at once (a
  server that fails its very first check is not given fall-1 more intervals
  of traffic; a healthy one is not held back for rise intervals).
- Settled and up: `fall` consecutive failures -> down.
- Settled and down: `rise` consecutive successes -> up.
- A result that agrees with the verdict resets the streak.
- `since` is the time of the last transition; slow start ramps from it.
- `weight` is the dynamic weight of the last good result (exec checks).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from lvsmon.model.health import Reason, Result

NEVER = float("-inf")


@dataclass(frozen=True, slots=True)
class CheckState:
    up: bool = True
    settled: bool = False
    streak: int = 0  # consecutive results that disagree with `up`
    since: float = NEVER  # when `up` last changed; NEVER = no transition yet
    weight: int | None = None  # dynamic weight from the last good result
    reason: Reason | None = None  # of the last failure
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Transition:
    up: bool
    at: float
    reason: Reason | None  # None when coming up
    why: str  # one line for the log: "3 consecutive failures: refused (...)"


def inherited(previous: CheckState) -> CheckState:
    """The state a replacement probe starts from (its check changed on reload):
    the verdict carries over, settled, with a fresh streak."""
    return CheckState(
        up=previous.up,
        settled=True,
        since=previous.since,
        weight=previous.weight if previous.up else None,
    )


def step(
    state: CheckState, result: Result, now: float, *, rise: int, fall: int
) -> tuple[CheckState, Transition | None]:
    if result.ok:
        weight = result.weight
        if state.up and state.settled and not state.streak and state.weight == weight:
            return state, None  # the steady state: no allocation (10k probes a second)
        if state.up:
            return replace(state, settled=True, streak=0, weight=weight), None
        streak = state.streak + 1
        if not state.settled or streak >= rise:
            why = "first check passed" if not state.settled else _count(streak, "success")
            new = CheckState(up=True, settled=True, since=now, weight=weight)
            return new, Transition(True, now, None, why)
        return replace(state, streak=streak), None
    failed = replace(state, reason=result.reason, detail=result.detail)
    if not state.up:
        return replace(failed, settled=True, streak=0), None
    streak = state.streak + 1
    if not state.settled or streak >= fall:
        what = "first check failed" if not state.settled else _count(streak, "failure")
        reason = result.reason.value if result.reason else "failed"
        why = f"{what}: {reason}" + (f" ({result.detail})" if result.detail else "")
        new = CheckState(
            up=False, settled=True, since=now, reason=result.reason, detail=result.detail
        )
        return new, Transition(False, now, result.reason, why)
    return replace(failed, streak=streak), None


def _count(n: int, what: str) -> str:
    if n == 1:
        return f"1 {what}"
    plural = "successes" if what == "success" else f"{what}s"
    return f"{n} consecutive {plural}"


@dataclass(frozen=True, slots=True)
class HealthDetail:
    """One target's verdict and last failure, for the status page (HealthMonitor.details)."""

    check: str  # the check type
    up: bool
    since: float | None  # Unix time of the last transition (None: none yet)
    last_failure_reason: str  # "" until a check has failed
    last_failure_detail: str
    last_failure_at: float | None  # Unix time
    failures: int  # failed checks since the probe started
