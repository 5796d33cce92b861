"""The daemon: wires config, data plane, metrics and signals; owns the lifecycle.

One event loop. Signal handlers only set events; the main loop does the work:
reload (validate fully, then apply a diff), a periodic sync (finishes drains,
retries failed operations) and shutdown (drain within the grace period).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections import deque
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from lvsmon import config as configmod
from lvsmon import privilege
from lvsmon.bgp.feature import BgpFeature
from lvsmon.bgp.metrics import BgpCollector
from lvsmon.dataplane import registry
from lvsmon.dataplane.base import (
    Configurable,
    DataPlane,
    DataPlaneError,
    SyncDaemonControl,
    Versioned,
)
from lvsmon.desired import desired_table
from lvsmon.ha.handover import Hold
from lvsmon.ha.metrics import HACollector
from lvsmon.ha.process import HAProcess, release_addresses
from lvsmon.ha.status import GroupStatus
from lvsmon.health.metrics import HealthCollector
from lvsmon.health.monitor import HealthMonitor
from lvsmon.health.probes import exec as exec_probe
from lvsmon.health.targets import targets_of
from lvsmon.httpd import StatusServer
from lvsmon.logs import fields
from lvsmon.metrics import DirectorCollector
from lvsmon.model import Config, DestKey, ServiceKey, SyncDaemon
from lvsmon.reconcile import Table, reconcile
from lvsmon.sdnotify import Notifier
from lvsmon.status import DirectorView, build_view
from lvsmon.statuspage.admin import AdminState
from lvsmon.statuspage.document import RELOADS_KEPT, ReloadRecord
from lvsmon.statuspage.history import RateHistory
from lvsmon.statuspage.page import AdminCollector, StatusPage
from lvsmon.weights.controller import WeightController, group_for
from lvsmon.weights.effective import WeightParts, from_verdicts, table_weights
from lvsmon.weights.metrics import WeightCollector

log = logging.getLogger("lvsmon.daemon")

SYNC_INTERVAL = 1.0
# A settled table (see Director.sync) is still read and reconciled this often, so a
# change by another tool is repaired even when nothing reads the table in between.
FULL_RESYNC_INTERVAL = 30.0
ANNOUNCE_INTERVAL = 5.0  # BGP verdicts re-read from a settled table this often


class StartupError(Exception):
    """The daemon cannot start; the message says why and what to change."""


class PidFile:
    """Refuses to start over a live daemon; removed on exit."""

    def __init__(self, path: str):
        self.path = Path(path) if path else None

    def acquire(self) -> None:
        if self.path is None:
            return
        with contextlib.suppress(FileNotFoundError, ValueError):
            pid = int(self.path.read_text().strip())
            if pid != os.getpid() and _alive(pid):
                raise StartupError(f"another lvsmon (pid {pid}) owns pid file {self.path}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(f"{os.getpid()}\n")

    def release(self) -> None:
        if self.path is not None:
            # PermissionError: the daemon became daemon.user and the file is in root's /run
            with contextlib.suppress(FileNotFoundError, PermissionError):
                self.path.unlink()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Director:
    def __init__(
        self,
        config_path: str,
        config: Config,
        dataplane: DataPlane,
        notifier: Notifier | None = None,
    ):
        self.config_path = config_path
        self.notify = notifier or Notifier({})  # systemd's READY/RELOADING/STOPPING/WATCHDOG
        self.config = config
        self.dataplane = dataplane
        self.reload_ok = True
        self.reload_ok_at = time.time()
        self.reload_failures = 0  # lvsmon_config_reload_failures_total
        self.dataplane_errors = 0  # failed applies and reads: lvsmon_dataplane_errors_total
        # (config, data plane generation, when) of the last sync that found nothing to do
        self._settled: tuple[Config, int, float] | None = None
        self.registry = CollectorRegistry(auto_describe=True)
        self.health = HealthMonitor()
        # VRRP runs in its own process (timing isolation); started only with failover groups
        self.ha: HAProcess | None = None
        self._ha_roles: dict[str, str] = {}  # failover group -> state, from the VRRP process
        self._ha_changed = asyncio.Event()  # ... set when one of them changes
        self._sync_role: SyncDaemon | None = None  # what _follow_ha_role last set
        self._sync_error = ""
        _scripts_as(config)
        self.health.configure(targets_of(config.virtual_servers))
        self.registry.register(DirectorCollector(self.view))
        self.registry.register(HealthCollector(self.health))
        self.weights = WeightController()
        self._configure_weights()
        self.registry.register(WeightCollector(self.weights, self._names))
        self.registry.register(HACollector(self.ha_status))
        # the status page: rates sampled by the daemon, operator overrides, recent reloads
        self.admin = AdminState()
        self.rates = RateHistory(config.daemon.status_page.samples)
        self.reloads: deque[ReloadRecord] = deque(maxlen=RELOADS_KEPT)
        self.reloads.append(ReloadRecord(self.reload_ok_at, True, "start", "config loaded"))
        self._reload_trigger = "signal"
        self.page = StatusPage(self)
        self.registry.register(AdminCollector(self.page))
        self.bgp = BgpFeature()  # announces VIPs through the routing daemon ([bgp])
        self.registry.register(BgpCollector(self.bgp.status, self.bgp.fingerprints))
        self._announced_at = 0.0  # monotonic time of the last BGP verdicts
        self.http = StatusServer(self.registry, self.status_view, config.daemon.web, self.page)
        self._sampler: asyncio.Task[None] | None = None
        self._operator_changed = asyncio.Event()
        self._reload = asyncio.Event()
        self._stop = asyncio.Event()
        self._last_error = ""

    def _names(self) -> dict[ServiceKey, str]:
        return {vs.key: vs.name for vs in self.config.virtual_servers}

    def _configure_weights(self) -> None:
        self.weights.configure(
            group_for(vs, vs.adaptive_weights)
            for vs in self.config.virtual_servers
            if vs.adaptive_weights
        )

    def _weight_parts(self) -> dict[tuple[ServiceKey, DestKey], WeightParts]:
        """Health x slow start x adaptive factor, in one place (lvsmon.weights.effective)."""
        ramps, dynamic = self.health.weights()
        return from_verdicts(
            self.config.virtual_servers,
            down=self.health.down(),
            ramps=ramps,
            dynamic=dynamic,
            adaptive=self.weights.factors(),
            adaptive_services=self.weights.services(),
            operator=self.admin.weights(),  # the status page's drains and temporary weights
        )

    def _overrides(self) -> dict[tuple[ServiceKey, DestKey], int | None]:
        return table_weights(self._weight_parts())

    def ha_status(self) -> tuple[GroupStatus, ...]:
        return self.ha.status() if self.ha is not None else ()

    def view(self, *, weight_columns: bool = False) -> DirectorView:
        """`weight_columns`: each server's weight factor by factor and the running sync
        daemons, for /status (`lvsmon status`); /metrics skips them (the columns alone
        cost ~0.1 s of CPU per scrape of a 1,000 x 50 table)."""
        return build_view(
            self.config,
            self.dataplane.snapshot(),
            self.health.down(),
            last_reload_successful=self.reload_ok,
            last_reload_success_timestamp=self.reload_ok_at,
            dataplane_errors=self.dataplane_errors,
            config_reload_failures=self.reload_failures,
            failover_groups=[g.to_json() for g in self.ha_status()],
            weight_parts=self._weight_parts() if weight_columns else None,
            sync_daemons=self._sync_daemons() if weight_columns else None,
            bgp=self.bgp.rows() if weight_columns else None,
            bgp_announcer=self.bgp.summary() if weight_columns else None,
        )

    def _sync_daemons(self) -> list[dict[str, Any]] | None:
        """What the kernel runs now (one netlink dump), for /status; None: no such thing."""
        if not isinstance(self.dataplane, SyncDaemonControl):
            return None
        try:
            running = self.dataplane.sync_daemons()
        except DataPlaneError:
            return None
        return [
            {"state": str(d.state), "interface": d.interface, "syncid": d.syncid}
            for d in running.values()
        ]

    def status_view(self) -> DirectorView:
        return self.view(weight_columns=True)

    def operator_changed(self) -> None:
        """A drain or temporary weight from the status page: sync now, not on the tick."""
        self.desired_changed()
        self._operator_changed.set()

    def request_reload(self, trigger: str) -> None:
        """As SIGHUP, from the status page; `trigger` is kept in the reload history."""
        self._reload_trigger = trigger
        self._reload.set()

    def sample_rates(self, now: float) -> None:
        """One sample of every counter into the status page's ring buffers."""
        counters: dict[object, tuple[int, int]] = {}
        for vs in self.view().virtual_servers:
            counters[vs.key] = (vs.connections, vs.in_bytes + vs.out_bytes)
            for rs in vs.real_servers:
                key = (vs.key, DestKey(rs.address, rs.port))
                counters[key] = (rs.connections, rs.in_bytes + rs.out_bytes)
        self.rates.record(now, counters)

    async def _sample_loop(self) -> None:
        """At a fixed period (not drifting with the work done): the page's rates."""
        loop = asyncio.get_running_loop()
        due = loop.time()
        while True:
            with contextlib.suppress(DataPlaneError):  # counted by sync; the next one retries
                self.sample_rates(loop.time())
            due += self.config.daemon.status_page.sample_interval
            due = max(due, loop.time())  # after a stall: no burst of catch-up samples
            await asyncio.sleep(due - loop.time())

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGHUP, self._reload.set)
        loop.add_signal_handler(signal.SIGTERM, self._stop.set)
        loop.add_signal_handler(signal.SIGINT, self._stop.set)
        try:
            if isinstance(self.dataplane, Configurable):
                await self.dataplane.configure(self.config)
            await self.dataplane.start()
        except DataPlaneError as exc:
            raise StartupError(str(exc)) from None
        await self.sync(strict=True)
        await self.health.start()
        await self.weights.start()
        await self._configure_ha()
        await self._follow_ha_role()
        await self.bgp.configure(self.config)
        await self._announce()
        listen = self.config.daemon.metrics_listen
        try:
            await self.http.start(str(listen.address), listen.port)
        except OSError as exc:
            await self._stop_ha()
            await self.bgp.withdraw()
            await self.health.stop()
            await self.weights.stop()
            await self.dataplane.stop(0)
            raise StartupError(f'daemon.metrics_listen = "{listen}": {exc.strerror}') from None
        log.warning(
            "lvsmon started",
            extra=fields(
                dataplane=self.dataplane.name,
                config=self.config_path,
                virtual_servers=len(self.config.virtual_servers),
                metrics=str(listen),
            ),
        )
        self._sampler = asyncio.create_task(self._sample_loop())
        self.notify.ready(self._status_line())  # the table is programmed, /metrics answers
        await self._main_loop()
        self.notify.stopping()
        grace = self.config.daemon.shutdown_grace
        log.warning("shutting down", extra=fields(grace_seconds=grace))
        await self.bgp.leave(self._tick)  # less preferred, drain period, withdrawn
        self._sampler.cancel()
        await self.http.stop()
        hold = self._hold_vips(grace)  # handover_forward: the VIPs stay local while we drain
        await self._stop_ha()  # hands over first: the data plane serves until the backup is master
        await self._follow_ha_role()  # no longer master: receive the new master's connections
        await self.health.stop()
        await self.weights.stop()
        await self.dataplane.stop(grace)
        if hold is not None:
            hold.release()

    async def _main_loop(self) -> None:
        while not self._stop.is_set():
            events = (
                self._stop,
                self._reload,
                self.health.changed,
                self.weights.changed,
                self._ha_changed,
                self._operator_changed,
            )
            waiters = [asyncio.ensure_future(e.wait()) for e in events]
            tick = min(SYNC_INTERVAL, self.notify.watchdog_interval or SYNC_INTERVAL)
            await asyncio.wait(waiters, timeout=tick, return_when="FIRST_COMPLETED")
            self.notify.heartbeat()  # WATCHDOG=1: the main loop turns
            for w in waiters:
                w.cancel()
            if self._stop.is_set():
                return
            if self.health.changed.is_set() or self.health.ramping():
                self.health.changed.clear()  # a verdict changed: sync now, not on the tick
                self.desired_changed()
                self._report_health_to_ha()
            if self.weights.changed.is_set():
                self.weights.changed.clear()  # an adaptive weight moved: sync now
                self.desired_changed()
            self._ha_changed.clear()
            self._operator_changed.clear()
            if self.admin.expire(time.monotonic()):
                self.desired_changed()  # a temporary weight from the status page lapsed
            await self._follow_ha_role()  # a comparison unless the role or a setting changed
            if self._reload.is_set():
                self._reload.clear()
                self.notify.reloading()
                await self.reload()
                self.notify.ready(self._status_line())
            else:
                await self.sync()
            await self._announce()

    async def _tick(self) -> None:
        """One turn of the loop while draining out: table kept current, VIPs re-judged."""
        if self.health.changed.is_set() or self.health.ramping():
            self.health.changed.clear()
            self.desired_changed()
        await self.sync()
        await self._announce()

    async def _announce(self) -> None:
        """[bgp]: the VIPs this director can serve, from the table as programmed: after
        every change, and every ANNOUNCE_INTERVAL while the table is settled (a snapshot
        of a large IPVS table is not free)."""
        if self.config.bgp is None:
            return
        now = time.monotonic()
        if self._settled is not None and now - self._announced_at < ANNOUNCE_INTERVAL:
            return
        self._announced_at = now
        await self.bgp.tick(self.config, self.dataplane.snapshot(), self.health.down())

    def _status_line(self) -> str:
        """systemd's STATUS= line."""
        n = len(self.config.virtual_servers)
        reload = "" if self.reload_ok else ", last reload failed"
        return f"{n} virtual server{'s' if n != 1 else ''} on {self.dataplane.name}{reload}"

    def desired_changed(self) -> None:
        """Anything that changes the desired table without a new config must call this."""
        self._settled = None

    def _is_settled(self) -> bool:
        dp = self.dataplane
        if not isinstance(dp, Versioned):
            return False
        return is_settled(self._settled, self.config, dp.generation, dp.read_at, time.monotonic())

    async def sync(self, *, strict: bool = False) -> bool:
        """Reconcile the data plane to the config. `strict` raises instead of logging."""
        if not strict and self._is_settled():
            return True
        self._settled = None
        try:
            snap = self.dataplane.snapshot()
            desired = desired_table(self.config, self._overrides())
            actual = snap.table()
            ops = reconcile(desired, actual, snap.in_use)
            if not ops:
                self._last_error = ""
                if isinstance(self.dataplane, Versioned) and _nothing_drains(desired, actual):
                    self._settled = (self.config, self.dataplane.generation, time.monotonic())
                return True
            for op in ops:
                log.info("apply", extra=fields(op=str(op)))
            await self.dataplane.apply(ops)
        except DataPlaneError as exc:
            self.dataplane_errors += 1
            if strict:
                raise StartupError(str(exc)) from None
            if str(exc) != self._last_error:  # once per distinct failure, not every second
                log.error("data plane operation failed; will retry", extra=fields(error=str(exc)))
            self._last_error = str(exc)
            return False
        self._last_error = ""
        return True

    async def reload(self) -> None:
        caps = registry.capabilities_of(self.config.daemon.dataplane)
        trigger, self._reload_trigger = self._reload_trigger, "signal"
        try:
            new = await asyncio.to_thread(configmod.load, self.config_path, caps)
            _check_reloadable(self.config, new)
        except configmod.ConfigError as exc:
            self.reload_ok = False
            self.reload_failures += 1
            for problem in exc.problems:
                log.error("reload rejected", extra=fields(error=problem.render(exc.source)))
            log.error("reload rejected: nothing changed", extra=fields(errors=len(exc.problems)))
            first = exc.problems[0].render(exc.source) if exc.problems else str(exc)
            more = f" (+{len(exc.problems) - 1} more)" if len(exc.problems) > 1 else ""
            self.reloads.append(
                ReloadRecord(time.time(), False, trigger, f"rejected: {first}{more}")
            )
            return
        except Exception:  # a bug in a reader must not take the running director down
            self.reload_ok = False
            self.reload_failures += 1
            log.exception("reload rejected: nothing changed (internal error reading the config)")
            why = "rejected: internal error reading the config (see the log)"
            self.reloads.append(ReloadRecord(time.time(), False, trigger, why))
            return
        old_listen = self.config.daemon.metrics_listen
        self.config = new
        self.admin.keep_only(
            (vs.key, rs.key) for vs in new.virtual_servers for rs in vs.real_servers
        )
        self.rates.resize(new.daemon.status_page.samples)
        _scripts_as(new)
        self.health.configure(targets_of(new.virtual_servers))
        self._configure_weights()
        await self._configure_ha()
        await self.bgp.configure(new)
        configured = True
        if isinstance(self.dataplane, Configurable):
            try:
                await self.dataplane.configure(new)
            except DataPlaneError as exc:
                self.dataplane_errors += 1
                configured = False
                log.error("data plane settings not applied", extra=fields(error=str(exc)))
        await self._follow_ha_role()
        ok = await self.sync() and configured
        # users and headers apply at once; new TLS settings or certificates need a new listener
        tls_changed = self.http.configure(new.daemon.web)
        if tls_changed or new.daemon.metrics_listen != old_listen:
            await self._rebind()
        self.reload_ok = ok
        if ok:
            self.reload_ok_at = time.time()
        else:
            self.reload_failures += 1
        message = "applied" if ok else "applied, but the data plane reported errors (see the log)"
        self.reloads.append(ReloadRecord(time.time(), ok, trigger, message))
        logging.getLogger("lvsmon").setLevel(new.daemon.log_level.upper())
        log.warning("reload applied", extra=fields(config=self.config_path, ok=ok))

    async def _configure_ha(self) -> None:
        groups = self.config.failover_groups
        if self.ha is None:
            if not groups:
                return
            self.ha = HAProcess(
                groups,
                log_level=self.config.daemon.log_level,
                script_user=self.config.daemon.script_user,
                on_status=self._on_ha_status,
            )
            await self.ha.start()
        else:
            self.ha.configure(groups)  # unchanged groups keep their state
        self._report_health_to_ha()

    def _hold_vips(self, grace: float) -> Hold | None:
        """The groups this director is master of with handover_forward: their new master
        forwards our connections' segments here, so keep the VIPs on lo (lvsmon.ha.handover)."""
        if self.ha is None or grace <= 0:
            return None
        masters = {g.name for g in self.ha_status() if g.state == "master"}
        groups = [g for g in self.config.failover_groups if g.name in masters]
        return Hold.start([g for g in groups if g.handover_forward > 0])

    async def _stop_ha(self) -> None:
        if self.ha is not None:
            await self.ha.stop()
            self.ha = None

    def _on_ha_status(self, groups: tuple[GroupStatus, ...]) -> None:
        """Counters arrive up to 4 times a second; only a role change wakes the loop."""
        roles = {g.name: g.state for g in groups}
        if roles != self._ha_roles:
            self._ha_roles = roles
            self._ha_changed.set()

    async def _follow_ha_role(self) -> None:
        """[daemon.ipvs.sync_daemon] follow = GROUP: the IPVS sync daemon is master while
        that failover group is master here, backup otherwise (SyncDaemon.for_role)."""
        sync = self.config.daemon.ipvs.sync_daemon
        if not sync.follow or not isinstance(self.dataplane, SyncDaemonControl):
            self._sync_role = None  # a static state is the data plane's (configure)
            return
        role = next((g.state for g in self.ha_status() if g.name == sync.follow), "backup")
        want = sync.for_role(role)
        if want == self._sync_role:
            return
        try:
            await self.dataplane.set_sync_daemon(want)
        except DataPlaneError as exc:
            self.dataplane_errors += 1  # retried every loop: _sync_role is unchanged
            if str(exc) != self._sync_error:  # logged once per distinct failure
                log.error(
                    "IPVS sync daemon not switched",
                    extra=fields(failover_group=sync.follow, role=role, error=str(exc)),
                )
            self._sync_error = str(exc)
            return
        self._sync_role, self._sync_error = want, ""
        log.warning(
            "IPVS sync daemon follows the failover group",
            extra=fields(failover_group=sync.follow, role=role, state=str(want.state)),
        )

    def _report_health_to_ha(self) -> None:
        """Real servers up/configured per virtual server, for `track_real_servers`."""
        if self.ha is None:
            return
        down = self.health.down()
        counts = {}
        for vs in self.config.virtual_servers:
            total = len(vs.real_servers)
            up = sum(1 for rs in vs.real_servers if (vs.key, rs.key) not in down)
            counts[vs.name] = (up, total)
        self.ha.set_real_server_health(counts)

    async def _rebind(self) -> None:
        listen = self.config.daemon.metrics_listen
        await self.http.stop()
        try:
            await self.http.start(str(listen.address), listen.port)
        except OSError as exc:
            log.error("cannot listen", extra=fields(metrics_listen=str(listen), error=exc.strerror))

    def request_stop(self) -> None:
        self._stop.set()


