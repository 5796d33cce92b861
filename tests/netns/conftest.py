"""netns tier: root, network namespaces, keepalived as a peer. Missing prerequisites
skip on a developer machine (one line why) and fail in CI (CI=true)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

from tests.netns.topology import Topology

TOOLS = ("ip", "nft", "keepalived", "ping")


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    absent = [t for t in TOOLS if shutil.which(t) is None]
    if absent:
        return f"needs {', '.join(absent)} (scripts/install-test-deps)"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = _missing()
    for item in items:
        if "tests/netns/" not in str(item.fspath):
            continue
        item.add_marker(pytest.mark.root)
        if reason and os.environ.get("CI") != "true":
            item.add_marker(pytest.mark.skip(reason=f"netns tier {reason}"))


@pytest.fixture
def topo() -> Iterator[Topology]:
    reason = _missing()
    if reason:
        pytest.fail(f"netns tier {reason}")  # reached only in CI: a missing prerequisite fails
    with Topology() as t:
        yield t
