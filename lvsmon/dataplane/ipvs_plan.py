"""Reconcile operations -> batches of IPVS netlink requests, and what failures mean. Pure.

`execute` sends the requests through an injected `send` (the netlink socket in
production, a fake in unit tests). Two rules keep a batch safe:
- a batch ends after each new virtual server, so its real servers are only sent
  once the kernel has accepted it: they must never land in a service that
  already existed and belongs to someone else;
- operations on an identity the data plane knows to be foreign are refused
  without being sent.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Awaitable, Callable, Container, Sequence
from dataclasses import dataclass, field

from lvsmon.dataplane import ipvs_codec as c
from lvsmon.model import ServiceKey, VirtualServer
from lvsmon.reconcile import (
    AddDest,
    AddService,
    DeleteDest,
    DeleteService,
    EditDest,
    EditService,
    Op,
    op_key,
)

BATCH_REQUESTS = 256
BATCH_BYTES = 60_000  # well under the socket's send buffer (one skb per send)

# errno used for operations refused before sending (a foreign entry at that identity)
FOREIGN = -1
# ... and for operations not attempted because the one they depend on failed
NOT_ATTEMPTED = -2

Send = Callable[[list[tuple[int, bytes]]], Awaitable[list[int]]]


def encode(op: Op, identity: Callable[[ServiceKey], bytes]) -> tuple[int, bytes]:
    """(IPVS command, attributes) for one operation. ValueError for what IPVS cannot hold."""
    match op:
        case AddService(vs):
            return c.CMD_NEW_SERVICE, c.service_attrs(vs)
        case EditService(vs):
            return c.CMD_SET_SERVICE, c.service_attrs(vs)
        case DeleteService(key):
            return c.CMD_DEL_SERVICE, identity(key)
        case AddDest(key, rs):
            return c.CMD_NEW_DEST, identity(key) + c.dest_attrs(rs)
        case EditDest(key, rs):
            return c.CMD_SET_DEST, identity(key) + c.dest_attrs(rs)
        case DeleteDest(key, dkey):
            return c.CMD_DEL_DEST, identity(key) + c.dest_key_attrs(dkey.address, dkey.port)
    raise AssertionError(op)


def kernel_attributes(vs: VirtualServer) -> tuple[str, int, int, int]:
    """What the kernel stores of a virtual server's attributes: edits compare these."""
    return (
        vs.scheduler,
        c.scheduler_flag_bits(vs.scheduler, vs.scheduler_flags),
        c.persistence_seconds(vs.persistence_timeout),
        vs.persistence_netmask,
    )


def already_done(op: Op, code: int) -> bool:
    """Deleting what is already gone is the outcome asked for."""
    return (isinstance(op, DeleteService) and code == errno.ESRCH) or (
        isinstance(op, DeleteDest) and code == errno.ENOENT
    )


_COMMON = {
    errno.EPERM: "not permitted: lvsmon needs CAP_NET_ADMIN (run it as root)",
    errno.ENOBUFS: "the acknowledgement was lost (netlink buffer overflow): outcome unknown, "
    "the next sync re-reads the table",
    errno.ETIMEDOUT: "the kernel did not answer",
    errno.EAFNOSUPPORT: "the kernel's IPVS has no IPv6 support",
    errno.ENOMEM: "the kernel is out of memory",
}


def describe(op: Op, code: int) -> str:
    """`<op>: <ERRNO> (<what it means for this operation>)` — the message operators see."""
    if code == FOREIGN:
        return (
            f"{op}: EEXIST (a virtual server with this identity exists in the kernel and "
            "lvsmon did not create it: set daemon.ipvs.adopt = true (or list it) to take it "
            "over, or delete it with ipvsadm -D)"
        )
    if code == NOT_ATTEMPTED:
        return f"{op}: not attempted (its virtual server could not be created)"
    name = errno.errorcode.get(code, f"errno {code}")
    return f"{op}: {name} ({_meaning(op, code)})"


