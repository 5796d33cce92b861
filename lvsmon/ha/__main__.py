"""`python -m lvsmon.ha -c FILE`: failover alone, without the balancing daemon.

Reads the `[[failover_group]]` tables of FILE (an lvsmon config; other tables
are ignored), runs the VRRP process like the daemon does, and optionally
serves /metrics and writes a status file. SIGTERM/SIGINT: graceful handover;
SIGHUP: reload the failover groups (unchanged groups keep their state; an
invalid file changes nothing).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence

from prometheus_client import CollectorRegistry

from lvsmon import config, configkit, logs
from lvsmon.config import web
from lvsmon.config.failover import SECTION, read_failover_groups
from lvsmon.configkit import ConfigError, Problem
from lvsmon.ha.metrics import HACollector
from lvsmon.ha.process import HAProcess
from lvsmon.ha.status import GroupStatus
from lvsmon.httpd import StatusServer
from lvsmon.logs import fields
from lvsmon.model.failover import FailoverGroup
from lvsmon.model.web import WebConfig

log = logging.getLogger("lvsmon.ha")


def load_groups(path: str) -> tuple[FailoverGroup, ...]:
    """The failover groups of a config file. Raises ConfigError listing every problem."""
    doc = config.read(path)
    problems: list[Problem] = []
    groups = read_failover_groups(doc, problems)
    if not groups and not problems:
        problems.append(Problem(SECTION, "missing: expected at least one [[failover_group]]"))
    if problems:
        raise ConfigError(path, problems)
    return groups


def write_status(path: str, groups: Sequence[GroupStatus]) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump({"pid": os.getpid(), "groups": [g.to_json() for g in groups]}, f)
    os.replace(tmp, path)


async def run(args: argparse.Namespace, groups: tuple[FailoverGroup, ...]) -> None:
    on_status = (lambda s: write_status(args.status_file, s)) if args.status_file else None
    ha = HAProcess(groups, log_level=args.log_level, on_status=on_status)
    server = None
    if args.metrics_listen:
        # the daemon's own endpoint: the same web config (TLS, client certs, basic auth)
        listen = configkit.endpoint(args.metrics_listen)
        registry = CollectorRegistry()
        registry.register(HACollector(ha.status))
        server = StatusServer(registry, None, web_config(args.web_config_file))
        await server.start(str(listen.address), listen.port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: reload(ha, args.config))
    await ha.start()
    await stop.wait()
    if server is not None:
        await server.stop()
    await ha.stop()


def web_config(path: str | None) -> WebConfig | None:
    """--web-config-file, read and checked like the daemon's daemon.web_config_file."""
    if not path:
        return None
    try:
        return web.load(path)
    except web.WebConfigError as exc:
        problems = [
            Problem(f"--web-config-file: {k}" if k else "--web-config-file", m)
            for k, m in exc.problems
        ]
        raise ConfigError(path, problems) from None


def reload(ha: HAProcess, path: str) -> None:
    try:
        groups = load_groups(path)
    except ConfigError as exc:
        log.error("reload rejected: nothing changed", extra=fields(errors=exc.render()))
        return
    ha.configure(groups)
    log.warning("reload applied", extra=fields(config=path, groups=len(groups)))


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lvsmon.ha", description=__doc__.splitlines()[0])
    p.add_argument("-c", "--config", required=True, help="config file (TOML)")
    p.add_argument("--check", action="store_true", help="validate the failover groups and exit")
    p.add_argument("--status-file", help="keep a JSON status of every group in this file")
    p.add_argument("--metrics-listen", metavar="HOST:PORT", help="serve /metrics here")
    p.add_argument(
        "--web-config-file",
        help="TLS and basic auth for --metrics-listen (an exporter-toolkit web config)",
    )
    p.add_argument("--log-level", default="warning", choices=("debug", "info", "warning", "error"))
    args = p.parse_args(argv)
    try:
        groups = load_groups(args.config)
        if args.metrics_listen:
            configkit.endpoint(args.metrics_listen)
            web_config(args.web_config_file)
    except ConfigError as exc:
        print(exc.render(), file=sys.stderr)
        return 1
    except ValueError:
        print(f"--metrics-listen {args.metrics_listen}: expected HOST:PORT", file=sys.stderr)
        return 1
    if args.check:
        for g in groups:
            print(
                f"{g.name}: vrid {g.vrid} on {g.interface}, priority {g.priority}, "
                f"advert {g.advert_interval:g}s, {len(g.addresses)} addresses"
            )
        return 0
    logs.setup(args.log_level)
    asyncio.run(run(args, groups))
    return 0


if __name__ == "__main__":
    sys.exit(main())
