"""Two directors in network namespaces, built and torn down per test (root only).

    client ──┐                    ┌── rs1
    dir1.eth0├─ br0 (public)      │
    dir2.eth0┘   192.0.2.0/24     br1 (private) 198.51.100.0/24
                 fd00:1::/64      ├── dir1.eth1, dir2.eth1
                                  └── rs2

Both bridges live in one bridge namespace (so nftables there can partition
the directors). Addresses exist only inside these namespaces, all from
documentation/ULA ranges. Namespace names carry a per-run tag, so parallel
runs never collide; `Topology` is a context manager that always deletes
them and kills every process it started, even when the test fails.
Also imported by bench/failover.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
PYTHON = sys.executable

VIP = "192.0.2.100"
VIP6 = "fd00:1::100"
NAT_GW = "198.51.100.1"
PORT = 8080
PUBLIC = {"client": "192.0.2.10", "dir1": "192.0.2.2", "dir2": "192.0.2.3"}
PUBLIC6 = {"client": "fd00:1::10", "dir1": "fd00:1::2", "dir2": "fd00:1::3"}
PRIVATE = {
    "dir1": "198.51.100.2",
    "dir2": "198.51.100.3",
    "rs1": "198.51.100.11",
    "rs2": "198.51.100.12",
}
MACS = {
    ("client", "eth0"): "02:00:00:00:01:00",
    ("dir1", "eth0"): "02:00:00:00:11:00",
    ("dir1", "eth1"): "02:00:00:00:11:01",
    ("dir2", "eth0"): "02:00:00:00:12:00",
    ("dir2", "eth1"): "02:00:00:00:12:01",
    ("rs1", "eth0"): "02:00:00:00:21:00",
    ("rs2", "eth0"): "02:00:00:00:22:00",
}
BRIDGE_OF = {"client": "br0", "dir1": "br0", "dir2": "br0", "rs1": "br1", "rs2": "br1"}
HOSTS = ("client", "dir1", "dir2", "rs1", "rs2")


def run(*argv: str, check: bool = True, input: str | None = None) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, input=input)
    if check and result.returncode:
        raise RuntimeError(f"{' '.join(argv)}: exit {result.returncode}: {result.stderr.strip()}")
    return result.stdout


def wait_for(what: str, predicate: Callable[[], Any], timeout: float, every: float = 0.005) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(every)


@dataclass
class Proc:
    popen: subprocess.Popen[bytes]
    name: str
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def close_pipes(self) -> None:
        """Once it is gone: the pipes a test talked to it through (prober, holder)."""
        for pipe in (self.popen.stdin, self.popen.stdout, self.popen.stderr):
            if pipe is not None:
                with contextlib.suppress(OSError):  # unsent input: the reader is gone
                    pipe.close()


class Scene:
    """Namespaces and processes that `with` builds and always tears down."""

    def up(self) -> None:
        raise NotImplementedError

    def down(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        try:
            self.up()
        except BaseException:
            self.down()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()


@dataclass
class Topology(Scene):
    tag: str = field(default_factory=lambda: f"{os.getpid() % 10000}{secrets.token_hex(2)}")
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="lvsmon-ha-")))
    procs: list[Proc] = field(default_factory=list)
    with_real_servers: bool = True

    def ns(self, host: str) -> str:
        return f"lvha{self.tag}-{host}"

    # --- life cycle (Scene: up, and down even when up fails) ---

    def up(self) -> None:
        hosts = [h for h in HOSTS if self.with_real_servers or not h.startswith("rs")]
        for name in ("br", *hosts):
            self.add_namespace(name)
        br = self.ns("br")
        for bridge in ("br0", "br1"):
            run(
                "ip",
                "-n",
                br,
                "link",
                "add",
                bridge,
                "type",
                "bridge",
                "stp_state",
                "0",
                "forward_delay",
                "0",
                "mcast_snooping",
                "0",
            )
            run("ip", "-n", br, "link", "set", bridge, "up")
        for (host, ifname), mac in MACS.items():
            if host not in hosts:
                continue
            bridge = "br1" if ifname == "eth1" else BRIDGE_OF[host]
            port = f"vb-{host}-{ifname[-1]}"
            run(
                "ip",
                "link",
                "add",
                port,
                "netns",
                br,
                "type",
                "veth",
                "peer",
                "name",
                ifname,
                "netns",
                self.ns(host),
                "address",
                mac,
            )
            run("ip", "-n", br, "link", "set", port, "master", bridge, "up")
            run("ip", "-n", self.ns(host), "link", "set", ifname, "up")
        for host, address in PUBLIC.items():
            self.ip(host, "addr", "add", f"{address}/24", "dev", "eth0")
        for host, address in PUBLIC6.items():
            self.ip(host, "addr", "add", f"{address}/64", "dev", "eth0", "nodad")
        for host, address in PRIVATE.items():
            if host in hosts:
                dev = "eth1" if host.startswith("dir") else "eth0"
                self.ip(host, "addr", "add", f"{address}/24", "dev", dev)
        for host in ("rs1", "rs2"):
            if host in hosts:
                self.ip(host, "route", "add", "default", "via", NAT_GW)
        self.ip("client", "route", "add", "default", "via", VIP)

    def add_namespace(self, host: str) -> None:
        ns = self.ns(host)
        run("ip", "netns", "add", ns)
        # No DAD: IPv6 addresses (link-local sources of NA) are usable at once.
        for key in ("net.ipv6.conf.all.accept_dad", "net.ipv6.conf.default.accept_dad"):
            run("ip", "netns", "exec", ns, "sysctl", "-qw", f"{key}=0")
        run("ip", "-n", ns, "link", "set", "lo", "up")

    def down(self) -> None:
        for proc in reversed(self.procs):
            self._kill(proc)
        for name in ("client", "dir1", "dir2", "rs1", "rs2", "br"):
            run("ip", "netns", "del", self.ns(name), check=False)
        for path in sorted(self.workdir.glob("*"), reverse=True):
            with contextlib.suppress(OSError):
                path.unlink()
        with contextlib.suppress(OSError):
            self.workdir.rmdir()

    @staticmethod
    def _kill(proc: Proc) -> None:
        if proc.alive():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                proc.popen.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.popen.wait(5)
        proc.close_pipes()

    # --- commands in a namespace ---

    def ip(self, host: str, *args: str, check: bool = True) -> str:
        return run("ip", "-n", self.ns(host), *args, check=check)

    def exec_argv(self, host: str, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.ns(host), *argv]

    def spawn(
        self,
        host: str,
        name: str,
        argv: Sequence[str],
        *,
        group_of: Proc | None = None,
        stdin: int | None = subprocess.DEVNULL,
        stdout_log: bool = True,
    ) -> Proc:
        """Start argv in host's namespace: its own process group, or `group_of`'s."""
        log = self.workdir / f"{host}-{name}.log"
        out = open(log, "wb")  # noqa: SIM115 - the child keeps it
        # A process group of its own (same session, so others can join it with group_of).
        kwargs: dict[str, Any] = {"process_group": group_of.pid if group_of else 0}
        popen = subprocess.Popen(
            self.exec_argv(host, argv),
            stdin=stdin,
            stdout=out if stdout_log else subprocess.PIPE,
            stderr=out,
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            **kwargs,
        )
        out.close()
        proc = Proc(popen, f"{host}-{name}", log)
        self.procs.append(proc)
        return proc

    def run_ns_pids(self, host: str) -> list[int]:
        """Processes in host's namespace (`ip netns pids`)."""
        return [int(p) for p in run("ip", "netns", "pids", self.ns(host), check=False).split()]

    def neigh(self, host: str, address: str) -> str | None:
        out = self.ip(host, "-j", "neigh", "show", address, check=False)
        entries = json.loads(out) if out.strip() else []
        for e in entries:
            if e.get("dst") == address and "lladdr" in e:
                return str(e["lladdr"])
        return None

    def addresses(self, host: str, ifname: str) -> set[str]:
        data = json.loads(self.ip(host, "-j", "addr", "show", "dev", ifname))
        return {a["local"] for link in data for a in link.get("addr_info", [])}

    def holds(self, host: str, address: str = VIP, ifname: str = "eth0") -> bool:
        return address in self.addresses(host, ifname)

    def link(self, host: str, ifname: str, up: bool) -> None:
        self.ip(host, "link", "set", ifname, "up" if up else "down")

    def nft(self, script: str) -> None:
        run("ip", "netns", "exec", self.ns("br"), "nft", "-f", "-", input=script)

    def partition(self) -> None:
        """Drop everything between the two directors' public ports (both ways)."""
        self.nft(
            textwrap.dedent("""
            table bridge partition {
              chain forward {
                type filter hook forward priority 0; policy accept;
                iifname "vb-dir1-0" oifname "vb-dir2-0" drop
                iifname "vb-dir2-0" oifname "vb-dir1-0" drop
              }
            }
        """)
        )

    def heal(self) -> None:
        self.nft("delete table bridge partition\n")

    def ping(self, host: str, address: str) -> bool:
        """One ping (primes the neighbour entry that a takeover must then update)."""
        argv = ["ping", "-c1", "-W1", "-q", address]
        return subprocess.run(self.exec_argv(host, argv), capture_output=True).returncode == 0

    def in_ns(self, host: str, code: str, *args: str) -> str:
        """Run a Python snippet inside host's namespace; its stdout."""
        return run(*self.exec_argv(host, [PYTHON, "-c", code, *args]))

    def metrics(self, host: str, port: int = 9108) -> str:
        return self.in_ns(
            host,
            "import sys, urllib.request as u; sys.stdout.write(u.urlopen("
            f"'http://127.0.0.1:{port}/metrics', timeout=5).read().decode())",
        )

    def inject(self, packets: Sequence[dict[str, Any]], gap: float = 0.01) -> None:
        """Send raw protocol-112 packets from the client's eth0: a rogue peer on the LAN."""
        argv = self.exec_argv("client", [PYTHON, str(HERE / "inject.py"), "eth0", str(gap)])
        subprocess.run(argv, input=json.dumps(list(packets)).encode(), check=True)

    # --- the programs ---

    def listener(self, host: str, group_of: Proc | None = None) -> Proc:
        """The director's stand-in data plane (see listener.py), in `group_of`'s group."""
        proc = self.spawn(
            host,
            "listener",
            [PYTHON, str(HERE / "listener.py"), host, str(PORT)],
            group_of=group_of,
        )
        wait_for(f"listener on {host}", lambda: "listening" in proc.output(), 10)
        return proc

    def lvsmon(
        self, host: str, config: str, *, listener: bool = True, extra: Sequence[str] = ()
    ) -> LvsmonDirector:
        path = self.workdir / f"{host}.toml"
        path.write_text(config)
        status = self.workdir / f"{host}.status.json"
        status.unlink(missing_ok=True)
        argv = [
            PYTHON,
            "-m",
            "lvsmon.ha",
            "-c",
            str(path),
            "--status-file",
            str(status),
            "--log-level",
            "info",
            *extra,
        ]
        proc = self.spawn(host, "lvsmon", argv)
        director = LvsmonDirector(self, host, proc, status_file=status)
        if listener:
            director.listener = self.listener(host, group_of=proc)
        return director

    def keepalived(
        self, host: str, config: str, *, listener: bool = True, config_id: str = ""
    ) -> Director:
        """keepalived --vrrp on `config`; `config_id` is its -i (for @ID conditional lines)."""
        path = self.workdir / f"{host}.keepalived.conf"
        path.write_text(config)
        # Fresh pid files per start: a SIGKILLed keepalived's VRRP child lingers as a
        # zombie until reaped, and keepalived would take it for a running daemon.
        n = len(self.procs)
        argv = [
            "keepalived",
            "--vrrp",
            "--dont-fork",
            "--log-console",
            "--no-syslog",
            "--use-file",
            str(path),
            "--pid",
            str(self.workdir / f"{host}.{n}.ka.pid"),
            "--vrrp_pid",
            str(self.workdir / f"{host}.{n}.vrrp.pid"),
            *(["--config-id", config_id] if config_id else []),
        ]
        proc = self.spawn(host, "keepalived", argv)
        director = Director(self, host, proc)
        if listener:
            director.listener = self.listener(host, group_of=proc)
        return director

    def prober(self, address: str = VIP, interval: float = 0.01, timeout: float = 0.25) -> Prober:
        argv = [PYTHON, str(HERE / "prober.py"), address, str(PORT), str(interval), str(timeout)]
        proc = self.spawn("client", "prober", argv, stdin=subprocess.PIPE)
        return Prober(proc)


