"""The nftables kernel data plane (`dataplane = "nft"`): DNAT in the kernel, no IPVS.

- Ownership: lvsmon owns exactly one `inet` table (daemon.nft.table) and never
  reads or writes another. A table of that name that lvsmon did not create (no
  `owner` map with lvsmon's layout) stops the start with an error naming the key.
- Start: a table lvsmon left behind is adopted when the state file
  (daemon.nft.state_file) describes its current generation (a restart then
  writes nothing); otherwise it is replaced by the first apply, in the same
  transaction that builds the new one.
- `apply()`: one atomic transaction per call (nft_plan computes the commands):
  a reload or a health change never leaves a half-programmed table. A failed
  transaction changes nothing; the next apply rewrites the whole table. A
  transaction of set elements only goes over netlink (nft_elements), the rest
  through libnftables.
- `snapshot()`: counters from the table's counter sets and maps (nft_counters, over
  netlink), active/inactive connections from conntrack (daemon.nft.conntrack_limit).
- `stop()`: no new connections, established ones get `shutdown_grace` to finish,
  then the table goes (unless daemon.nft.flush_on_stop = false: it stays, and
  keeps balancing while lvsmon is down).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from lvsmon.dataplane import conntrack, nft_counters, nft_elements, nft_sched
from lvsmon.dataplane.base import (
    Counters,
    DataPlaneError,
    DestStats,
    Plane,
    ServiceStats,
    Snapshot,
)
from lvsmon.dataplane.libnftables import Nft, NftError
from lvsmon.dataplane.nft_plan import (
    LAYOUT,
    TAG,
    Plan,
    PlanError,
    dispatch_bytes,
    document,
    dump_state,
    load_state,
    withdrawn,
)
from lvsmon.logs import fields
from lvsmon.model import Config, DaemonSettings, NftSettings
from lvsmon.model.capabilities import Capabilities
from lvsmon.netlink import NetlinkError
from lvsmon.reconcile import Op, op_key

log = logging.getLogger("lvsmon.nft")

SYSCTL_DIR = Path("/proc/sys/net")
STATE_DELAY = 0.5  # seconds from a change to writing the state file
_COUNTER_SETS = ("rs_in", "rs_out", "rs_conn", "vs_in", "vs_out")
_DISPATCH_MAPS = ("svc4", "svc6", "fwm4", "fwm6")


class NftPlaneError(DataPlaneError):
    """A failed nftables operation; the message says what and why."""


class NftDataPlane:
    """`DataPlane` over one nftables table in the caller's network namespace."""

    name = "nft"

    def __init__(
        self,
        settings: DaemonSettings | None = None,
        *,
        nft_factory: Callable[[], Nft] = Nft,
        conntrack_reader: Callable[[int, int, int], conntrack.Counts] = conntrack.read,
        sysctl_dir: Path = SYSCTL_DIR,
    ) -> None:
        self._daemon = settings or DaemonSettings(dataplane="nft")
        self._nft_factory = nft_factory
        self._read_conntrack = conntrack_reader
        self._sysctl_dir = sysctl_dir
        self._writer: Nft | None = None  # transactions (run in a worker thread)
        self._reader: Nft | None = None  # ownership and persistence listings
        self._counters: nft_counters.CounterReader | None = None  # snapshots (netlink)
        self._elements: nft_elements.ElementWriter | None = None  # element-only changes
        self._plan = Plan(self.settings)
        self._full: str | None = None  # table name to replace with a full program; None: no
        self._families: set[int] = set()
        self._truncated_warned = False
        self._save_pending = False
        self._saving: asyncio.Future[None] | None = None
        self._save_lock = threading.Lock()
        self.generation = 0
        self.read_at = 0.0
        self.last_transaction_ms = 0.0

    @property
    def settings(self) -> NftSettings:
        return self._daemon.nft

    # -- DataPlane ---------------------------------------------------------------------

    async def configure(self, config: Config) -> None:
        """Settings from the config (start and reload). Settings the table is built
        from (name, SNAT, hash seed, persistence size) rewrite it in one transaction."""
        old = self.settings
        self._daemon = config.daemon
        self._families = {vs.family for vs in config.virtual_servers}
        if self._writer is None:
            self._plan = Plan(self.settings, generation=self._plan.generation)
            return
        self._apply_sysctls()
        if old.table != self.settings.table and self._counters is not None:
            self._counters.close()
            self._counters = nft_counters.CounterReader(self.settings.table)
        if old.rendering() != self.settings.rendering():
            log.warning(
                "nft settings changed: rewriting the table",
                extra=fields(table=self.settings.table),
            )
            self._plan = Plan(
                self.settings,
                self._plan.entries,
                self._plan.generation,
                self._plan.next_vs,
            )
            self._full = old.table
            await self.apply([])

    async def start(self) -> None:
        if self._writer is not None:
            return
        try:
            self._writer, self._reader = self._nft_factory(), self._nft_factory()
            self._counters = nft_counters.CounterReader(self.settings.table)
            self._elements = nft_elements.ElementWriter()
        except NftError as exc:
            raise NftPlaneError(str(exc)) from None
        except NetlinkError as exc:
            raise NftPlaneError(f"cannot open a netfilter netlink socket: {exc}") from None
        try:
            self._adopt_or_replace()
        except BaseException:
            self._close()
            raise
        self._apply_sysctls()

    async def apply(self, ops: Sequence[Op]) -> None:
        if not ops and self._full is None:
            return
        writer = self._writer
        if writer is None:
            raise NftPlaneError("the nft data plane is not started")
        try:
            with _gc_paused():
                full = self._full is not None
                plan, commands = self._plan.apply(ops, diff=not full)
                if not full and plan.outgrown():  # larger counter sets: written in full
                    full, self._full = True, self.settings.table
                if full:
                    plan, commands = plan.full(replace=self._full)
                started = time.perf_counter()
                doc = document(commands)
        except PlanError as exc:
            raise NftPlaneError(f"{_what(ops)}: {exc}") from None
        try:
            elements = None if full else nft_elements.encode(doc)
            if elements is not None and self._elements is not None:
                self._run_elements(elements)  # under a millisecond: no thread hop
            else:
                await asyncio.to_thread(writer.transaction, doc)
        except (NftError, NetlinkError) as exc:
            self._full = self.settings.table  # the kernel may differ from the plan: rewrite all
            raise NftPlaneError(
                f"{_what(ops)}: nftables refused the transaction ({exc}); nothing was changed, "
                "the next sync rewrites the whole table"
            ) from None
        self.last_transaction_ms = (time.perf_counter() - started) * 1000
        old, self._plan, self._full = self._plan, plan, None
        self.generation += 1
        self._state_changed()
        if not full:
            expire = withdrawn(old, plan, dict.fromkeys(op_key(op) for op in ops))
            if expire:
                await asyncio.to_thread(self._expire_persistence, writer, expire)

    def _run_elements(self, ops: list[tuple[str, str, list[nft_elements.Element]]]) -> None:
        assert self._elements is not None
        codes = self._elements.run(self.settings.table, ops)
        failed = [(op[1], code) for op, code in zip(ops, codes, strict=True) if code]
        if failed:
            name, code = failed[0]
            raise NetlinkError(code, f"update the elements of {name}")

    def _expire_persistence(self, nft: Nft, expire: dict[str, set[int]]) -> None:
        """Delete the persistence entries of real servers that left service (after the
        transaction that took them out: entries may expire meanwhile, so a missing one
        only means listing again; whatever is left expires by its timeout)."""
        table = self.settings.table
        for attempt in range(2):
            deletes = []
            try:
                for name, marks in expire.items():
                    for item in nft.list(f"list set inet {table} {name}"):
                        elems = [_elem_value(e) for e in item.get("set", {}).get("elem", [])]
                        gone = [v for v in elems if _mark_of(v) in marks]
                        if gone:
                            deletes.append(
                                {
                                    "delete": {
                                        "element": {
                                            "family": "inet",
                                            "table": table,
                                            "name": name,
                                            "elem": gone,
                                        }
                                    }
                                }
                            )
                if deletes:
                    nft.transaction(json.dumps({"nftables": deletes}))
                return
            except NftError as exc:
                if attempt:
                    log.info("persistence entries left to expire", extra=fields(error=str(exc)))

    def snapshot(self) -> Snapshot:
        reader = self._reader
        if reader is None:
            return Snapshot()
        plan = self._plan
        if self._full is not None or not plan.entries:
            return Snapshot()  # nothing of ours is in the kernel (yet)
        counters = self._counters
        assert counters is not None
        try:
            read = {name: _by_mark(counters.read(name)) for name in _COUNTER_SETS}
            dispatch = {name: counters.read(name) for name in _DISPATCH_MAPS}
            owner = _by_mark(counters.read("owner"))
            generation = int.from_bytes(owner[2][2], sys.byteorder) if 2 in owner else None
            if 1 not in owner or int.from_bytes(owner[1][2], sys.byteorder) != LAYOUT:
                generation = None
        except NetlinkError as exc:
            generation, read, dispatch = None, {}, {}
            log.error("cannot read the nft table", extra=fields(error=str(exc)))
        if generation != plan.generation:
            log.error(
                "the nft table changed behind lvsmon's back: rewriting it",
                extra=fields(table=self.settings.table, generation=generation),
            )
            self._full = self.settings.table
            self.generation += 1
            return Snapshot()
        counts = self._connections()
        self.read_at = time.monotonic()
        return Snapshot(tuple(_service_stats(plan, read, dispatch, counts)))

    async def stop(self, grace: float) -> None:
        if self._writer is None:
            return
        if self._saving is not None:
            await self._saving
        try:
            if self.settings.flush_on_stop:
                await self._drain(grace)
                self._delete_table()
            else:
                self._save_state(self._plan)
                log.warning(
                    "leaving the nft table in place (daemon.nft.flush_on_stop = false)",
                    extra=fields(table=self.settings.table, services=len(self._plan.entries)),
                )
        finally:
            self._close()

    # -- reading ---------------------------------------------------------------------

    def _connections(self) -> conntrack.Counts:
        try:
            counts = self._read_conntrack(TAG, TAG, self.settings.conntrack_limit)
        except (OSError, NetlinkError) as exc:
            log.error("cannot read conntrack", extra=fields(error=str(exc)))
            return conntrack.Counts(complete=False)
        if not counts.complete and not self._truncated_warned:
            self._truncated_warned = True
            log.warning(
                "conntrack read stopped at daemon.nft.conntrack_limit: connection counts "
                "are partial",
                extra=fields(limit=self.settings.conntrack_limit),
            )
        return counts

    # -- ownership ------------------------------------------------------------------------

    def _adopt_or_replace(self) -> None:
        assert self._reader is not None
        table = self.settings.table
        tables = self._reader.list("list tables")
        present = any(
            t.get("table", {}).get("family") == "inet" and t["table"].get("name") == table
            for t in tables
        )
        if not present:
            self._full = table
            log.info("nft data plane started", extra=fields(table=table, adopted=False))
            return
        try:
            meta = _meta(self._reader.list(f"list map inet {table} owner"))
        except NftError:
            meta = {}
        if not isinstance(meta.get(1), int) or not 1 <= meta[1] <= LAYOUT:
            raise NftPlaneError(
                f'daemon.nft.table = "{table}": table inet {table} exists and lvsmon did not '
                "create it (it has no lvsmon owner map): choose another daemon.nft.table, or "
                f"delete it (nft delete table inet {table})"
            )
        plan = self._load_state()  # an older layout (lvsmon upgraded) is replaced
        if plan is not None and meta[1] == LAYOUT and plan.generation == meta.get(2):
            self._plan = plan
            log.info(
                "nft data plane started: adopted the table lvsmon left behind",
                extra=fields(table=table, virtual_servers=len(plan.entries)),
            )
            return
        self._full = table  # left behind, but not as the state file describes: replace it
        self._plan = Plan(self.settings, generation=meta.get(2, 0))
        log.warning(
            "nft data plane started: replacing the table lvsmon left behind (no state file "
            "for its generation)",
            extra=fields(table=table, state_file=self.settings.state_file),
        )

    def _load_state(self) -> Plan | None:
        path = Path(self.settings.state_file)
        try:
            doc = json.loads(path.read_text())
            if doc.get("rendering") != _fingerprint(self.settings):
                return None
            return load_state(doc, self.settings)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning(
                "ignoring an unreadable nft state file",
                extra=fields(path=str(path), error=str(exc)),
            )
            return None

    def _state_changed(self) -> None:
        """Write the state file soon, off the event loop: at 50,000 real servers it
        takes longer than the transaction of one weight change. A crash before it is
        written costs only the adoption: the next start replaces the table."""
        if self._save_pending:
            return
        self._save_pending = True

        def later() -> None:
            self._save_pending = False
            self._saving = asyncio.ensure_future(asyncio.to_thread(self._save_state, self._plan))

        asyncio.get_running_loop().call_later(STATE_DELAY, later)

    def _save_state(self, plan: Plan) -> None:
        path = Path(self.settings.state_file)
        doc = {**dump_state(plan), "rendering": _fingerprint(self.settings)}
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        with self._save_lock:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp.write_text(json.dumps(doc))
                tmp.replace(path)
            except OSError as exc:
                log.warning(
                    "cannot write the nft state file: a restart will rebuild the table",
                    extra=fields(path=str(path), error=exc.strerror),
                )

    async def _drain(self, grace: float) -> None:
        """No new connections (the dispatch maps emptied), then up to `grace` seconds
        for the established ones to finish: deleting the table can end them, since
        the kernel drops NAT'd connections when the last NAT hook of a namespace goes."""
        assert self._writer is not None
        if self._full is not None or not self._plan.entries:
            return
        base = {"family": "inet", "table": self.settings.table}
        flush = [{"flush": {"map": {**base, "name": name}}} for name in _DISPATCH_MAPS]
        try:
            self._writer.transaction(json.dumps({"nftables": flush}))
        except NftError as exc:
            log.error("cannot stop new connections", extra=fields(error=str(exc)))
            return
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            counts = await asyncio.to_thread(
                self._read_conntrack, TAG, TAG, self.settings.conntrack_limit
            )
            if not any(active for active, _ in counts.by_key.values()):
                break
            await asyncio.sleep(0.2)

    def _delete_table(self) -> None:
        assert self._writer is not None
        table = self.settings.table
        try:
            self._writer.transaction(
                json.dumps({"nftables": [{"delete": {"table": {"family": "inet", "name": table}}}]})
            )
        except NftError as exc:
            log.error("cannot delete the nft table", extra=fields(table=table, error=str(exc)))
            return
        with contextlib.suppress(FileNotFoundError):
            Path(self.settings.state_file).unlink()
        log.warning("deleted the nft table (daemon.nft.flush_on_stop)", extra=fields(table=table))

    def _close(self) -> None:
        for nft in (self._writer, self._reader):
            if nft is not None:
                nft.close()
        for sock in (self._counters, self._elements):
            if sock is not None:
                sock.close()
        self._writer = self._reader = self._counters = self._elements = None

    # -- sysctls ------------------------------------------------------------------------------

    def _apply_sysctls(self) -> None:
        """Forwarding on for the address families the config balances (DNAT forwards)."""
        if not self.settings.ip_forward:
            return
        paths = {4: "ipv4/ip_forward", 6: "ipv6/conf/all/forwarding"}
        for family in sorted(self._families):
            path = self._sysctl_dir / paths[family]
            try:
                if path.read_text().strip() != "1":
                    path.write_text("1\n")
                    log.warning("sysctl set", extra=fields(sysctl=str(path), value=1))
            except OSError as exc:
                raise NftPlaneError(
                    f"set {path} = 1 (daemon.nft.ip_forward): {exc.strerror or exc}"
                ) from None


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """No cyclic garbage collection while a plan is computed: a full program of
    1,000 x 50 keeps ~330,000 new objects (records, tuples, strings), whose
    allocation triggers collections that were 20-30% of its Python part and
    find next to nothing to free (11 objects)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _elem_value(elem: Any) -> Any:
    """A set element's value without its timeout/expiry/counter wrapper."""
    return elem["elem"]["val"] if isinstance(elem, dict) and "elem" in elem else elem


