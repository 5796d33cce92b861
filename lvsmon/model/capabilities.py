"""What a data plane can honour, as a value: config validation rejects the rest up front.

Each data plane declares its own in lvsmon.dataplane.registry; `lvsmon check`, the
daemon and docs/dataplanes.md all read that one declaration.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Capabilities:
    name: str
    protocols: frozenset[str]
    forwarding: frozenset[str]
    fwmark: bool
    schedulers: frozenset[str]
    why: str  # one phrase appended to "not supported" errors
    scheduler_why: str = ""  # ... for schedulers, when it says more than `why`
    scheduler_flags: frozenset[str] | None = None  # None: every flag of the scheduler
    thresholds: bool = True  # upper/lower_threshold (per real server connection limits)
    persistence: bool = True
    ipv6: bool = True
    # Linux capabilities the daemon needs on this plane (the systemd unit's bounding set)
    privileges: frozenset[str] = frozenset()
