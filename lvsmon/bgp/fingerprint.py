"""A fingerprint of a virtual server's scheduling table, equal on every director that
would pick the same real server for every flow.

Maglev (`mh`), source (`sh`) and destination (`dh`) hashing give a flow the
same real server on any director only if their lookup tables are identical,
and those depend on the real servers, their weights and their list order
(the kernel keeps it newest first, so a server that flapped on one director
sits elsewhere in its list). The tables are computed with lvsmon.schedulers,
the kernel-exact implementations, from the table as programmed; other
schedulers have no table, so their fingerprint covers the programmed real
servers and weights. Exported as a gauge (48 bits: exact in a float), compared
across the fleet in PromQL.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache

from lvsmon import schedulers
from lvsmon.model import VirtualServer

HASHED = frozenset({"mh", "sh", "dh"})


def table_rows(vs: VirtualServer) -> list[str]:
    """The lookup table as real-server labels per slot (hash schedulers), or the real
    servers with weights in list order."""
    if vs.scheduler not in HASHED:
        return [f"{rs.label}*{rs.weight}" for rs in vs.real_servers]
    sched = schedulers.create(vs.scheduler, vs.scheduler_flags)
    dests = [schedulers.Dest(rs.address, rs.port, rs.weight) for rs in vs.real_servers]
    sched.update(dests)
    table = sched.table  # type: ignore[attr-defined]
    return [d.label if d is not None else "-" for d in table]


@lru_cache(maxsize=256)
def fingerprint(vs: VirtualServer) -> int:
    rows = [vs.scheduler, ",".join(sorted(vs.scheduler_flags)), *table_rows(vs)]
    digest = hashlib.sha256("\n".join(rows).encode()).digest()
    return int.from_bytes(digest[:6], "big")
