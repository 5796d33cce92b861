"""Client, director and real servers on veth, for the nft data plane (root only).

    client ── eth0 ─ c0 ── dir ── br0 ─┬─ rs1
    10.1.0.0/24, fd01::/64             ├─ rs2     10.2.0.0/24, fd02::/64
    VIPs 10.1.0.100, fd01::100 on c0   └─ rs3

The client has SOURCES extra addresses (sh/mh hash the source) and routes
203.0.113.0/24 (dh's destinations, a fwmark service) via the director. The real
servers' default route is the director (NAT without SNAT, like IPVS NAT). The
director's forwarding sysctls are left off: the nft data plane turns them on.
Names carry a per-run tag; the namespaces are deleted (and every process killed)
even when a test fails. Also imported by bench/nft.py.
"""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.netns.topology import PYTHON, Proc, Topology, run, wait_for

HERE = Path(__file__).resolve().parent
VIP, VIP6 = "10.1.0.100", "fd01::100"
CLIENT, CLIENT6 = "10.1.0.2", "fd01::2"
DH_NET = "203.0.113"  # client -> 203.0.113.x: marked on the director (fwmark service)
REALS = {"rs1": "10.2.0.11", "rs2": "10.2.0.12", "rs3": "10.2.0.13"}
REALS6 = {"rs1": "fd02::11", "rs2": "fd02::12", "rs3": "fd02::13"}
SOURCES = 48


def sources(n: int = SOURCES) -> list[str]:
    return [f"10.1.0.{10 + i}" for i in range(n)]


def sources6(n: int = SOURCES) -> list[str]:
    return [f"fd01::{10 + i:x}" for i in range(n)]