def is_settled(
    settled: tuple[Config, int, float] | None,
    config: Config,
    generation: int,
    read_at: float,
    now: float,
) -> bool:
    """May the periodic sync rest? `settled` is (config, data plane generation, when) of
    the last sync that found nothing to do (and nothing draining). It may while the
    config object and the plane's generation are unchanged since, and the table was read
    (by that sync or a scrape since: `read_at`) less than FULL_RESYNC_INTERVAL ago: at
    1,000 x 50 a full read + reconcile costs ~0.3 s of CPU, so it runs only that often,
    or when a snapshot saw a change. Pure: the daemon passes time.monotonic()."""
    return (
        settled is not None
        and settled[0] is config
        and generation == settled[1]
        and now - max(settled[2], read_at) < FULL_RESYNC_INTERVAL
    )


def drop_privileges(config: Config) -> None:
    """Started as root: keep only the capabilities the daemon will need (lvsmon.privilege),
    as daemon.user if set. Done before anything else starts, because capabilities are
    per thread: every thread created later (executors, libuv's pool) inherits the
    reduced sets. What start does next (binding ports, programming the data plane,
    raw sockets, the VRRP process at real-time priority) is within those."""
    if os.geteuid() != 0:
        return
    d = config.daemon
    user = privilege.Account.named(d.user) if d.user else None
    if user is not None:
        import encodings.idna  # noqa: F401 - getaddrinfo's codec, loaded late otherwise
    others = bool(d.script_user) and d.script_user != (d.user or "root")
    keep = privilege.needed(failover=bool(config.failover_groups), script_user=others)
    groups = []
    if config.bgp is not None:
        # Debian's BIRD runs as bird:bird with its control socket mode 0660: without
        # CAP_DAC_OVERRIDE, birdc reaches it through that group
        gid = privilege.socket_group(config.bgp.control_socket, fallback="bird")
        if gid is not None:
            groups.append(gid)
    try:
        privilege.restrict(keep, user, groups)
    except (privilege.PrivilegeError, OSError) as exc:
        raise StartupError(f"cannot give up privileges: {exc}") from None
    log.warning(
        "privileges dropped",
        extra=fields(
            user=d.user or "root",
            capabilities=",".join(keep),
            groups=",".join(str(g) for g in groups),
        ),
    )


