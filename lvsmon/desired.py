"""What the data plane should hold: the config, adjusted by health verdicts.

Pure. Health (and later adaptive weights) never edit the config; they produce
per-real-server overrides that this function folds in, so a reload keeps them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from lvsmon.model import Config, DestKey, Forwarding, RealServer, ServiceKey, VirtualServer

# None = out of service (removed or quiesced, per the virtual server's `quiesce`),
# an int = the weight to program instead of the configured one.
Override = int | None
Overrides = Mapping[tuple[ServiceKey, DestKey], Override]


def desired_service(vs: VirtualServer, overrides: Overrides) -> VirtualServer:
    reals: list[RealServer] = []
    in_service = 0
    for rs in vs.real_servers:
        key = (vs.key, rs.key)
        if key not in overrides:
            reals.append(rs)
            in_service += 1
            continue
        weight = overrides[key]
        if weight is None:
            if vs.quiesce:  # keepalived's inhibit_on_failure: keep it, weight 0
                reals.append(dataclasses.replace(rs, weight=0))
            continue
        reals.append(dataclasses.replace(rs, weight=weight))
        in_service += 1
    if not in_service and vs.sorry_server is not None:
        # keepalived's sorry_server: takes the traffic while no real server is in service
        sorry = vs.sorry_server
        reals = [r for r in reals if r.key != DestKey(str(sorry.address), sorry.port)]
        reals.append(RealServer(sorry.address, sorry.port, 1, Forwarding.NAT))
    return dataclasses.replace(vs, real_servers=tuple(reals))


def desired_table(
    config: Config, overrides: Overrides | None = None
) -> dict[ServiceKey, VirtualServer]:
    return {vs.key: desired_service(vs, overrides or {}) for vs in config.virtual_servers}