@dataclass
class NftTopology(Topology):
    hosts: tuple[str, ...] = ("client", "dir", *REALS)
    servers: dict[str, Proc] = field(default_factory=dict)

    def ns(self, host: str) -> str:
        return f"lvnf{self.tag}-{host}"

    def up(self) -> None:
        for host in self.hosts:
            self.add_namespace(host)
        self.veth("client", "eth0", "dir", "c0")
        bridge = "br0 type bridge stp_state 0 forward_delay 0"
        self.ip("dir", "link", "add", *bridge.split())
        self.ip("dir", "link", "set", "br0", "up")
        for host in REALS:
            self.veth(host, "eth0", "dir", f"p-{host}")
            self.ip("dir", "link", "set", f"p-{host}", "master", "br0", "up")
            self.ip(host, "link", "set", "eth0", "up")
            self.ip(host, "addr", "add", f"{REALS[host]}/24", "dev", "eth0")
            self.ip(host, "addr", "add", f"{REALS6[host]}/64", "dev", "eth0", "nodad")
            self.ip(host, "route", "add", "default", "via", "10.2.0.1")
            self.ip(host, "-6", "route", "add", "default", "via", "fd02::1")
        self.ip("dir", "link", "set", "c0", "up")
        for address in ("10.1.0.1/24", f"{VIP}/24"):
            self.ip("dir", "addr", "add", address, "dev", "c0")
        for address in ("fd01::1/64", f"{VIP6}/64"):
            self.ip("dir", "addr", "add", address, "dev", "c0", "nodad")
        self.ip("dir", "addr", "add", "10.2.0.1/24", "dev", "br0")
        self.ip("dir", "addr", "add", "fd02::1/64", "dev", "br0", "nodad")
        self.ip("client", "link", "set", "eth0", "up")
        for address in (CLIENT, *sources()):
            self.ip("client", "addr", "add", f"{address}/24", "dev", "eth0")
        for address in (CLIENT6, *sources6()):
            self.ip("client", "addr", "add", f"{address}/64", "dev", "eth0", "nodad")
        self.ip("client", "route", "add", "default", "via", "10.1.0.1")
        self.ip("client", "-6", "route", "add", "default", "via", "fd01::1")
        self.ip("client", "route", "add", f"{DH_NET}.0/24", "via", "10.1.0.1")

    def veth(self, host: str, name: str, peer_host: str, peer: str) -> None:
        """A veth pair created straight in the two namespaces (the host never sees it)."""
        ends = f"{name} netns {self.ns(host)} type veth peer name {peer} netns {self.ns(peer_host)}"
        run("ip", "link", "add", *ends.split())

    def down(self) -> None:
        for proc in reversed(self.procs):
            self._kill(proc)
        for host in self.hosts:
            run("ip", "netns", "del", self.ns(host), check=False)
        shutil.rmtree(self.workdir, ignore_errors=True)

    # --- programs -------------------------------------------------------------------

    def start_servers(self, ports: list[int], hosts: list[str] | None = None) -> None:
        for host in hosts or list(REALS):
            argv = [PYTHON, str(HERE / "nft_server.py"), host, *map(str, ports)]
            proc = self.servers[host] = self.spawn(host, "server", argv)
            wait_for(f"server on {host}", functools.partial(_listening, proc), 10)

    def __enter__(self) -> NftTopology:
        super().__enter__()
        return self

    def start_lvsmon(self, config: str, name: str = "lvsmon") -> Proc:
        path = self.workdir / f"{name}.toml"
        path.write_text(config)
        proc = self.spawn("dir", name, [PYTHON, "-m", "lvsmon.cli", "run", "-c", str(path)])
        wait_for("lvsmon /status", lambda: self.status(proc) is not None, 20)
        return proc

    def status(self, proc: Proc | None = None) -> dict[str, Any] | None:
        if proc is not None and not proc.alive():
            raise AssertionError(f"lvsmon exited:\n{proc.output()}")
        try:
            return dict(json.loads(self.http("/status")))
        except (RuntimeError, ValueError):
            return None

    def http(self, path: str) -> str:
        code = (
            "import sys, urllib.request as u; sys.stdout.write(u.urlopen("
            f"'http://127.0.0.1:9108{path}', timeout=10).read().decode())"
        )
        return self.in_ns("dir", code)

    def connect(self, jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Run jobs through nft_client.py in the client's namespace."""
        argv = self.exec_argv("client", [PYTHON, str(HERE / "nft_client.py")])
        out = run(*argv, input=json.dumps(jobs))
        results: list[dict[str, Any]] = json.loads(out)
        return results

    def hold(self, address: str, port: int, count: int) -> Holder:
        """`count` long-lived connections from the client (nft_holder.py)."""
        argv = [PYTHON, str(HERE / "nft_holder.py"), address, str(port), str(count)]
        proc = self.spawn("client", "holder", argv, stdin=subprocess.PIPE, stdout_log=False)
        return Holder(proc, json.loads(Holder.line(proc)))

    def nft_script(self, host: str, script: str) -> None:
        run(*self.exec_argv(host, ["nft", "-f", "-"]), input=script)

    def nft_json(self, host: str, *command: str) -> list[dict[str, Any]]:
        out = run(*self.exec_argv(host, ["nft", "-j", *command]))
        items: list[dict[str, Any]] = json.loads(out)["nftables"]
        return [i for i in items if "metainfo" not in i]


def _listening(proc: Proc) -> bool:
    return "listening" in proc.output()


@dataclass
class Holder:
    proc: Proc
    names: list[str]  # the real server behind each connection

    @staticmethod
    def line(proc: Proc) -> str:
        assert proc.popen.stdout is not None
        text = proc.popen.stdout.readline().decode()
        if not text:
            raise AssertionError(f"nft_holder.py ended:\n{proc.output()}")
        return text

    def ping(self) -> list[bool]:
        """Which connections still carry data both ways."""
        assert self.proc.popen.stdin is not None
        self.proc.popen.stdin.write(b"ping\n")
        self.proc.popen.stdin.flush()
        answer: list[bool] = json.loads(self.line(self.proc))
        return answer

    def close(self) -> None:
        assert self.proc.popen.stdin is not None
        self.proc.popen.stdin.close()
        self.proc.popen.wait(5)


def metrics_value(text: str, name: str, **labels: str) -> float | None:
    """One sample of a Prometheus text exposition, None when absent."""
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        head, _, value = line.rpartition(" ")
        if head == name and not labels:
            return float(value)
        if head.startswith(name + "{") and _labels(head[len(name) :]) == want:
            return float(value)
    return None


def _labels(block: str) -> str:
    parts = sorted(p for p in block.strip("{}").split(",") if p)
    return ",".join(parts)
