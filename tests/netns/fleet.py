"""An active-active fleet in network namespaces: BIRD 2 on a router and on every
director, lvsmon announcing the VIP over BGP, ECMP with L4 hashing (root only).

    client ──── router ──┬── d1 ──┐
    198.18.0.10   (BIRD, ├── d2 ──┼── back LAN (bridge) ── rs1, rs2
                  ECMP)  └── d3 ──┘   198.51.100.0/24

The router reaches each director over its own point-to-point link
(198.18.1N.0/24) and peers with the director's BIRD (AS 65001 each, the
router AS 65000, BFD on); its kernel protocol merges the equal BGP paths into
one multipath route (`merge paths`), hashed on the 5-tuple
(`ECMP_L4_HASH`). Every director holds the VIP on lo, runs the
proxy data plane with `mh`, and reaches both real servers on the back LAN.

Flow pinning: the router remembers, per connection (conntrack mark), the
director its first packet went to, and keeps the connection there while that
link exists. A full proxy (the proxy data plane) holds each TCP connection's
state, so a router that re-hashes an established flow to another director
breaks it; stateful edges in front of proxies pin flows the same way. The
kernel data plane needs no pinning (mh + sloppy_tcp: the VM tier proves it).

`layout()` describes the namespaces and links as built, for the README
picture (docs/fleet_topology.py). Names carry a per-run tag; `Fleet` is a
context manager that always deletes its namespaces and kills its processes.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import textwrap
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.netns import fleet_gateway
from tests.netns.topology import PYTHON, REPO, Proc, Scene, run, wait_for

HERE = Path(__file__).resolve().parent
VIP = "192.0.2.100"
VIP2 = "192.0.2.101"
PORT = 8080
CLIENT = "198.18.0.10"
ROUTER_CLIENT_SIDE = "198.18.0.1"
ROUTER_AS = 65000
FLEET_AS = 65001
BACK = "198.51.100"
ROUTER_LAN = f"{BACK}.1"
REAL_SERVERS = {"rs1": f"{BACK}.11", "rs2": f"{BACK}.12"}
TOOLS = ("ip", "nft", "bird", "birdc", "chrt")
# BIRD at a low real-time priority, as lvsmon runs VRRP: on a 2-core machine saturated by
# the tests' own traffic, 100 ms BFD packets would otherwise be late and sessions flap.
REALTIME = ("chrt", "-f", "10")
# ECMP on the 5-tuple. Policy 3 with the 5-tuple fields rather than policy 1: policy 1 takes
# a hash already on the packet, and a packet from a local socket carries that socket's
# random txhash, so a client in the same kernel would land on a random director per
# connection (a router fed by a NIC hashes the 5-tuple either way).
ECMP_L4_HASH = ("net.ipv4.fib_multipath_hash_policy=3", "net.ipv4.fib_multipath_hash_fields=0x0037")


def director_up(i: int) -> tuple[str, str]:
    """(router side, director side) of director i's uplink."""
    return f"198.18.{10 + i}.1", f"198.18.{10 + i}.2"


def director_back(i: int) -> str:
    return f"{BACK}.{1 + i}"


@dataclass
class FleetDirector:
    fleet: Fleet
    name: str
    index: int
    bird: Proc | None = None
    lvsmon: Proc | None = None
    config_path: Path | None = None

    @property
    def address(self) -> str:
        return director_up(self.index)[1]

    @property
    def bird_socket(self) -> Path:
        return self.fleet.workdir / f"{self.name}.bird.ctl"

    @property
    def include_file(self) -> Path:
        return self.fleet.workdir / f"{self.name}-lvsmon.conf"

    @property
    def metrics_port(self) -> int:
        return 9108

    def birdc(self, *args: str) -> str:
        return run("birdc", "-s", str(self.bird_socket), *args, check=False)

    def metrics(self) -> str:
        return self.fleet.in_ns(
            self.name,
            "import sys, urllib.request as u; sys.stdout.write(u.urlopen("
            f"'http://{self.address}:{self.metrics_port}/metrics', timeout=5).read().decode())",
        )

    def sample(self, name: str, **labels: str) -> float | None:
        """One sample of the director's /metrics (None: absent)."""
        want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        try:
            text = self.metrics()
        except RuntimeError:  # not listening (yet)
            return None
        for line in text.splitlines():
            if line.startswith("#"):
                continue
            series, _, value = line.rpartition(" ")
            metric, _, rest = series.partition("{")
            got = ",".join(sorted(rest.rstrip("}").split(","))) if rest else ""
            if metric == name and got == want:
                return float(value)
        return None

    def kill9(self) -> None:
        assert self.lvsmon is not None
        os.killpg(self.lvsmon.pid, signal.SIGKILL)
        self.lvsmon.popen.wait(5)