@dataclass
class Director:
    topo: Topology
    host: str
    proc: Proc
    listener: Proc | None = None

    def holds_vip(self) -> bool:
        return self.topo.holds(self.host)

    def kill9(self) -> None:
        """A crash: SIGKILL to the whole process group (daemon, VRRP child, data plane)."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.popen.wait(5)

    def terminate(self, timeout: float = 15) -> float:
        """A planned stop: SIGTERM to the daemon; returns how long it took to exit."""
        started = time.monotonic()
        self.proc.popen.send_signal(signal.SIGTERM)
        self.proc.popen.wait(timeout)
        took = time.monotonic() - started
        if self.listener is not None:  # the data plane stops with its daemon
            Topology._kill(self.listener)
        return took


@dataclass
class LvsmonDirector(Director):
    status_file: Path | None = None

    def groups(self) -> dict[str, dict[str, Any]]:
        assert self.status_file is not None
        try:
            data = json.loads(self.status_file.read_text())
        except (OSError, ValueError):
            return {}
        return {g["name"]: g for g in data["groups"]}

    def group(self, name: str = "edge") -> dict[str, Any]:
        return self.groups().get(name, {})

    def state(self, name: str = "edge") -> str:
        return str(self.group(name).get("state", ""))

    def wait_state(self, state: str, timeout: float = 10, name: str = "edge") -> None:
        try:
            wait_for(f"{self.host} {name} {state}", lambda: self.state(name) == state, timeout)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; now {self.group(name)}\n{self.proc.output()}") from None


@dataclass
class Prober:
    proc: Proc

    def stop(self) -> list[tuple[float, bool, str]]:
        """Stop probing; every attempt as (start time, success, banner or reason)."""
        assert self.proc.popen.stdin is not None
        self.proc.popen.stdin.close()
        self.proc.popen.wait(5)
        attempts = []
        for line in self.proc.output().splitlines():
            parts = line.split(maxsplit=2)
            if len(parts) == 3 and parts[1] in ("ok", "fail"):
                attempts.append((float(parts[0]), parts[1] == "ok", parts[2]))
        return attempts


def first_success_after(
    attempts: Sequence[tuple[float, bool, str]], since: float, by: str
) -> float | None:
    """Seconds from `since` to the first attempt that `by` answered."""
    for started, ok, who in attempts:
        if started >= since and ok and who == by:
            return started - since
    return None


def failures(
    attempts: Sequence[tuple[float, bool, str]], since: float = 0.0, until: float = float("inf")
) -> int:
    return sum(1 for t, ok, _ in attempts if since <= t <= until and not ok)


def lvsmon_config(
    *,
    priority: int,
    advert: str = "100ms",
    vrid: int = 51,
    preempt: bool = True,
    extra: str = "",
    ipv6: bool = True,
    group_extra: Iterator[str] | Sequence[str] = (),
) -> str:
    """A director's failover group: the VIP (+ IPv6 VIP) on eth0, the NAT gateway on eth1."""
    v6 = f'\n[[failover_group.address]]\naddress = "{VIP6}/64"\n' if ipv6 else ""
    lines = "\n".join(group_extra)
    return (
        textwrap.dedent(f"""\
        [[failover_group]]
        name = "edge"
        vrid = {vrid}
        interface = "eth0"
        priority = {priority}
        advert_interval = "{advert}"
        preempt = {"true" if preempt else "false"}
        garp_interval = "5ms"
        {lines}

        [[failover_group.address]]
        address = "{VIP}/24"

        [[failover_group.address]]
        address = "{NAT_GW}/24"
        interface = "eth1"
        """)
        + v6
        + extra
    )


def keepalived_config(
    *, priority: int, advert: float = 0.1, vrid: int = 51, preempt: bool = True
) -> str:
    return textwrap.dedent(f"""\
        global_defs {{
            vrrp_version 3
            vrrp_garp_master_repeat 5
            vrrp_garp_interval 0.005
        }}
        vrrp_instance edge {{
            state BACKUP
            interface eth0
            virtual_router_id {vrid}
            priority {priority}
            advert_int {advert}
            {"" if preempt else "nopreempt"}
            virtual_ipaddress {{
                {VIP}/24 dev eth0
                {NAT_GW}/24 dev eth1
            }}
            virtual_ipaddress_excluded {{
                {VIP6}/64 dev eth0
            }}
        }}
        """)
