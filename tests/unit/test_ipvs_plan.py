"""Reconcile operations -> IPVS netlink batches: ordering, safety rules, error wording."""

from __future__ import annotations

import asyncio
import errno
import ipaddress

from lvsmon.dataplane import ipvs_codec as c
from lvsmon.dataplane.ipvs_plan import (
    FOREIGN,
    NOT_ATTEMPTED,
    describe,
    execute,
    kernel_attributes,
    summary,
)
from lvsmon.model import DestKey, RealServer, ServiceKey, VirtualServer
from lvsmon.reconcile import (
    AddDest,
    AddService,
    DeleteDest,
    DeleteService,
    EditDest,
    EditService,
    Op,
    reconcile,
)

ip = ipaddress.ip_address


def vs(n: int, reals: int = 3, scheduler: str = "wlc") -> VirtualServer:
    return VirtualServer(
        f"vs{n}",
        ip(f"192.0.2.{n}"),
        80,
        scheduler=scheduler,
        real_servers=tuple(
            RealServer(ip(f"10.{n}.{i // 250}.{i % 250}"), 8080, i) for i in range(1, reals + 1)
        ),
    )


class FakeKernel:
    """Records batches; answers each request with the errno the test scripted."""

    def __init__(self, fail: dict[int, int] | None = None):
        self.batches: list[list[tuple[int, bytes]]] = []
        self.fail = fail or {}  # request number (0-based, across batches) -> errno
        self.seen = 0

    async def send(self, batch: list[tuple[int, bytes]]) -> list[int]:
        self.batches.append(list(batch))
        codes = [self.fail.get(self.seen + i, 0) for i in range(len(batch))]
        self.seen += len(batch)
        return codes


def identity(key: ServiceKey) -> bytes:
    return c.identity_attrs(key, 4)


def run(ops: list[Op], kernel: FakeKernel, **kw: object) -> list[int]:
    outcome = asyncio.run(execute(ops, kernel.send, identity, **kw))  # type: ignore[arg-type]
    return outcome.codes


def test_full_sync_batches_end_after_each_new_virtual_server() -> None:
    ops = reconcile({v.key: v for v in (vs(1), vs(2))}, {})
    kernel = FakeKernel()
    assert run(ops, kernel) == [0] * 8
    # a new service is confirmed before its real servers are sent (never into a foreign one)
    assert [[cmd for cmd, _ in b] for b in kernel.batches] == [
        [c.CMD_NEW_SERVICE],
        [c.CMD_NEW_DEST] * 3 + [c.CMD_NEW_SERVICE],
        [c.CMD_NEW_DEST] * 3,
    ]


def test_many_edits_share_few_sends() -> None:
    old = vs(1, reals=600)
    new = VirtualServer(
        old.name,
        old.address,
        old.port,
        scheduler="wlc",
        real_servers=tuple(
            RealServer(rs.address, rs.port, rs.weight + 1) for rs in old.real_servers
        ),
    )
    ops = reconcile({new.key: new}, {old.key: old})
    kernel = FakeKernel()
    outcome = asyncio.run(execute(ops, kernel.send, identity))
    assert outcome.requests == 600 and outcome.batches == 3  # 256 per send
    assert all(cmd == c.CMD_SET_DEST for b in kernel.batches for cmd, _ in b)


def test_a_failed_new_service_skips_its_real_servers_and_the_rest_goes_on() -> None:
    ops = reconcile({v.key: v for v in (vs(1), vs(2))}, {})
    kernel = FakeKernel(fail={0: errno.ENOENT})  # e.g. scheduler module missing
    codes = run(ops, kernel)
    assert codes == [errno.ENOENT] + [NOT_ATTEMPTED] * 3 + [0] * 4
    assert sum(len(b) for b in kernel.batches) == 5  # vs1's dests were never sent


def test_a_foreign_identity_is_refused_without_sending() -> None:
    ops = reconcile({v.key: v for v in (vs(1), vs(2))}, {})
    kernel = FakeKernel()
    codes = run(ops, kernel, foreign={vs(1).key})
    assert codes == [FOREIGN] + [NOT_ATTEMPTED] * 3 + [0] * 4
    sent = [cmd for b in kernel.batches for cmd, _ in b]
    assert sent == [c.CMD_NEW_SERVICE] + [c.CMD_NEW_DEST] * 3


def test_deleting_what_is_already_gone_counts_as_done() -> None:
    key = vs(1).key
    ops: list[Op] = [DeleteDest(key, DestKey("10.1.0.1", 8080)), DeleteService(key)]
    assert run(ops, FakeKernel(fail={0: errno.ENOENT, 1: errno.ESRCH})) == [0, 0]
    # ... but editing what is gone is a failure (the next sync re-reads and re-adds)
    edit: list[Op] = [EditDest(key, RealServer(ip("10.1.0.1"), 8080, 2))]
    assert run(edit, FakeKernel(fail={0: errno.ENOENT})) == [errno.ENOENT]


def test_error_messages_name_the_operation_and_the_meaning() -> None:
    web = vs(1, scheduler="twos").attributes()
    assert describe(AddService(web), errno.ENOENT) == (
        "add virtual server TCP 192.0.2.1:80 (vs1): ENOENT (the running kernel has no IPVS "
        'scheduler "twos" (module ip_vs_twos missing))'
    )
    assert "lvsmon did not create it" in describe(AddService(web), FOREIGN)
    assert "adopt" in describe(AddService(web), FOREIGN)
    assert describe(EditService(web), errno.EPERM).endswith(
        "EPERM (not permitted: lvsmon needs CAP_NET_ADMIN (run it as root))"
    )
    add = AddDest(web.key, RealServer(ip("10.0.0.1"), 80, 1))
    assert describe(add, errno.EEXIST) == (
        "add real server 10.0.0.1:80 weight 1 to TCP 192.0.2.1:80: EEXIST "
        "(the real server is already in this virtual server)"
    )
    assert "its virtual server is not in the kernel" in describe(add, errno.ESRCH)


def test_summary_says_how_much_was_applied() -> None:
    ops = reconcile({v.key: v for v in (vs(1), vs(2))}, {})
    outcome = asyncio.run(execute(ops, FakeKernel(fail={0: errno.EEXIST}).send, identity))
    text = summary(ops, outcome)
    assert text.startswith("add virtual server TCP 192.0.2.1:80 (vs1): EEXIST")
    assert text.endswith(
        "; 3 more operations failed (4 of 8 operations applied; the rest is retried on the "
        "next sync)"
    )


def test_kernel_attributes_ignore_what_ipvs_does_not_store() -> None:
    a = vs(1).attributes()
    b = VirtualServer(
        "renamed", a.address, a.port, scheduler="wlc", quiesce=True, persistence_timeout=0.0
    )
    assert kernel_attributes(a) == kernel_attributes(b)
    c1 = VirtualServer("p", a.address, a.port, persistence_timeout=1.5)
    assert kernel_attributes(c1)[2] == 2
