"""The kernel data plane (`dataplane = "ipvs"`): Linux IPVS over generic netlink.

- Ownership: lvsmon reports and changes only the virtual servers it created (this
  run, or an earlier one: the identities are kept in `daemon.ipvs.state_file`,
  which lives as long as the kernel table when it is under /run) or adopted. A
  foreign entry at a configured identity is logged and left alone unless
  `daemon.ipvs.adopt` names it; foreign entries elsewhere are never touched (not
  even their real servers are read).
- `snapshot()` reads the table fresh on every call: one service dump, then one dest
  dump per owned service (the kernel API has no other way to list real servers).
- `apply()` batches the operations (see `ipvs_plan`); every failure is reported with
  the operation and what the errno means, and the apply goes on with the rest.
- `stop()` leaves the table (traffic keeps flowing while the daemon restarts)
  unless `daemon.ipvs.flush_on_stop`: then it drains for the grace period and
  deletes what lvsmon owns.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import ipaddress
import json
import logging
import os
import socket
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from lvsmon import netlink, schedulers
from lvsmon.dataplane import ipvs_codec as c
from lvsmon.dataplane import ipvs_modules
from lvsmon.dataplane.base import (
    Counters,
    DataPlaneError,
    DestStats,
    Plane,
    ServiceStats,
    Snapshot,
)
from lvsmon.dataplane.ipvs_netlink import IpvsSocket, NetlinkError, errno_name
from lvsmon.dataplane.ipvs_plan import Outcome, execute, kernel_attributes, summary
from lvsmon.logs import fields
from lvsmon.model import (
    Config,
    DaemonSettings,
    DestKey,
    Forwarding,
    IPAddress,
    IpvsSysctls,
    Protocol,
    RealServer,
    ServiceKey,
    SyncDaemon,
    SyncState,
    Timeouts,
    VirtualServer,
)
from lvsmon.model.capabilities import Capabilities
from lvsmon.reconcile import (
    AddService,
    DeleteService,
    EditService,
    Op,
    no_connections,
    reconcile,
)

log = logging.getLogger("lvsmon.ipvs")

SYSCTL_DIR = Path("/proc/sys/net/ipv4/vs")
_SCHED_BITS = c.F_SCHED1 | c.F_SCHED2 | c.F_SCHED3
_SYNC_STATES = {SyncState.MASTER: c.SYNC_MASTER, SyncState.BACKUP: c.SYNC_BACKUP}


class IpvsError(DataPlaneError):
    """A failed IPVS operation; the message names it and says what the errno means."""


@dataclasses.dataclass(frozen=True, slots=True)
class Owned:
    name: str
    family: int


class IpvsDataPlane:
    """`DataPlane` over the kernel's IPVS table in the caller's network namespace."""

    name = "ipvs"

    def __init__(
        self,
        settings: DaemonSettings | None = None,
        *,
        socket_factory: Callable[[], IpvsSocket] = IpvsSocket,
        sysctl_dir: Path = SYSCTL_DIR,
    ) -> None:
        self._settings = settings or DaemonSettings(dataplane="ipvs")
        self._socket_factory = socket_factory
        self._sysctl_dir = sysctl_dir
        self._sock: IpvsSocket | None = None
        self._config: dict[ServiceKey, VirtualServer] = {}
        self._owned: dict[ServiceKey, Owned] = {}
        self._meta: dict[ServiceKey, VirtualServer] = {}  # attributes last programmed
        self._foreign: set[ServiceKey] = set()  # foreign entries at configured identities
        self._identities: dict[ServiceKey, bytes] = {}
        self._decoder = c.DestDecoder()
        self._reals: dict[tuple[object, ...], tuple[RealServer, DestKey]] = {}
        self._applied: DaemonSettings | None = None
        self._state_warned = False
        self._fingerprint = 0
        # changes whenever the owned table may have changed: lvsmon's applies, or a
        # snapshot that reads something different from the previous one (another tool)
        self.generation = 0
        self.read_at = 0.0  # time.monotonic() of the last full read
        self.last_outcome: Outcome | None = None  # requests/batches of the last apply

    # -- DataPlane -------------------------------------------------------------

    async def configure(self, config: Config) -> None:
        """The config's identities and daemon settings; re-applied settings on reload."""
        self._config = {vs.key: vs for vs in config.virtual_servers}
        self._identities.clear()
        self._settings = config.daemon
        if self._sock is not None:
            await self._apply_settings()

    async def start(self) -> None:
        if self._sock is not None:
            return
        try:
            sock = self._socket_factory()
        except NetlinkError as exc:
            raise IpvsError(_open_failure(exc)) from None
        except OSError as exc:
            raise IpvsError(f"cannot open a netlink socket: {exc.strerror}") from None
        try:
            info = self._info(sock)  # the first IPVS command: tells EPERM apart early
        except NetlinkError as exc:
            sock.close()
            raise IpvsError(_open_failure(exc)) from None
        self._sock = sock
        self._load_state()
        log.info("IPVS data plane started", extra=fields(**info, owned=len(self._owned)))
        await self._apply_settings()

    def snapshot(self) -> Snapshot:
        sock = self._sock
        if sock is None:  # not started (or stopped): nothing is programmed through us
            return Snapshot()
        services: list[ServiceStats] = []
        present: set[ServiceKey] = set()
        reals: dict[tuple[object, ...], tuple[RealServer, DestKey]] = {}
        fingerprint = 0
        foreign: set[ServiceKey] = set()
        try:
            for ks in self._dump_services(sock):
                key = self._claim(ks, foreign)
                if key is None:
                    continue
                present.add(key)
                services.append(self._service_stats(sock, key, ks, reals))
                fingerprint ^= hash((key, ks.scheduler, ks.flags, ks.timeout, ks.netmask))
        except NetlinkError as exc:
            raise IpvsError(f"read the IPVS table: {exc}") from None
        self._reals = reals  # only what is still programmed stays cached
        self._foreign = foreign
        for ident in reals:
            fingerprint ^= hash(ident)
        if fingerprint != self._fingerprint:
            self._fingerprint = fingerprint
            self.generation += 1
        self.read_at = time.monotonic()
        gone = [key for key in self._owned if key not in present]
        if gone:  # deleted behind our back: whoever creates it next owns it
            for key in gone:
                del self._owned[key]
                self._meta.pop(key, None)
            self._save_state()
        return Snapshot(tuple(services))

    async def apply(self, ops: Sequence[Op]) -> None:
        if not ops:
            return
        sock = self._socket()
        broken: list[int] = []

        async def send(batch: list[tuple[int, bytes]]) -> list[int]:
            if broken:
                return [broken[0]] * len(batch)
            try:
                codes = sock.batch(batch)
            except NetlinkError as exc:
                broken.append(exc.errno)
                return [exc.errno] * len(batch)
            await asyncio.sleep(0)  # a long sync must not starve scrapes
            return codes

        outcome = await execute(ops, send, self._identity, self._foreign)
        self.last_outcome = outcome
        self.generation += 1
        owned_before = dict(self._owned)
        for op, code in zip(ops, outcome.codes, strict=True):
            if code == 0:
                self._record(op)
        if self._owned != owned_before:
            self._save_state()
        if outcome.failures:
            raise IpvsError(summary(ops, outcome))

    async def stop(self, grace: float) -> None:
        if self._sock is None:
            return
        try:
            if self._settings.ipvs.flush_on_stop:
                await self._flush(grace)
            else:
                log.warning(
                    "leaving the IPVS table in place (daemon.ipvs.flush_on_stop = false)",
                    extra=fields(virtual_servers=len(self._owned)),
                )
        finally:
            self._sock.close()
            self._sock = None

    # -- connection synchronisation ---------------------------------------------

    def sync_daemons(self) -> dict[SyncState, SyncDaemon]:
        """The running IPVS sync daemons (state -> interface, syncid)."""
        sock = self._socket()
        out: dict[SyncState, SyncDaemon] = {}
        try:
            datagrams = sock.dump(c.CMD_GET_DAEMON, what="list IPVS sync daemons")
        except NetlinkError as exc:
            raise IpvsError(str(exc)) from None
        for buf in datagrams:
            for kind, _flags, _seq, start, end in netlink.iter_messages(buf):
                if kind in (netlink.NLMSG_DONE, netlink.NLMSG_ERROR):
                    continue
                span = c.attrs(buf, start + c.HEADERS, end).get(c.ATTR_DAEMON)
                if span is None:
                    continue
                a = c.attrs(buf, *span)
                state = c.get_u(buf, a.get(c.DAEMON_STATE))
                for name, value in _SYNC_STATES.items():
                    if state == value:
                        out[name] = SyncDaemon(
                            name,
                            c.get_str(buf, a.get(c.DAEMON_MCAST_IFN)),
                            c.get_u(buf, a.get(c.DAEMON_SYNC_ID)),
                        )
        return out

    async def set_sync_daemon(self, want: SyncDaemon) -> None:
        """Run exactly the sync daemon `want` asks for (the HA role switches it at runtime):
        master on the active director, backup on the standby, none to stop both."""
        sock = self._socket()
        running = self.sync_daemons()
        changed = False
        for state, number in _SYNC_STATES.items():
            have = running.get(state)
            wanted = want if want.state == state else None
            if have == wanted:
                continue
            changed = True
            if have is not None:
                self._sync_request(
                    sock,
                    c.CMD_DEL_DAEMON,
                    c.sync_daemon_attrs(number),
                    f"stop the IPVS {state} sync daemon",
                )
            if wanted is not None:
                self._sync_request(
                    sock,
                    c.CMD_NEW_DAEMON,
                    c.sync_daemon_attrs(number, wanted.interface, wanted.syncid),
                    f"start the IPVS {state} sync daemon on {wanted.interface} "
                    f"(syncid {wanted.syncid})",
                )
        if changed:
            log.warning(
                "IPVS sync daemon set",
                extra=fields(state=str(want.state), interface=want.interface, syncid=want.syncid),
            )

    @staticmethod
    def _sync_request(sock: IpvsSocket, cmd: int, attrs: bytes, what: str) -> None:
        try:
            sock.request(cmd, attrs, what)
        except NetlinkError as exc:
            hint = {
                errno.ENODEV: "no such interface",
                errno.EADDRNOTAVAIL: "the interface has no IPv4 address to send from",
                errno.EEXIST: "one is already running",
                errno.EPERM: "lvsmon needs CAP_NET_ADMIN",
            }.get(exc.errno, os.strerror(exc.errno))
            raise IpvsError(f"{what}: {errno_name(exc.errno)} ({hint})") from None

    # -- reading ---------------------------------------------------------------------

    def _socket(self) -> IpvsSocket:
        if self._sock is None:
            raise IpvsError("the IPVS data plane is not started")
        return self._sock

    @staticmethod
    def _info(sock: IpvsSocket) -> dict[str, object]:
        answer = sock.request(c.CMD_GET_INFO, what="read IPVS version")
        if len(answer) != 1:
            return {}
        buf, start, end = answer[0]
        a = c.attrs(buf, start + c.HEADERS, end)
        v = c.get_u(buf, a.get(c.INFO_VERSION))
        return {
            "ipvs_version": f"{v >> 16}.{(v >> 8) & 0xFF}.{v & 0xFF}",
            "conn_tab_size": c.get_u(buf, a.get(c.INFO_CONN_TAB_SIZE)),
        }

    @staticmethod
    def _dump_services(sock: IpvsSocket) -> list[c.KernelService]:
        out = []
        for buf in sock.dump(c.CMD_GET_SERVICE, what="dump IPVS virtual servers"):
            for kind, _flags, _seq, start, end in netlink.iter_messages(buf):
                if kind in (netlink.NLMSG_DONE, netlink.NLMSG_ERROR):
                    continue
                ks = c.parse_service(buf, start + c.HEADERS, end)
                if ks is not None:
                    out.append(ks)
        return out

    def _claim(self, ks: c.KernelService, foreign: set[ServiceKey]) -> ServiceKey | None:
        """The identity if lvsmon owns (or now adopts) this kernel service, else None."""
        if ks.fwmark:
            key = self._fwmark_key(ks.family, ks.fwmark)
            if key is None:
                return None
        else:
            key = ks.key()
            if key is None:
                return None
        if key in self._owned:
            return key
        wanted = self._config.get(key)
        if wanted is None or wanted.family != ks.family:
            return None  # foreign, and not at an identity lvsmon manages: never touched
        if self._settings.ipvs.adopts(wanted.name):
            log.warning(
                "adopting a foreign virtual server (daemon.ipvs.adopt)",
                extra=fields(virtual_server=wanted.name, identity=str(key)),
            )
            self._owned[key] = Owned(wanted.name, ks.family)
            self._foreign.discard(key)
            self._save_state()
            return key
        if key not in self._foreign:  # logged when it appears, not on every read
            log.error(
                "a foreign virtual server holds a configured identity; lvsmon leaves it alone "
                "(set daemon.ipvs.adopt to take it over)",
                extra=fields(virtual_server=wanted.name, identity=str(key)),
            )
        foreign.add(key)
        return None

    def _fwmark_key(self, family: int, fwmark: int) -> ServiceKey | None:
        for key, owned in self._owned.items():
            if key.fwmark == fwmark and owned.family == family:
                return key
        for key, vs in self._config.items():
            if key.fwmark == fwmark and vs.family == family:
                return key
        return None

    def _service_stats(
        self,
        sock: IpvsSocket,
        key: ServiceKey,
        ks: c.KernelService,
        reals: dict[tuple[object, ...], tuple[RealServer, DestKey]],
    ) -> ServiceStats:
        cache = self._reals
        servers: list[RealServer] = []
        dests: list[DestStats] = []
        for buf in sock.dump(c.CMD_GET_DEST, ks.identity, f"dump the real servers of {key}"):
            for row in self._decoder.decode(buf):
                ident = row[:7]  # address, family, port, forwarding, weight, thresholds
                hit = cache.get(ident) or _real_server(row, ks.family)
                reals[ident] = hit
                servers.append(hit[0])
                dests.append(_dest_stats(hit[1], row))
        st = ks.stats
        counters = Counters(st.conns, st.inbytes, st.outbytes, st.inpkts, st.outpkts)
        vs = self._service_model(key, ks)
        return ServiceStats(
            dataclasses.replace(vs, real_servers=tuple(servers)), counters, tuple(dests)
        )

    def _service_model(self, key: ServiceKey, ks: c.KernelService) -> VirtualServer:
        """The configured (or last programmed) attributes when the kernel holds exactly
        those, so attributes the kernel does not store never show up as a difference."""
        base = self._config.get(key) or self._meta.get(key)
        kernel = (ks.scheduler, ks.flags & _SCHED_BITS, ks.timeout, ks.netmask)
        if base is not None and base.family == ks.family and kernel_attributes(base) == kernel:
            return base
        owned = self._owned.get(key)
        return VirtualServer(
            name=base.name if base else owned.name if owned else str(key),
            address=ks.address if ks.address is not None else (base.address if base else None),
            port=ks.port,
            protocol=Protocol(key.protocol),
            fwmark=ks.fwmark,
            scheduler=ks.scheduler,
            scheduler_flags=c.scheduler_flag_names(ks.scheduler, ks.flags & _SCHED_BITS),
            persistence_timeout=float(ks.timeout),
            persistence_netmask=ks.netmask,
            quiesce=base.quiesce if base else False,
            sorry_server=base.sorry_server if base else None,
        )

    # -- writing ----------------------------------------------------------------------

    def _family(self, key: ServiceKey) -> int:
        if not key.fwmark:
            return 6 if ":" in key.address else 4
        owned = self._owned.get(key)
        if owned is not None:
            return owned.family
        vs = self._config.get(key) or self._meta.get(key)
        return vs.family if vs is not None else 4

    def _identity(self, key: ServiceKey) -> bytes:
        ident = self._identities.get(key)
        if ident is None:
            ident = self._identities[key] = c.identity_attrs(key, self._family(key))
        return ident

    def _record(self, op: Op) -> None:
        match op:
            case AddService(vs):
                self._owned[vs.key] = Owned(vs.name, vs.family)
                self._meta[vs.key] = vs
                self._foreign.discard(vs.key)
            case EditService(vs):
                self._meta[vs.key] = vs
                owned = self._owned.get(vs.key)
                if owned is not None and owned.name != vs.name:
                    self._owned[vs.key] = Owned(vs.name, owned.family)
            case DeleteService(key):
                self._owned.pop(key, None)
                self._meta.pop(key, None)
                self._identities.pop(key, None)

    async def _flush(self, grace: float) -> None:
        """Drain what lvsmon owns for up to `grace` seconds, then delete it."""
        deadline = time.monotonic() + grace
        while True:
            snap = self.snapshot()
            if not snap.services:
                break
            late = time.monotonic() >= deadline
            ops = reconcile({}, snap.table(), no_connections if late else snap.in_use)
            try:
                await self.apply(ops)
            except IpvsError as exc:
                log.error("flush on stop failed", extra=fields(error=str(exc)))
                if late:
                    break
            if not late:
                await asyncio.sleep(0.5)
        with contextlib.suppress(IpvsError):
            await self.set_sync_daemon(SyncDaemon())
        log.warning("flushed lvsmon's IPVS virtual servers (daemon.ipvs.flush_on_stop)")

    # -- settings: sysctls, timeouts, sync daemon ----------------------------------------

    async def _apply_settings(self) -> None:
        new, old = self._settings, self._applied
        self._apply_sysctls(new.ipvs.sysctl)
        self._apply_timeouts(new.timeouts)
        sync = new.ipvs.sync_daemon
        # with `follow`, the daemon sets it from the failover group's role (for_role)
        if not sync.follow and (old is None or old.ipvs.sync_daemon != sync):
            await self.set_sync_daemon(sync)
        self._applied = new

    def _apply_sysctls(self, want: IpvsSysctls) -> None:
        values = {
            "expire_nodest_conn": int(want.expire_nodest_conn),
            "expire_quiescent_template": int(want.expire_quiescent_template),
            "conntrack": int(want.conntrack),
            "conn_reuse_mode": want.conn_reuse_mode,
            "sloppy_tcp": int(want.sloppy_tcp),
            "sloppy_sctp": int(want.sloppy_sctp),
        }
        for name, value in values.items():
            path = self._sysctl_dir / name
            try:
                if path.read_text().strip() != str(value):
                    path.write_text(f"{value}\n")
                    log.info("sysctl set", extra=fields(sysctl=f"net.ipv4.vs.{name}", value=value))
            except OSError as exc:
                raise IpvsError(
                    f"set net.ipv4.vs.{name} = {value} (daemon.ipvs.sysctl.{name}): "
                    f"{exc.strerror or exc}"
                ) from None

    def _apply_timeouts(self, want: Timeouts) -> None:
        sock = self._socket()
        wanted = tuple(max(1, round(t)) for t in (want.tcp, want.tcp_fin, want.udp))
        try:
            ((buf, start, end),) = sock.request(c.CMD_GET_CONFIG, what="read IPVS timeouts")
            a = c.attrs(buf, start + c.HEADERS, end)
            kinds = (c.ATTR_TIMEOUT_TCP, c.ATTR_TIMEOUT_TCP_FIN, c.ATTR_TIMEOUT_UDP)
            have = tuple(c.get_u(buf, a.get(k)) for k in kinds)
            if have != wanted:
                sock.request(c.CMD_SET_CONFIG, c.timeout_attrs(*wanted), "set IPVS timeouts")
                log.info(
                    "IPVS timeouts set",
                    extra=fields(tcp=wanted[0], tcp_fin=wanted[1], udp=wanted[2]),
                )
        except NetlinkError as exc:
            raise IpvsError(f"{exc} (daemon.timeouts)") from None

    # -- ownership state ------------------------------------------------------------

    def _load_state(self) -> None:
        path = Path(self._settings.ipvs.state_file)
        try:
            doc = json.loads(path.read_text())
            for entry in doc.get("services", []):
                key = ServiceKey(
                    entry["protocol"], entry["address"], int(entry["port"]), int(entry["fwmark"])
                )
                self._owned[key] = Owned(str(entry["name"]), int(entry["family"]))
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning(
                "ignoring an unreadable IPVS ownership file",
                extra=fields(path=str(path), error=str(exc)),
            )

    def _save_state(self) -> None:
        path = Path(self._settings.ipvs.state_file)
        doc = {
            "version": 1,
            "services": [
                {
                    "protocol": k.protocol,
                    "address": k.address,
                    "port": k.port,
                    "fwmark": k.fwmark,
                    "family": o.family,
                    "name": o.name,
                }
                for k, o in self._owned.items()
            ],
        }
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(doc))
            tmp.replace(path)
        except OSError as exc:
            if not self._state_warned:  # ownership then lasts only as long as this process
                log.warning(
                    "cannot write the IPVS ownership file",
                    extra=fields(path=str(path), error=exc.strerror),
                )
                self._state_warned = True