def _mark_of(value: Any) -> int | None:
    """The mark in a persistence entry (`client . mark`)."""
    if isinstance(value, dict) and len(value.get("concat", ())) == 2:
        mark = value["concat"][1]
        return mark if isinstance(mark, int) else None
    return None


def _meta(items: Iterable[dict[str, Any]]) -> dict[int, int]:
    out: dict[int, int] = {}
    for item in items:
        for key, value in item.get("map", {}).get("elem", []):
            if isinstance(key, int) and isinstance(value, int):
                out[key] = value
    return out


def _fingerprint(settings: NftSettings) -> str:
    return repr(settings.rendering())


def _what(ops: Sequence[Op]) -> str:
    if not ops:
        return "rewrite the nft table"
    first = str(ops[0])
    return first if len(ops) == 1 else f"{first} and {len(ops) - 1} more"


def _by_mark(elements: nft_counters.Elements) -> dict[int, tuple[int, int, bytes]]:
    """Elements of a set keyed by a mark (host byte order), by that mark."""
    return {int.from_bytes(k, sys.byteorder): v for k, v in elements.items()}


def _service_stats(
    plan: Plan,
    read: dict[str, dict[int, tuple[int, int, bytes]]],
    dispatch: dict[str, nft_counters.Elements],
    counts: conntrack.Counts,
) -> Iterable[ServiceStats]:
    zero = (0, 0, b"")
    rs_in, rs_out, rs_conn, vs_in, vs_out = (read[n] for n in _COUNTER_SETS)
    for entry in plan.entries.values():
        vs = entry.service
        name, key = dispatch_bytes(vs)
        conns = dispatch[name].get(key, zero)
        stats = []
        for member in entry.members:
            rs, mark = member.server, member.mark
            pin, pout = rs_in.get(mark, zero), rs_out.get(mark, zero)
            active, inactive = counts.by_key.get((mark, int(rs.address)), (0, 0))
            counters = Counters(rs_conn.get(mark, zero)[0], pin[1], pout[1], pin[0], pout[0])
            stats.append(DestStats(member.key, rs.weight, active, inactive, 0, counters))
        vin, vout = vs_in.get(entry.mark, zero), vs_out.get(entry.mark, zero)
        counters = Counters(conns[0], vin[1], vout[1], vin[0], vout[0])
        yield ServiceStats(vs, counters, tuple(stats))


PLANE = Plane(
    name="nft",
    summary="the kernel's nftables NAT path (DNAT per new connection; no IPVS needed)",
    # one table lookup decides a new connection: what needs per-server connection
    # counts at decision time (lc, wlc, ..., thresholds) cannot be expressed
    static_capabilities=Capabilities(
        name="nft",
        protocols=frozenset({"tcp", "udp"}),
        forwarding=frozenset({"nat"}),
        fwmark=True,
        schedulers=nft_sched.SCHEDULERS,
        why="the nftables data plane forwards by DNAT (NAT only; TCP and UDP)",
        scheduler_why="connection-count schedulers cannot be decided per packet in nftables; use "
        '"mh" or "wrr" with [virtual_server.adaptive_weights] (whose load can be each real '
        "server's lvsmon_real_server_connections_active, the conntrack count)",
        scheduler_flags=nft_sched.FLAGS,
        thresholds=False,
        privileges=frozenset({"CAP_NET_ADMIN"}),
    ),
    factory=NftDataPlane,
)
