"""desired vs. actual -> the smallest list of operations, keyed by identity.

Pure. A data plane applies the operations in order; `apply_ops` is the same
semantics on plain tables, used by the tests' properties and by fakes.

Drain, don't cut: a real server that is no longer desired but still has
connections (active + inactive) is set to weight 0 and left in place; it is
deleted by a later reconcile once its connections reach zero. UDP has no
connection state worth waiting for, so UDP real servers are deleted at once.
A virtual server that is no longer desired drains the same way: all its real
servers go to weight 0 and the service is deleted when none has connections.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from lvsmon.model import DestKey, RealServer, ServiceKey, VirtualServer

Table = Mapping[ServiceKey, VirtualServer]
# active + inactive connections of a real server, as the data plane counts them
InUse = Callable[[ServiceKey, DestKey], int]


@dataclass(frozen=True, slots=True)
class AddService:
    service: VirtualServer  # attributes only; its real servers follow as AddDest

    def __str__(self) -> str:
        return f"add virtual server {self.service.key} ({self.service.name})"


@dataclass(frozen=True, slots=True)
class EditService:
    service: VirtualServer  # attributes only

    def __str__(self) -> str:
        return f"edit virtual server {self.service.key} ({self.service.name})"


@dataclass(frozen=True, slots=True)
class DeleteService:
    key: ServiceKey

    def __str__(self) -> str:
        return f"delete virtual server {self.key}"


@dataclass(frozen=True, slots=True)
class AddDest:
    service: ServiceKey
    dest: RealServer

    def __str__(self) -> str:
        return f"add real server {self.dest.label} weight {self.dest.weight} to {self.service}"


@dataclass(frozen=True, slots=True)
class EditDest:
    service: ServiceKey
    dest: RealServer

    def __str__(self) -> str:
        return f"edit real server {self.dest.label} weight {self.dest.weight} in {self.service}"


@dataclass(frozen=True, slots=True)
class DeleteDest:
    service: ServiceKey
    key: DestKey

    def __str__(self) -> str:
        return f"delete real server {self.key} from {self.service}"


Op = AddService | EditService | DeleteService | AddDest | EditDest | DeleteDest


def op_key(op: Op) -> ServiceKey:
    """The virtual server an operation is about."""
    match op:
        case AddService(vs) | EditService(vs):
            return vs.key
        case DeleteService(key):
            return key
        case AddDest(key, _) | EditDest(key, _) | DeleteDest(key, _):
            return key
    raise AssertionError(op)


def no_connections(service: ServiceKey, dest: DestKey) -> int:
    return 0


def reconcile(desired: Table, actual: Table, in_use: InUse = no_connections) -> list[Op]:
    """Operations that turn `actual` into `desired`, draining what goes away."""
    ops: list[Op] = []
    for key, want in desired.items():
        have = actual.get(key)
        if have is None:
            ops.append(AddService(want.attributes()))
            ops.extend(AddDest(key, rs) for rs in want.real_servers)
            continue
        if want.attributes() != have.attributes():
            ops.append(EditService(want.attributes()))
        ops.extend(_dest_ops(key, want, have, in_use))
    for key, have in actual.items():
        if key not in desired:
            ops.extend(_drain_service(key, have, in_use))
    return ops


def _dest_ops(key: ServiceKey, want: VirtualServer, have: VirtualServer, in_use: InUse) -> list[Op]:
    ops: list[Op] = []
    wanted = {rs.key: rs for rs in want.real_servers}
    present = {rs.key: rs for rs in have.real_servers}
    # deletes first: frees capacity (and, in IPVS, upper-threshold slots) before adds
    for dkey, rs in present.items():
        if dkey not in wanted:
            ops.extend(_drain_dest(key, rs, in_use))
    for dkey, rs in wanted.items():
        old = present.get(dkey)
        if old is None:
            ops.append(AddDest(key, rs))
        elif old != rs:
            ops.append(EditDest(key, rs))
    return ops


def _drain_dest(key: ServiceKey, rs: RealServer, in_use: InUse) -> list[Op]:
    if key.protocol == "udp" or in_use(key, rs.key) == 0:
        return [DeleteDest(key, rs.key)]
    if rs.weight != 0:
        return [EditDest(key, dataclasses.replace(rs, weight=0))]
    return []  # already draining


def _drain_service(key: ServiceKey, have: VirtualServer, in_use: InUse) -> list[Op]:
    busy = key.protocol != "udp" and any(in_use(key, rs.key) for rs in have.real_servers)
    if not busy:
        return [DeleteService(key)]
    ops: list[Op] = []
    for rs in have.real_servers:
        ops.extend(_drain_dest(key, rs, in_use))
    return ops


def apply_ops(table: Table, ops: list[Op]) -> dict[ServiceKey, VirtualServer]:
    """The effect of `ops` on a plain table (what every data plane must also do)."""
    out = dict(table)
    for op in ops:
        match op:
            case AddService(service) | EditService(service):
                reals = out[service.key].real_servers if service.key in out else ()
                out[service.key] = dataclasses.replace(service, real_servers=reals)
            case DeleteService(key):
                del out[key]
            case AddDest(skey, dest) | EditDest(skey, dest):
                vs = out[skey]
                if isinstance(op, EditDest):  # an edit keeps the server's list position
                    dests = [dest if rs.key == dest.key else rs for rs in vs.real_servers]
                else:
                    dests = [*(rs for rs in vs.real_servers if rs.key != dest.key), dest]
                out[skey] = dataclasses.replace(vs, real_servers=tuple(dests))
            case DeleteDest(skey, dkey):
                vs = out[skey]
                kept = tuple(rs for rs in vs.real_servers if rs.key != dkey)
                out[skey] = dataclasses.replace(vs, real_servers=kept)
    return out