Setter = Callable[[object, object], None]


def _slot_setters(cls: type, names: tuple[str, ...]) -> tuple[Setter, ...]:
    if tuple(f.name for f in dataclasses.fields(cls)) != names:
        return ()
    return tuple(getattr(cls, name).__set__ for name in names)


# A scrape at 50,000 real servers builds 100,000 of these: filling their slots directly
# costs half the frozen-dataclass __init__ (tests/unit/test_ipvs_codec.py checks both
# agree; a change of fields in base.py falls back to the constructors).
_DS = _slot_setters(DestStats, ("key", "weight", "active", "inactive", "persistent", "counters"))
_CS = _slot_setters(Counters, ("connections", "in_bytes", "out_bytes", "in_packets", "out_packets"))


def _dest_stats(key: DestKey, row: c.DestRow) -> DestStats:
    if not (_DS and _CS):
        counters = Counters(row[10], row[13], row[14], row[11], row[12])
        return DestStats(key, row[4], row[7], row[8], row[9], counters)
    cn = object.__new__(Counters)
    _CS[0](cn, row[10])
    _CS[1](cn, row[13])
    _CS[2](cn, row[14])
    _CS[3](cn, row[11])
    _CS[4](cn, row[12])
    ds = object.__new__(DestStats)
    _DS[0](ds, key)
    _DS[1](ds, row[4])
    _DS[2](ds, row[7])
    _DS[3](ds, row[8])
    _DS[4](ds, row[9])
    _DS[5](ds, cn)
    return ds


