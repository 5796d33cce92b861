"""`lvsmon` command line: run, check, status, save, reload, demo."""

from __future__ import annotations

import argparse
import getpass
import json
import os
import signal
import sys
import time
import urllib.error
from collections.abc import Sequence
from pathlib import Path

from lvsmon import __version__
from lvsmon import config as configmod
from lvsmon.client import PASSWORD_ENV, StatusClient, basic_authorization, tls_context
from lvsmon.configkit import format_duration
from lvsmon.dataplane.base import snapshot_of
from lvsmon.desired import desired_table
from lvsmon.model import Config, Endpoint
from lvsmon.model.web import TlsServer
from lvsmon.status import build_view, render_save, render_table

DEFAULT_CONFIG = "/etc/lvsmon/lvsmon.toml"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lvsmon", description="LVS director with observability")
    p.add_argument("--version", action="version", version=f"lvsmon {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def cmd(name: str, help: str) -> argparse.ArgumentParser:
        c = sub.add_parser(name, help=help, description=help)
        c.add_argument("-c", "--config", default=DEFAULT_CONFIG, help="config file (TOML)")
        return c

    run = cmd("run", "run the director in the foreground (SIGHUP reloads, SIGTERM stops)")
    run.add_argument(
        "--log-format",
        choices=("logfmt", "json"),
        default=None,
        help="log lines on stderr as logfmt (default) or JSON objects, one per event",
    )
    cmd("check", "validate the config and print the table it would program")
    for name, text in (
        ("status", "show the running director's table, ipvsadm -Ln style"),
        ("save", "print the running director's table as ipvsadm -S rules"),
    ):
        c = cmd(name, text)
        _endpoint_options(c)
        if name == "status":
            c.add_argument("--json", action="store_true", help="the raw /status document")
            c.add_argument("--watch", type=float, metavar="SECONDS", help="refresh every SECONDS")
    cmd("reload", "ask the running director to reload its config (SIGHUP via the pid file)")
    cmd(
        "drain",
        "take the director out of a BGP fleet and stop it: routes less preferred, "
        "bgp.drain.period, withdrawn, then the usual stop (SIGTERM via the pid file; waits)",
    )
    demo = cmd("demo", "start local real servers, the director and traffic; show balancing")
    demo.set_defaults(config="config/demo.toml")
    demo.add_argument("--duration", type=float, default=0, help="stop after SECONDS (0 = Ctrl-C)")
    from lvsmon.assets import add_parser as add_assets
    from lvsmon.importers.cli import add_parser as add_import
    from lvsmon.service.install import add_parser as add_install_unit

    add_import(sub)
    add_install_unit(sub)
    add_assets(sub)
    return p


def _endpoint_options(c: argparse.ArgumentParser) -> None:
    """Where and how to reach the daemon's /status (TLS and auth: daemon.web_config_file)."""
    c.add_argument(
        "--address",
        help="the daemon's metrics_listen, plain HTTP "
        "(default: from the config, https when its web config sets TLS)",
    )
    c.add_argument("--url", help="the daemon's base URL, e.g. https://director.example:9108")
    c.add_argument(
        "--ca-file",
        help="CA certificate(s) verifying the daemon's certificate "
        "(default: the system's; from the config: the daemon's own certificate)",
    )
    c.add_argument(
        "--insecure",
        action="store_true",
        help="do not verify the daemon's certificate (like curl -k)",
    )
    c.add_argument("--cert-file", help="client certificate (PEM), when the daemon asks for one")
    c.add_argument("--key-file", help="the client certificate's key (default: in --cert-file)")
    c.add_argument(
        "--user",
        help=f"basic auth user; password from --password-file, ${PASSWORD_ENV} or a prompt",
    )
    c.add_argument("--password-file", help="file holding the basic auth password")


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
            run(args.config, args.log_format)
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
    if args.command == "drain":
        return _drain(args.config)
    if args.command == "assets":
        from lvsmon.assets import run as assets

        return assets(args)
    if args.command == "install-unit":
        from lvsmon.service.install import run as install_unit

        return install_unit(args)
    if args.command == "import":
        from lvsmon.importers.cli import run as run_import

        return run_import(args)
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
        print(
            f"Failover group {g.name}: vrid {g.vrid} on {g.interface}, priority {g.priority}, "
            f"advert {format_duration(g.advert_interval)}, {mode}"
        )
        for address in g.addresses:
            print(f"  address {address}")
    if cfg.bgp is not None:
        print(describe_bgp(cfg))
    if cfg.daemon.web is not None:
        print(f"Metrics endpoint {cfg.daemon.metrics_listen}: {cfg.daemon.web.describe()}")
    counts = [_plural(len(cfg.virtual_servers), "virtual server")]
    if cfg.failover_groups:
        counts.append(_plural(len(cfg.failover_groups), "failover group"))
    print(f"{path}: configuration is valid ({', '.join(counts)})")
    return 0


def _running(pid: int) -> bool:
    """Alive and not a zombie (exited, not yet reaped by its parent)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def describe_bgp(cfg: Config) -> str:
    """`lvsmon check`'s lines for [bgp]: what would be announced, to whom."""
    bgp = cfg.bgp
    assert bgp is not None
    vips = sorted({f"{vs.address} ({vs.name})" for vs in cfg.virtual_servers if vs.announce})
    lines = [
        f"BGP AS{bgp.local_as} via {bgp.routing_daemon} ({bgp.include_file}), "
        f"liveness device {bgp.liveness_interface}, announce with >= {bgp.healthy_threshold} "
        f"real server(s) in service; drain {format_duration(bgp.drain.period)}"
    ]
    lines += [f"  announce {v}" for v in vips] or ["  announce nothing (no announce = true)"]
    for p in bgp.peers:
        bfd = ", bfd" if p.bfd else ""
        lines.append(f"  peer {p.name}: {p.address} AS{p.remote_as}{bfd}")
    return "\n".join(lines)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


class UsageError(Exception):
    """Options that cannot work; the message says what to change."""


def _client(args: argparse.Namespace) -> StatusClient:
    server: TlsServer | None = None
    if args.url:
        url = str(args.url).rstrip("/")
    elif args.address:
        url = f"http://{args.address}"
    else:
        daemon = configmod.load(args.config).daemon
        server = daemon.web.tls if daemon.web else None
        listen: Endpoint = daemon.metrics_listen
        url = f"{'https' if server else 'http'}://{listen}"
    context = None
    if url.startswith("https://"):
        try:
            context = tls_context(
                ca_file=args.ca_file,
                insecure=args.insecure,
                cert_file=args.cert_file,
                key_file=args.key_file,
                server=server,
            )
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            raise UsageError(f"cannot use the TLS files given: {exc}") from None
    authorization = basic_authorization(args.user, _password(args)) if args.user else None
    return StatusClient(url, context, authorization)


def _password(args: argparse.Namespace) -> str:
    if args.password_file:
        try:  # trimmed as Prometheus trims its password_file
            return Path(args.password_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise UsageError(f"--password-file {args.password_file}: {exc.strerror}") from None
    if (password := os.environ.get(PASSWORD_ENV)) is not None:
        return password
    if sys.stdin.isatty():
        return getpass.getpass(f"password for {args.user}: ")
    raise UsageError(
        f"--user {args.user}: no password: give --password-file or set ${PASSWORD_ENV}"
    )


def _status(args: argparse.Namespace) -> int:
    try:
        client = _client(args)
    except UsageError as exc:
        print(f"lvsmon: {exc}", file=sys.stderr)
        return 1
    while True:
        try:
            view = client.view()
        except urllib.error.HTTPError as exc:
            hint = ""
            if exc.code == 401:
                hint = ": it needs basic auth (--user)" if not args.user else ": wrong password?"
            print(
                f"lvsmon: {client.base_url} answered {exc.code} {exc.reason}{hint}", file=sys.stderr
            )
            return 1
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            print(f"lvsmon: no director answers at {client.base_url}: {reason}", file=sys.stderr)
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
    pid = _signal(path, cfg, signal.SIGHUP)
    return 0 if pid else 1


def _signal(path: str, cfg: Config, sig: signal.Signals) -> int | None:
    """Send `sig` to the daemon named by daemon.pid_file; its pid, or None (reported)."""
    pid_file = cfg.daemon.pid_file
    if not pid_file:
        print(
            f"lvsmon: {path}: daemon.pid_file is not set; cannot find the daemon", file=sys.stderr
        )
        return None
    try:
        pid = int(Path(pid_file).read_text().strip())
        os.kill(pid, sig)
    except (OSError, ValueError) as exc:
        print(f"lvsmon: cannot signal the daemon via {pid_file}: {exc}", file=sys.stderr)
        return None
    print(f"lvsmon: sent {sig.name} to pid {pid}")
    return pid


def _drain(path: str) -> int:
    """SIGTERM, then wait for the daemon to finish its drain and exit."""
    cfg = configmod.load(path)
    pid = _signal(path, cfg, signal.SIGTERM)
    if pid is None:
        return 1
    period = cfg.bgp.drain.period if cfg.bgp is not None else 0.0
    budget = period + cfg.daemon.shutdown_grace + 30.0
    print(f"lvsmon: draining for {format_duration(period)}, then withdrawing and stopping")
    started = time.monotonic()
    while time.monotonic() - started < budget:
        if not _running(pid):
            print(f"lvsmon: pid {pid} drained and stopped in {time.monotonic() - started:.1f}s")
            return 0
        time.sleep(0.2)
    print(f"lvsmon: pid {pid} still running after {budget:.0f}s", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
