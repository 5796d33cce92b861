"""Incremental nft transactions against the real kernel (run in a fresh netns as root).

    python nft_kernel_check.py SEED STEPS

Random tables (every scheduler the plane accepts, persistence, fwmark, IPv6,
mixed ports, quiesced servers), and every other step only new weights, are
reconciled step after step into table `inc` through Plan.apply's commands
(element-only ones over netlink, as the plane sends them); after each step the
same plan is built
from nothing into table `ref` with Plan.full. The kernel must accept every
transaction, and both tables must list the same (handles aside): the diffs
leave exactly what a full program would. Prints "ok STEPS".
"""

from __future__ import annotations

import dataclasses
import functools
import ipaddress
import json
import random
import sys
from typing import Any

from lvsmon.dataplane.libnftables import Nft
from lvsmon.dataplane.nft_elements import ElementWriter, encode
from lvsmon.dataplane.nft_plan import Plan, document
from lvsmon.model import DestKey, NftSettings, Protocol, RealServer, ServiceKey, VirtualServer
from lvsmon.reconcile import reconcile

SCHEDULERS = ["rr", "wrr", "sh", "dh", "mh", "fo"]


def random_table(rng: random.Random) -> dict[ServiceKey, VirtualServer]:
    out = {}
    for i in range(rng.randint(0, 5)):
        fwmark = i + 1 if rng.random() < 0.2 else 0
        # a ServiceKey names an fwmark service without its family: keep each mark in one
        six = bool(fwmark % 2) if fwmark else rng.random() < 0.3
        sched = rng.choice(SCHEDULERS)
        flags = {"sh": ["sh-port", "sh-fallback"], "mh": ["mh-port"]}.get(sched, [])
        reals = []
        for j in rng.sample(range(1, 9), rng.randint(0, 5)):
            address = ipaddress.ip_address(f"fd02::{j}" if six else f"10.2.0.{j}")
            port = 0 if fwmark else rng.choice([8080, 8080, 8081])
            reals.append(RealServer(address, port, rng.choice([0, 1, 1, 2, 5])))
        vip = ipaddress.ip_address("fd01::100" if six else "10.1.0.100")
        vs = VirtualServer(
            f"vs{i}",
            vip,
            0 if fwmark else 9000 + i,
            # an fwmark service's kernel identity is (mark, family): keep its protocol too
            Protocol.TCP if fwmark else rng.choice([Protocol.TCP, Protocol.UDP]),
            fwmark=fwmark,
            scheduler=sched,
            scheduler_flags=frozenset(rng.sample(flags, rng.randint(0, len(flags)))),
            persistence_timeout=rng.choice([0.0, 0.0, 30.0, 60.0]),
            persistence_netmask=rng.choice([120, 128]) if six else rng.choice([24, 32]),
            real_servers=tuple(reals),
        )
        out[vs.key] = vs
    return out


def reweighted(
    table: dict[ServiceKey, VirtualServer], rng: random.Random
) -> dict[ServiceKey, VirtualServer]:
    """The same table with some real servers' weights moved (0 included)."""
    out = {}
    for key, vs in table.items():
        reals = tuple(
            dataclasses.replace(rs, weight=rng.choice([0, 1, 2, 3])) if rng.random() < 0.4 else rs
            for rs in vs.real_servers
        )
        out[key] = dataclasses.replace(vs, real_servers=reals)
    return out


def normalized(nft: Nft, table: str) -> list[str]:
    """The table's objects without handles; elements sorted, rules in chain order."""
    out = []
    rules: dict[str, list[Any]] = {}
    for item in nft.list(f"list table inet {table}"):
        ((kind, body),) = item.items()
        body = {k: v for k, v in body.items() if k not in ("handle", "table")}
        if kind == "table":
            continue
        if kind == "rule":
            rules.setdefault(body["chain"], []).append(body["expr"])
            continue
        if isinstance(body.get("elem"), list):
            body["elem"] = sorted(json.dumps(e, sort_keys=True) for e in body["elem"])
        out.append(json.dumps([kind, body], sort_keys=True))
    out += [json.dumps(["rules", chain, exprs], sort_keys=True) for chain, exprs in rules.items()]
    return sorted(out)


def _in_use(busy: int, service: ServiceKey, dest: DestKey) -> int:
    return busy


def main() -> None:
    seed, steps = int(sys.argv[1]), int(sys.argv[2])
    rng = random.Random(seed)
    nft = Nft()
    inc = Plan(NftSettings(table="inc"))
    inc, cmds = inc.full()
    nft.transaction(document(cmds))
    writer = ElementWriter()
    raw = 0
    for step in range(steps):
        # every other step only moves weights: hash schedulers then change table
        # entries only, which go over netlink (nft_elements) instead of libnftables
        desired = reweighted(inc.table(), rng) if step % 2 else random_table(rng)
        busy = rng.choice([0, 1])  # draining real servers stay at weight 0, or go at once
        ops = reconcile(desired, inc.table(), functools.partial(_in_use, busy))
        inc, cmds = inc.apply(ops)
        doc = document(cmds)
        elements = encode(doc)
        try:
            if elements is not None:
                raw += 1
                codes = writer.run("inc", elements)
                if any(codes):
                    raise RuntimeError(f"errnos {codes}")
            else:
                nft.transaction(doc)
        except Exception as exc:
            raise SystemExit(f"step {step}: the kernel refused {ops}: {exc}") from None
        ref = Plan(
            NftSettings(table="ref"), inc.entries, inc.generation - 1, inc.next_vs
        )  # same slots and marks, built from nothing
        ref, cmds = ref.full()
        nft.transaction(document(cmds))
        a, b = normalized(nft, "inc"), normalized(nft, "ref")
        if a != b:
            only = sorted(set(a) ^ set(b))[:6]
            raise SystemExit(f"step {step}: incremental and full tables differ: {only}")
        if dataclasses.replace(ref, rendered={}) != dataclasses.replace(
            inc, settings=ref.settings, rendered={}
        ):
            raise SystemExit(f"step {step}: plans differ")
    if not raw:
        raise SystemExit("no step went over netlink")
    print(f"ok {steps}")


if __name__ == "__main__":
    main()
