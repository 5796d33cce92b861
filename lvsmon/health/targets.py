"""The config's virtual servers -> the monitor's targets.

Typed against small Protocols rather than lvsmon.model's classes, so this
module states exactly what it reads: a virtual server's name, key and
slow_start, and each real server's key, weight and (already merged)
health_check. A real server without a check is not a target: always in service.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

from lvsmon.health.monitor import Target
from lvsmon.model import DestKey, ServiceKey
from lvsmon.model.health import HealthCheck


class CheckedRealServer(Protocol):
    @property
    def key(self) -> DestKey: ...
    @property
    def weight(self) -> int: ...
    @property
    def health_check(self) -> HealthCheck | None: ...


class CheckedVirtualServer(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def key(self) -> ServiceKey: ...
    @property
    def slow_start(self) -> float: ...
    @property
    def real_servers(self) -> Sequence[CheckedRealServer]: ...


def targets_of(services: Iterable[CheckedVirtualServer]) -> list[Target]:
    return [
        Target(vs.key, rs.key, rs.health_check, vs.name, rs.weight, vs.slow_start)
        for vs in services
        for rs in vs.real_servers
        if rs.health_check is not None
    ]