@dataclass
class Fleet(Scene):
    n_directors: int = 3
    tag: str = field(default_factory=lambda: f"{os.getpid() % 10000}{secrets.token_hex(2)}")
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="lvsmon-bgp-")))
    procs: list[Proc] = field(default_factory=list)
    directors: list[FleetDirector] = field(default_factory=list)
    bfd_interval_ms: int = 100
    hold_time: int = 3  # seconds, on both sides
    pin_flows: bool = True  # the proxy plane needs it; IPVS with mh + sloppy_tcp does not
    router_on_lan: bool = False  # direct routing: real servers answer clients via the router
    # directors that also move the real servers' NAT gateway by VRRP, the first preferred
    # (tests/netns/fleet_gateway.py)
    gateway_pair: tuple[str, ...] = ()

    def ns(self, host: str) -> str:
        return f"lvbg{self.tag}-{host}"

    @property
    def hosts(self) -> list[str]:
        return ["client", "router", "lan", *(d.name for d in self.directors), *REAL_SERVERS]

    # --- life cycle ---

    def __post_init__(self) -> None:
        self.directors = [FleetDirector(self, f"d{i}", i) for i in range(1, self.n_directors + 1)]

    def up(self) -> None:
        for host in self.hosts:
            run("ip", "netns", "add", self.ns(host))
            self.ip(host, "link", "set", "lo", "up")
        self.sysctl("router", "net.ipv4.ip_forward=1", *ECMP_L4_HASH)
        self._veth("client", "eth0", "router", "rc")
        self.ip("client", "addr", "add", f"{CLIENT}/24", "dev", "eth0")
        self.ip("router", "addr", "add", f"{ROUTER_CLIENT_SIDE}/24", "dev", "rc")
        self.ip("client", "route", "add", "default", "via", ROUTER_CLIENT_SIDE)
        self.ip(
            "lan", "link", "add", "br0", "type", "bridge", "stp_state", "0", "forward_delay", "0"
        )
        self.ip("lan", "link", "set", "br0", "up")
        for d in self.directors:
            rside, dside = director_up(d.index)
            self._veth(d.name, "up0", "router", f"r{d.name}")
            self.ip("router", "addr", "add", f"{rside}/24", "dev", f"r{d.name}")
            self.ip(d.name, "addr", "add", f"{dside}/24", "dev", "up0")
            self.ip(d.name, "route", "add", "default", "via", rside)
            self.ip(d.name, "addr", "add", f"{VIP}/32", "dev", "lo")
            self.ip(d.name, "addr", "add", f"{VIP2}/32", "dev", "lo")
            self._lan_port(d.name, "dn0", director_back(d.index))
        for rs, address in REAL_SERVERS.items():
            self._lan_port(rs, "eth0", address)
        if self.pin_flows:
            self._pin_flows()
        if self.router_on_lan:
            self._lan_port("router", "rl", ROUTER_LAN)
            for key in ("all", "default", "rl"):  # replies from the VIP come back this way
                self.sysctl("router", f"net.ipv4.conf.{key}.rp_filter=0")
            for rs in REAL_SERVERS:
                self.ip(rs, "route", "add", "default", "via", ROUTER_LAN)
        elif self.gateway_pair:
            for rs in REAL_SERVERS:
                self.ip(rs, "route", "add", "default", "via", fleet_gateway.GATEWAY)
        self.start_router_bird()
        for d in self.directors:
            self.start_bird(d)

    def down(self) -> None:
        for proc in reversed(self.procs):
            _kill(proc)
        for host in self.hosts:
            run("ip", "netns", "del", self.ns(host), check=False)
        shutil.rmtree(self.workdir, ignore_errors=True)

    # --- plumbing ---

    def ip(self, host: str, *args: str, check: bool = True) -> str:
        return run("ip", "-n", self.ns(host), *args, check=check)

    def sysctl(self, host: str, *settings: str) -> None:
        run("ip", "netns", "exec", self.ns(host), "sysctl", "-qw", *settings)

    def _veth(self, a: str, a_if: str, b: str, b_if: str) -> None:
        run(
            "ip",
            "link",
            "add",
            f"t{self.tag}",
            "netns",
            self.ns(a),
            "type",
            "veth",
            "peer",
            "name",
            b_if,
            "netns",
            self.ns(b),
        )
        self.ip(a, "link", "set", f"t{self.tag}", "name", a_if)
        self.ip(a, "link", "set", a_if, "up")
        self.ip(b, "link", "set", b_if, "up")

    def _lan_port(self, host: str, ifname: str, address: str) -> None:
        port = f"p{host}"
        self._veth(host, ifname, "lan", port)
        self.ip("lan", "link", "set", port, "master", "br0")
        self.ip(host, "addr", "add", f"{address}/24", "dev", ifname)

    def _pin_flows(self) -> None:
        """Connections stay on the director their SYN reached (see the module doc): the
        SYN's way out sets the conntrack mark (director index); every later packet of the
        connection routes by that director's own table. Keyed on the SYN, not on conntrack's
        "new": a client that reuses a source port after a reset reopens the old entry."""
        marks = ", ".join(f'"r{d.name}" : {d.index}' for d in self.directors)
        names = ", ".join(f'"r{d.name}"' for d in self.directors)
        self.nft(
            "router",
            textwrap.dedent(f"""
            table ip pin {{
              chain pre {{
                type filter hook prerouting priority mangle; policy accept;
                iifname "rc" tcp flags & (syn | ack) != syn meta mark set ct mark
              }}
              chain post {{
                type filter hook postrouting priority mangle; policy accept;
                tcp flags & (syn | ack) == syn oifname {{ {names} }} \\
                  ct mark set oifname map {{ {marks} }}
              }}
            }}
            """),
        )
        for d in self.directors:
            table = str(100 + d.index)
            self.ip("router", "rule", "add", "fwmark", str(d.index), "table", table)
            self.ip(
                "router",
                "route",
                "add",
                "192.0.2.0/24",
                "via",
                director_up(d.index)[1],
                "table",
                table,
            )

    def nft(self, host: str, script: str) -> None:
        run("ip", "netns", "exec", self.ns(host), "nft", "-f", "-", input=script)

    def exec_argv(self, host: str, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.ns(host), *argv]

    def in_ns(self, host: str, code: str, *args: str) -> str:
        return run(*self.exec_argv(host, [PYTHON, "-c", code, *args]))

    def spawn(self, host: str, name: str, argv: Sequence[str], **kw: Any) -> Proc:
        log = self.workdir / f"{host}-{name}.log"
        out = open(log, "ab")  # noqa: SIM115 - the child keeps it
        popen = subprocess.Popen(
            self.exec_argv(host, argv),
            stdout=kw.pop("stdout", out),
            stderr=out,
            stdin=kw.pop("stdin", subprocess.DEVNULL),
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            process_group=0,
        )
        out.close()
        proc = Proc(popen, f"{host}-{name}", log)
        self.procs.append(proc)
        return proc

    # --- BIRD ---

    def start_router_bird(self) -> None:
        peers = "\n".join(
            f"protocol bgp {d.name} from fleet {{ neighbor {d.address} as {FLEET_AS}; }}"
            for d in self.directors
        )
        conf = (
            textwrap.dedent(f"""\
            router id {ROUTER_CLIENT_SIDE};
            protocol device {{ }}
            protocol kernel {{ ipv4 {{ import none; export all; }}; merge paths on; }}
            protocol bfd {{
              interface "*" {{ interval {self.bfd_interval_ms} ms; multiplier 3; }};
            }}
            template bgp fleet {{
              local as {ROUTER_AS}; hold time {self.hold_time}; bfd on;
              connect retry time 1; error wait time 1, 5;
              ipv4 {{ import all; export none; }};
            }}
            """)
            + peers
            + "\n"
        )
        path = self.workdir / "router.bird.conf"
        path.write_text(conf)
        self.router_socket = self.workdir / "router.bird.ctl"
        self.spawn(
            "router",
            "bird",
            [*REALTIME, "bird", "-f", "-c", str(path), "-s", str(self.router_socket)],
        )
        wait_for("router BIRD", lambda: self.router_socket.exists(), 10)

    def start_bird(self, d: FleetDirector) -> None:
        """The director's own BIRD: its bird.conf is the operator's, with lvsmon's include."""
        if not d.include_file.exists():
            d.include_file.write_text("# lvsmon writes this file\n")
        conf = textwrap.dedent(f"""\
            router id {d.address};
            protocol device {{ }}
            include "{d.include_file}";
            """)
        path = self.workdir / f"{d.name}.bird.conf"
        path.write_text(conf)
        d.bird_socket.unlink(missing_ok=True)
        # As Debian runs it: user and group bird, the control socket bird:bird 0660. lvsmon
        # runs as root without CAP_DAC_OVERRIDE (lvsmon.privilege) and reaches the socket
        # through the bird group it joins at start (tests/netns/test_bgp_fleet.py).
        self.workdir.chmod(0o755)  # bird reads its config and lvsmon's include here
        for readable in (path, d.include_file):
            readable.chmod(0o644)
        d.bird = self.spawn(
            d.name,
            "bird",
            [
                *REALTIME,
                "bird",
                "-f",
                "-u",
                "bird",
                "-g",
                "bird",
                *("-c", str(path)),
                *("-s", str(d.bird_socket)),
            ],
        )
        wait_for(f"{d.name} BIRD", lambda: d.bird_socket.exists(), 10)

    def stop_bird(self, d: FleetDirector) -> None:
        assert d.bird is not None
        _kill(d.bird)

    def routerc(self, *args: str) -> str:
        return run("birdc", "-s", str(self.router_socket), *args, check=False)

    def next_hops(self, prefix: str = VIP) -> set[str]:
        """The directors the router's kernel forwards the VIP to."""
        out = self.ip("router", "-j", "route", "show", f"{prefix}/32", check=False)
        routes = json.loads(out) if out.strip() else []
        hops: set[str] = set()
        for r in routes:
            if "gateway" in r:
                hops.add(r["gateway"])
            for nh in r.get("nexthops", []):
                hops.add(nh["gateway"])
        return {d.name for d in self.directors if d.address in hops}

    def wait_next_hops(self, want: set[str], prefix: str = VIP, timeout: float = 20) -> None:
        """Until the router's kernel forwards `prefix` to exactly `want`; fails at once when
        the lvsmon of a director in `want` has exited."""

        def reached() -> bool:
            for d in self.directors:
                if d.name in want and d.lvsmon is not None and not d.lvsmon.alive():
                    raise AssertionError(f"{d.name}'s lvsmon exited:\n{d.lvsmon.output()}")
            return self.next_hops(prefix) == want

        try:
            wait_for(f"router routes {prefix} via {sorted(want)}", reached, timeout, 0.02)
        except AssertionError as exc:
            raise AssertionError(
                f"{exc}; now {sorted(self.next_hops(prefix))}\n"
                + self.routerc("show", "route", "all")
                + self.routerc("show", "protocols")
                + "".join(
                    f"{d.name}: {d.lvsmon.output()[-800:] if d.lvsmon else ''}"
                    for d in self.directors
                )
            ) from None

    def session_since(self, director: str) -> str:
        """When the router's session to `director` last changed state (BIRD's Since)."""
        for line in self.routerc("show", "protocols").splitlines():
            parts = line.split()
            if parts and parts[0] == director:
                return parts[4]
        return ""

    # --- the programs ---

    def real_server(self, rs: str) -> Proc:
        proc = self.spawn(
            rs, "server", [PYTHON, str(HERE / "fleet_apps.py"), "server", rs, str(PORT)]
        )
        wait_for(f"{rs} listening", lambda: "listening" in proc.output(), 10)
        return proc

    def lvsmon(self, d: FleetDirector, config: str) -> Proc:
        d.config_path = self.workdir / f"{d.name}.toml"
        d.config_path.write_text(config)
        d.lvsmon = self.spawn(
            d.name, "lvsmon", [PYTHON, "-m", "lvsmon.cli", "run", "-c", str(d.config_path)]
        )
        return d.lvsmon

    def director_config(
        self,
        d: FleetDirector,
        *,
        vips: Sequence[str] = (VIP,),
        drain: str = "2s",
        daemon: str = "",
        forwarding: str = "nat",
    ) -> str:
        """`daemon`: more [daemon] keys (e.g. dataplane = "ipvs" in the VM tier)."""
        services = "\n".join(
            _service(f"vs{n}", vip, forwarding) for n, vip in enumerate(vips, start=1)
        )
        return (
            textwrap.dedent(f"""\
            [daemon]
            metrics_listen = "{d.address}:{d.metrics_port}"
            pid_file = "{self.workdir / f"{d.name}.pid"}"
            shutdown_grace = "3s"
            log_level = "info"
            """)
            + daemon
            + services
            + textwrap.dedent(f"""
            [bgp]
            local_as = {FLEET_AS}
            router_id = "{d.address}"
            include_file = "{d.include_file}"
            control_socket = "{d.bird_socket}"
            liveness_interface = "lvbgp{d.index}"
            healthy_threshold = 1

            [bgp.drain]
            period = "{drain}"
            med = 1000
            prepend = 1

            [bgp.bfd]
            interval = "{self.bfd_interval_ms}ms"
            multiplier = 3

            [[bgp.peer]]
            name = "router"
            address = "{director_up(d.index)[0]}"
            remote_as = {ROUTER_AS}
            local_address = "{d.address}"
            bfd = true
            hold_time = "{self.hold_time}s"
            """)
            + fleet_gateway.failover_group(self.gateway_pair, d.name)
        )

    def flows(self, workers: int, count: int, hold_ms: int, seconds: float = 3600) -> Proc:
        argv = [
            PYTHON,
            str(HERE / "fleet_apps.py"),
            "flows",
            VIP,
            str(PORT),
            str(workers),
            str(count),
            str(hold_ms),
            str(seconds),
        ]
        return self.spawn("client", f"flows{len(self.procs)}", argv)

    @staticmethod
    def results(proc: Proc, timeout: float = 120) -> list[tuple[float, bool, str]]:
        """Wait for a `flows` program; its connections."""
        proc.popen.wait(timeout)
        return parse_flows(proc.output())

    def layout(self) -> dict[str, Any]:
        """The topology as built: namespaces, links and addresses, for the README picture."""
        return {
            "client": CLIENT,
            "router": {"asn": ROUTER_AS, "client_side": ROUTER_CLIENT_SIDE},
            "directors": [
                {
                    "name": d.name,
                    "asn": FLEET_AS,
                    "uplink": director_up(d.index),
                    "back": director_back(d.index),
                }
                for d in self.directors
            ],
            "real_servers": REAL_SERVERS,
            "vip": VIP,
            "gateway": fleet_gateway.GATEWAY if self.gateway_pair else None,
        }


