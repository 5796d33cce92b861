"""Host side of the VM tier: one guest boot runs every test in tests/vm/guest.

The guest has Debian's stock kernel with IPVS (the host kernel has none), the
host's root filesystem read-only with a tmpfs overlay, and this checkout's
venv. The guest's pytest output is shown whole when anything fails.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.vm import vmharness

REPO = Path(__file__).resolve().parents[2]
GUEST_TIMEOUT = 2400.0  # TCG is slow: Python imports alone take seconds in the guest


@pytest.mark.vm
@pytest.mark.timeout(GUEST_TIMEOUT + 300)
def test_guest_suite() -> None:
    guest_tests = sorted(p.name for p in (REPO / "tests/vm/guest").glob("test_*.py"))
    assert guest_tests, "tests/vm/guest has no test modules"
    assets = vmharness.ensure_assets(progress=lambda line: print(f"vm: {line}", flush=True))
    result = vmharness.run_in_vm(
        [
            sys.executable,
            "-m",
            "pytest",
            "tests/vm/guest",
            "-p",
            "no:cacheprovider",
            "-q",
            "-ra",
            "--timeout=900",
        ],
        cwd=str(REPO),
        timeout=GUEST_TIMEOUT,
        assets=assets,
    )
    print(result.output)
    print(f"vm: boot {result.boot_seconds:.1f}s, total {result.total_seconds:.1f}s")
    assert result.returncode == 0, f"guest pytest exited {result.returncode}:\n{result.output}"
