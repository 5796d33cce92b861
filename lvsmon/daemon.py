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
from pathlib import Path

from prometheus_client import CollectorRegistry

from lvsmon import config as configmod
from lvsmon.dataplane.base import DataPlane, DataPlaneError
from lvsmon.dataplane.capabilities import for_dataplane
from lvsmon.desired import desired_table
from lvsmon.httpd import StatusServer
from lvsmon.logs import fields
from lvsmon.metrics import DirectorCollector
from lvsmon.model import Config, DaemonSettings
from lvsmon.reconcile import reconcile
from lvsmon.status import DirectorView, build_view

log = logging.getLogger("lvsmon.daemon")

SYNC_INTERVAL = 1.0


class StartupError(Exception):
    """The daemon cannot start; the message says why and what to change."""


def create_dataplane(settings: DaemonSettings) -> DataPlane:
    if settings.dataplane == "proxy":
        from lvsmon.dataplane.proxy import ProxyDataPlane

        return ProxyDataPlane(settings.timeouts)
    raise StartupError(
        f'daemon.dataplane = "{settings.dataplane}": this build has no such data plane yet; '
        'use "proxy"'
    )


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
            with contextlib.suppress(FileNotFoundError):
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
    def __init__(self, config_path: str, config: Config, dataplane: DataPlane):
        self.config_path = config_path
        self.config = config
        self.dataplane = dataplane
        self.reload_ok = True
        self.reload_ok_at = time.time()
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(DirectorCollector(self.view))
        self.http = StatusServer(self.registry, self.view)
        self._reload = asyncio.Event()
        self._stop = asyncio.Event()
        self._last_error = ""

    def view(self) -> DirectorView:
        return build_view(
            self.config,
            self.dataplane.snapshot(),
            last_reload_successful=self.reload_ok,
            last_reload_success_timestamp=self.reload_ok_at,
        )

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGHUP, self._reload.set)
        loop.add_signal_handler(signal.SIGTERM, self._stop.set)
        loop.add_signal_handler(signal.SIGINT, self._stop.set)
        await self.dataplane.start()
        await self.sync(strict=True)
        listen = self.config.daemon.metrics_listen
        try:
            await self.http.start(str(listen.address), listen.port)
        except OSError as exc:
            await self.dataplane.stop(0)
            raise StartupError(f'daemon.metrics_listen = "{listen}": {exc.strerror}') from None
        log.warning(
            "lvsmon started",
            extra=fields(dataplane=self.dataplane.name, config=self.config_path,
                         virtual_servers=len(self.config.virtual_servers), metrics=str(listen)),
        )  # fmt: skip
        await self._main_loop()
        grace = self.config.daemon.shutdown_grace
        log.warning("shutting down", extra=fields(grace_seconds=grace))
        await self.http.stop()
        await self.dataplane.stop(grace)

    async def _main_loop(self) -> None:
        while not self._stop.is_set():
            waiters = [asyncio.ensure_future(e.wait()) for e in (self._stop, self._reload)]
            await asyncio.wait(waiters, timeout=SYNC_INTERVAL, return_when="FIRST_COMPLETED")
            for w in waiters:
                w.cancel()
            if self._stop.is_set():
                return
            if self._reload.is_set():
                self._reload.clear()
                await self.reload()
            else:
                await self.sync()

    async def sync(self, *, strict: bool = False) -> bool:
        """Reconcile the data plane to the config. `strict` raises instead of logging."""
        snap = self.dataplane.snapshot()
        ops = reconcile(desired_table(self.config), snap.table(), snap.in_use)
        if not ops:
            return True
        for op in ops:
            log.info("apply", extra=fields(op=str(op)))
        try:
            await self.dataplane.apply(ops)
        except DataPlaneError as exc:
            if strict:
                raise StartupError(str(exc)) from None
            if str(exc) != self._last_error:  # once per distinct failure, not every second
                log.error("data plane operation failed; will retry", extra=fields(error=str(exc)))
            self._last_error = str(exc)
            return False
        self._last_error = ""
        return True

    async def reload(self) -> None:
        caps = for_dataplane(self.config.daemon.dataplane)
        try:
            new = await asyncio.to_thread(configmod.load, self.config_path, caps)
            _check_reloadable(self.config, new)
        except configmod.ConfigError as exc:
            self.reload_ok = False
            for problem in exc.problems:
                log.error("reload rejected", extra=fields(error=problem.render(exc.source)))
            log.error("reload rejected: nothing changed", extra=fields(errors=len(exc.problems)))
            return
        old_listen = self.config.daemon.metrics_listen
        self.config = new
        ok = await self.sync()
        if new.daemon.metrics_listen != old_listen:
            await self._rebind()
        self.reload_ok = ok
        if ok:
            self.reload_ok_at = time.time()
        logging.getLogger("lvsmon").setLevel(new.daemon.log_level.upper())
        log.warning("reload applied", extra=fields(config=self.config_path, ok=ok))

    async def _rebind(self) -> None:
        listen = self.config.daemon.metrics_listen
        await self.http.stop()
        try:
            await self.http.start(str(listen.address), listen.port)
        except OSError as exc:
            log.error("cannot listen", extra=fields(metrics_listen=str(listen), error=exc.strerror))

    def request_stop(self) -> None:
        self._stop.set()


def _check_reloadable(old: Config, new: Config) -> None:
    if old.daemon.dataplane != new.daemon.dataplane:
        raise configmod.ConfigError(new.source, [configmod.Problem(
            "daemon.dataplane",
            f'"{new.daemon.dataplane}" differs from the running "{old.daemon.dataplane}": '
            "the data plane cannot change on reload; restart lvsmon",
        )])  # fmt: skip


async def serve(config_path: str) -> None:
    """`lvsmon run`: load, start, run until SIGTERM. Raises ConfigError/StartupError."""
    cfg = configmod.load(config_path)
    from lvsmon import logs

    logs.setup(cfg.daemon.log_level)
    pid = PidFile(cfg.daemon.pid_file)
    pid.acquire()
    try:
        director = Director(config_path, cfg, create_dataplane(cfg.daemon))
        await director.run()
    finally:
        pid.release()


def run(config_path: str) -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        asyncio.run(serve(config_path))
    else:
        uvloop.run(serve(config_path))
