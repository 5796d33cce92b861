"""What the section readers have read so far, for the readers and checks that follow."""

from __future__ import annotations

from typing import Any, TypeVar

from lvsmon.configkit import Problem
from lvsmon.dataplane import registry
from lvsmon.model import DaemonSettings, VirtualServer
from lvsmon.model.capabilities import Capabilities
from lvsmon.model.failover import FailoverGroup

T = TypeVar("T")


class Readout:
    """The parsed document, the problems found so far, and each Config field once read."""

    def __init__(
        self, doc: dict[str, Any], problems: list[Problem], caps: Capabilities | None = None
    ):
        self.doc = doc
        self.problems = problems
        self.values: dict[str, object] = {}
        self._caps = caps

    def get(self, field: str, kind: type[T]) -> T:
        value = self.values.get(field)
        if not isinstance(value, kind):
            raise LookupError(f"{field} is read after the readers that need it")
        return value

    def capabilities(self) -> Capabilities:
        """Of the configured data plane (given by the caller, or probed on this host)."""
        if self._caps is None:
            self._caps = registry.capabilities_of(self.get("daemon", DaemonSettings).dataplane)
        return self._caps

    def virtual_servers(self) -> tuple[VirtualServer, ...]:
        return self.get("virtual_servers", tuple)

    def failover_groups(self) -> tuple[FailoverGroup, ...]:
        return self.get("failover_groups", tuple)
