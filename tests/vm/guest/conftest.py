"""Inside the guest: real IPVS, root, a private network stack."""

from __future__ import annotations

import os

import pytest


def pytest_configure(config: pytest.Config) -> None:
    if os.environ.get("LVSMON_VM") != "1":  # pragma: no cover - guarded by ../conftest.py
        raise pytest.UsageError(
            "tests/vm/guest runs only inside the VM: see tests/vm/test_guest_suite.py"
        )