def _scripts_as(config: Config) -> None:
    user = config.daemon.script_user
    exec_probe.run_as(privilege.Account.named(user) if user else None)


def _nothing_drains(desired: Table, actual: Table) -> bool:
    """With no operations left, anything `actual` holds beyond `desired` is draining."""
    return actual.keys() == desired.keys() and all(
        len(vs.real_servers) == len(desired[key].real_servers) for key, vs in actual.items()
    )


def _check_reloadable(old: Config, new: Config) -> None:
    if old.daemon.dataplane != new.daemon.dataplane:
        raise configmod.ConfigError(
            new.source,
            [
                configmod.Problem(
                    "daemon.dataplane",
                    f'"{new.daemon.dataplane}" differs from the running "{old.daemon.dataplane}": '
                    "the data plane cannot change on reload; restart lvsmon",
                )
            ],
        )


async def serve(config_path: str, log_format: str | None = None) -> None:
    """`lvsmon run`: load, start, run until SIGTERM. Raises ConfigError/StartupError."""
    notifier = Notifier()  # read (and cleared from the environment) before any child starts
    cfg = configmod.load(config_path)
    from lvsmon import logs

    logs.setup(cfg.daemon.log_level, log_format)
    pid = PidFile(cfg.daemon.pid_file)
    pid.acquire()
    if cfg.failover_groups:  # a crashed predecessor's: no VRRP process answers for them
        release_addresses(cfg.failover_groups)
    try:
        dataplane = registry.create(cfg.daemon)  # imports it while the files are readable
        drop_privileges(cfg)
        director = Director(config_path, cfg, dataplane, notifier)
        await director.run()
    finally:
        pid.release()
        notifier.close()


def run(config_path: str, log_format: str | None = None) -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        asyncio.run(serve(config_path, log_format))
    else:
        uvloop.run(serve(config_path, log_format))
