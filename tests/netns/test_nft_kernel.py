"""Plan.apply's incremental transactions against the real kernel: after every random
step the table must equal the one a full program builds (tests/netns/nft_kernel_check.py,
run in a namespace of its own)."""

from __future__ import annotations

import os
import secrets

import pytest

from tests.netns.topology import HERE, PYTHON, run


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_incremental_transactions_leave_what_a_full_program_builds(seed: int) -> None:
    ns = f"lvnk{os.getpid() % 10000}{secrets.token_hex(2)}"
    run("ip", "netns", "add", ns)
    try:
        check = [PYTHON, str(HERE / "nft_kernel_check.py"), str(seed), "25"]
        assert run("ip", "netns", "exec", ns, *check).strip() == "ok 25"
    finally:
        run("ip", "netns", "del", ns, check=False)