def _service(name: str, vip: str, forwarding: str = "nat") -> str:
    reals = "\n".join(
        f'[[virtual_server.real_server]]\naddress = "{a}"\nport = {PORT}\n'
        for a in REAL_SERVERS.values()
    )
    return (
        textwrap.dedent(f"""
        [[virtual_server]]
        name = "{name}"
        address = "{vip}"
        port = {PORT}
        scheduler = "mh"
        scheduler_flags = ["mh-port", "mh-fallback"]
        on_failure = "quiesce"
        forwarding = "{forwarding}"
        announce = true

        [virtual_server.health_check]
        type = "tcp"
        interval = "300ms"
        timeout = "250ms"
        rise = 1
        fall = 3

        """)
        + reals
    )


def parse_flows(text: str) -> list[tuple[float, bool, str]]:
    """`flows` output -> (start, ok, answer or error)."""
    out = []
    for line in text.splitlines():
        m = re.fullmatch(r"(\d+\.\d+) (ok|fail) ?(.*)", line.strip())
        if m:
            out.append((float(m.group(1)), m.group(2) == "ok", m.group(3)))
    return out


def director_of(answer: str) -> str:
    """'rs1 198.51.100.2' -> 'd1' (the director whose back address the server saw)."""
    peer = answer.split()[-1]
    return f"d{int(peer.rsplit('.', 1)[1]) - 1}"


def _kill(proc: Proc) -> None:
    if proc.alive():
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.popen.wait(5)
    proc.close_pipes()
    time.sleep(0)