def _real_server(row: c.DestRow, service_family: int) -> tuple[RealServer, DestKey]:
    family = 6 if row[1] == socket.AF_INET6 or (not row[1] and service_family == 6) else 4
    address: IPAddress = (
        ipaddress.IPv6Address(row[0]) if family == 6 else ipaddress.IPv4Address(row[0][:4])
    )
    rs = RealServer(
        address,
        int.from_bytes(row[2], "big"),
        row[4],
        c.FORWARDING_OF.get(row[3] & 0x7, Forwarding.NAT),
        row[5],
        row[6],
    )
    return rs, rs.key


def _open_failure(exc: NetlinkError) -> str:
    if exc.errno == errno.ENOENT:
        return (
            "the running kernel has no IPVS (generic netlink family IPVS not found and the "
            'ip_vs module could not be loaded): use dataplane = "proxy" or a kernel with '
            "CONFIG_IP_VS"
        )
    if exc.errno == errno.EPERM:
        return "not permitted to use IPVS: lvsmon needs CAP_NET_ADMIN (run it as root)"
    return f"cannot reach IPVS: {exc}"


def _create(settings: DaemonSettings) -> IpvsDataPlane:
    return IpvsDataPlane(settings)


PLANE = Plane(
    name="ipvs",
    summary="the kernel's IPVS table over generic netlink",
    static_capabilities=Capabilities(
        name="ipvs",
        protocols=frozenset({"tcp", "udp", "sctp"}),
        forwarding=frozenset({"nat", "dr", "tunnel"}),
        fwmark=True,
        schedulers=frozenset(schedulers.IPVS_SCHEDULERS),
        why="the running kernel has no such IPVS scheduler (module ip_vs_<name>)",
        privileges=frozenset({"CAP_NET_ADMIN"}),
    ),
    factory=_create,
    probe=ipvs_modules.probe,
)