def _meaning(op: Op, code: int) -> str:
    if code in _COMMON:
        return _COMMON[code]
    match op:
        case AddService(vs) | EditService(vs):
            if code == errno.ENOENT:
                return (
                    f'the running kernel has no IPVS scheduler "{vs.scheduler}" '
                    f"(module ip_vs_{vs.scheduler} missing)"
                )
            if code == errno.EEXIST:
                return (
                    "a virtual server with this identity already exists in the kernel, "
                    "created by another tool: set daemon.ipvs.adopt to take it over"
                )
            if code == errno.ESRCH:
                return "the virtual server is not in the kernel (deleted behind lvsmon's back?)"
            if code == errno.EINVAL:
                return "the kernel rejected its attributes (scheduler flags, netmask or timeout)"
        case DeleteService():
            if code == errno.ESRCH:
                return "the virtual server is not in the kernel"
        case AddDest() | EditDest() | DeleteDest():
            if code == errno.ESRCH:
                return "its virtual server is not in the kernel"
            if code == errno.EEXIST:
                return "the real server is already in this virtual server"
            if code == errno.ENOENT:
                return "the real server is not in this virtual server"
            if code == errno.ERANGE:
                return "weight or thresholds out of range"
            if code == errno.EINVAL:
                return "the kernel rejected its attributes"
    return os.strerror(code)


@dataclass(slots=True)
class Outcome:
    """Per operation: 0 done, an errno, FOREIGN or NOT_ATTEMPTED."""

    codes: list[int]
    requests: int = 0  # netlink requests sent
    batches: int = 0  # sends (syscalls) used
    failures: list[int] = field(default_factory=list)  # indexes into the ops

    @property
    def applied(self) -> int:
        return sum(1 for code in self.codes if code == 0)


async def execute(
    ops: Sequence[Op],
    send: Send,
    identity: Callable[[ServiceKey], bytes],
    foreign: Container[ServiceKey] = (),
    *,
    batch_requests: int = BATCH_REQUESTS,
    batch_bytes: int = BATCH_BYTES,
) -> Outcome:
    out = Outcome(codes=[0] * len(ops))
    blocked: set[ServiceKey] = set()  # a new virtual server that failed: skip its dests
    pending: list[tuple[int, bytes]] = []
    indexes: list[int] = []
    size = 0

    async def flush() -> None:
        nonlocal size
        if not pending:
            return
        codes = await send(pending)
        out.requests += len(pending)
        out.batches += 1
        for index, code in zip(indexes, codes, strict=True):
            if code and not already_done(ops[index], code):
                out.codes[index] = code
                if isinstance(ops[index], AddService):
                    blocked.add(op_key(ops[index]))
        pending.clear()
        indexes.clear()
        size = 0

    for index, op in enumerate(ops):
        key = op_key(op)
        if key in blocked:
            out.codes[index] = NOT_ATTEMPTED
            continue
        if key in foreign:
            out.codes[index] = FOREIGN
            blocked.add(key)
            continue
        try:
            request = encode(op, identity)
        except ValueError:
            out.codes[index] = errno.EINVAL
            continue
        pending.append(request)
        indexes.append(index)
        size += len(request[1]) + c.HEADERS
        if isinstance(op, AddService) or len(pending) >= batch_requests or size >= batch_bytes:
            await flush()
    await flush()
    out.failures = [i for i, code in enumerate(out.codes) if code]
    return out


def summary(ops: Sequence[Op], outcome: Outcome) -> str:
    """One message for a partly failed apply: the first failure, then how much was done."""
    first = describe(ops[outcome.failures[0]], outcome.codes[outcome.failures[0]])
    more = len(outcome.failures) - 1
    tail = f"; {more} more operation{'s' if more != 1 else ''} failed" if more else ""
    return (
        f"{first}{tail} ({outcome.applied} of {len(ops)} operations applied; "
        "the rest is retried on the next sync)"
    )
