"""Dest.refresh_overload() against ip_vs_bind_dest() / ip_vs_unbind_dest() (ip_vs_conn.c).

A connection entry bound to a server sets its overload flag once active +
inactive reaches the upper threshold; freeing one clears it only below the
lower threshold (conns < lower), or, without one, below 3/4 of the upper one
(conns * 4 < upper * 3). Found by the differential VM tests
(tests/vm/guest/test_schedulers_kernel.py, *-overload-hysteresis): lvsmon
used to clear it one connection early.
"""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest

from lvsmon.schedulers import Dest


def overloaded_at(upper: int, lower: int, conns: int) -> bool:
    """Fill the server to its upper threshold, then let entries go down to `conns`."""
    dest = Dest(IPv4Address("10.0.0.1"), 80, 1, upper, lower)
    for _ in range(upper):
        dest.active += 1
        dest.refresh_overload()
    assert dest.overloaded
    while dest.total_connections > conns:
        dest.active -= 1
        dest.refresh_overload()
    return dest.overloaded


@pytest.mark.parametrize(
    ("upper", "lower", "still", "cleared"),
    [(4, 0, 3, 2), (5, 0, 4, 3), (7, 0, 6, 5), (6, 2, 2, 1), (7, 3, 3, 2), (1, 0, 1, 0)],
)
def test_overload_clears_only_below_the_lower_mark(
    upper: int, lower: int, still: int, cleared: int
) -> None:
    assert overloaded_at(upper, lower, still)
    assert not overloaded_at(upper, lower, cleared)


def test_overload_hysteresis_matches_the_kernel_formula() -> None:
    for upper in range(1, 25):
        for lower in range(upper + 1):
            for conns in range(upper + 1):
                kernel = conns < lower if lower else conns * 4 < upper * 3
                assert overloaded_at(upper, lower, conns) is (not kernel), (upper, lower, conns)
