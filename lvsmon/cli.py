"""`lvsmon` command line: run, check, status, save, reload, demo."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from lvsmon import __version__
from lvsmon import config as configmod
from lvsmon.config import format_duration
from lvsmon.dataplane.base import snapshot_of
from lvsmon.desired import desired_table
from lvsmon.model import Endpoint
from lvsmon.status import DirectorView, build_view, render_save, render_table

DEFAULT_CONFIG = "/etc/lvsmon/lvsmon.toml"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lvsmon", description="LVS director with observability")
    p.add_argument("--version", action="version", version=f"lvsmon {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def cmd(name: str, help: str) -> argparse.ArgumentParser:
        c = sub.add_parser(name, help=help, description=help)
        c.add_argument("-c", "--config", default=DEFAULT_CONFIG, help="config file (TOML)")
        return c

    cmd("run", "run the director in the foreground (SIGHUP reloads, SIGTERM stops)")
    cmd("check", "validate the config and print the table it would program")
    for name, text in (
        ("status", "show the running director's table, ipvsadm -Ln style"),
        ("save", "print the running director's table as ipvsadm -S rules"),
    ):
        c = cmd(name, text)
        c.add_argument("--address", help="the daemon's metrics_listen (default: from the config)")
        if name == "status":
            c.add_argument("--json", action="store_true", help="the raw /status document")
            c.add_argument("--watch", type=float, metavar="SECONDS", help="refresh every SECONDS")
    cmd("reload", "ask the running director to reload its config (SIGHUP via the pid file)")
    demo = cmd("demo", "start local real servers, the director and traffic; show balancing")
    demo.set_defaults(config="config/demo.toml")
    demo.add_argument("--duration", type=float, default=0, help="stop after SECONDS (0 = Ctrl-C)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return int(_dispatch(args))
    except configmod.ConfigError as exc:
        print(exc.render(), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "run":
        from lvsmon.daemon import StartupError, run

        try:
            run(args.config)
        except StartupError as exc:
            print(f"lvsmon: cannot start: {exc}", file=sys.stderr)
            return 1
        return 0
    if args.command == "check":
        return _check(args.config)
    if args.command in ("status", "save"):
        return _status(args)
    if args.command == "reload":
        return _reload(args.config)
    if args.command == "demo":
        from lvsmon.demo import run_demo

        return run_demo(args.config, args.duration)
    raise AssertionError(args.command)


def _check(path: str) -> int:
    cfg = configmod.load(path)
    view = build_view(cfg, snapshot_of(desired_table(cfg)))
    print(render_table(view))
    for g in cfg.failover_groups:
        mode = "preempt" if g.preempt else "nopreempt"
        if g.preempt and g.preempt_delay:
            mode += f" after {format_duration(g.preempt_delay)}"
        print(f"Failover group {g.name}: vrid {g.vrid} on {g.interface}, priority {g.priority}, "
              f"advert {format_duration(g.advert_interval)}, {mode}")  # fmt: skip
        for address in g.addresses:
            print(f"  address {address}")
    counts = [_plural(len(cfg.virtual_servers), "virtual server")]
    if cfg.failover_groups:
        counts.append(_plural(len(cfg.failover_groups), "failover group"))
    print(f"{path}: configuration is valid ({', '.join(counts)})")
    return 0


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _daemon_address(args: argparse.Namespace) -> str:
    if args.address:
        return str(args.address)
    listen: Endpoint = configmod.load(args.config).daemon.metrics_listen
    return str(listen)


def fetch_view(address: str, timeout: float = 5.0) -> DirectorView:
    with urllib.request.urlopen(f"http://{address}/status", timeout=timeout) as resp:
        return DirectorView.from_json(json.load(resp))


def _status(args: argparse.Namespace) -> int:
    address = _daemon_address(args)
    while True:
        try:
            view = fetch_view(address)
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            print(f"lvsmon: no director answers at {address}: {reason}", file=sys.stderr)
            return 1
        if args.command == "save":
            sys.stdout.write(render_save(view))
            return 0
        if args.json:
            print(json.dumps(view.to_json(), indent=1))
            return 0
        if not args.watch:
            print(render_table(view))
            return 0
        sys.stdout.write("\x1b[H\x1b[2J" + render_table(view) + "\n")
        sys.stdout.flush()
        time.sleep(args.watch)


def _reload(path: str) -> int:
    cfg = configmod.load(path)  # a file that would be rejected is reported here, not in a log
    pid_file = cfg.daemon.pid_file
    if not pid_file:
        print(f"lvsmon: {path}: daemon.pid_file is not set; cannot find the daemon",
              file=sys.stderr)  # fmt: skip
        return 1
    try:
        pid = int(Path(pid_file).read_text().strip())
        os.kill(pid, signal.SIGHUP)
    except (OSError, ValueError) as exc:
        print(f"lvsmon: cannot signal the daemon via {pid_file}: {exc}", file=sys.stderr)
        return 1
    print(f"lvsmon: sent SIGHUP to pid {pid}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
