"""The anchor of bench/health.py: HAProxy's health checks on the same real servers.

keepalived's checker would be the natural peer, but it cannot run on a kernel
without IPVS: its real servers exist only inside `virtual_server` blocks, and
any virtual server makes the checker process initialise IPVS first; without
the IPVS generic netlink family it logs "IPVS: Can't initialize ipvs: No such
file or directory" and exits FATAL (keepalived 2.2.7, `lvs_flush` or not).
HAProxy checks the same listeners the same way, in one thread: half the
servers with `option tcp-check` (connect, close), half with `option httpchk`
(GET /health, expect 200), `inter 1s`, 500 ms timeouts like lvsmon's side.

Both checkers are counted by the same observer, the kernel: TCP's ActiveOpens
(connect() calls) in a network namespace of the bench's own, where nothing else
opens connections, read before and after each measured window (only one checker
runs at a time). nginx cannot count them: HAProxy's connect-only check turns off
TCP_QUICKACK and resets before the handshake's last ACK, so nginx never accepts
those connections (lvsmon's tcp check completes the handshake, then resets).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from bench.proxy import stop

# maxconn: checks are not connections, but HAProxy sizes its descriptor limit from it
# (2 x maxconn + one per checked server), which must fit the bench's RLIMIT_NOFILE.
HAPROXY_CONF = """\
global
  nbthread 1
  maxconn 2000
  stats socket {tmp}/haproxy.sock
defaults
  timeout connect 500ms
  timeout check 500ms
  timeout client 5s
  timeout server 5s
  default-server check inter 1s
backend tcp
  mode tcp
  option tcp-check
{tcp_servers}
backend http
  mode http
  option httpchk
  http-check send meth GET uri /health ver HTTP/1.1 hdr Host bench hdr Connection close
  http-check expect status 200
{http_servers}
"""

NETNS_MARK = "LVSMON_BENCH_NETNS"


def in_private_netns(argv: list[str]) -> None:
    """Re-run this script in a new network namespace (root: unshare(1)), loopback up.
    The namespace has no name and ends with the last process in it."""
    if os.environ.get(NETNS_MARK) != "1":
        env = {**os.environ, NETNS_MARK: "1"}
        os.execvpe("unshare", ["unshare", "--net", "--", sys.executable, *argv], env)
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)


def tcp_active_opens() -> int:
    """connect() calls made so far in this network namespace (/proc/net/snmp)."""
    tcp = [line.split() for line in Path("/proc/net/snmp").read_text().splitlines()]
    names, values = (row for row in tcp if row[0] == "Tcp:")
    return int(values[names.index("ActiveOpens")])


def servers_up(tmp: Path) -> tuple[int, int]:
    """(up, total) servers by HAProxy's own verdict, from `show stat` on its socket."""
    import socket

    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(tmp / "haproxy.sock"))
        s.sendall(b"show stat\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    lines = data.decode().splitlines()
    names = lines[0].lstrip("# ").split(",")
    status, svname = names.index("status"), names.index("svname")
    rows = [line.split(",") for line in lines[1:] if line]
    servers = [r for r in rows if r[svname] not in ("FRONTEND", "BACKEND")]
    return sum(r[status].startswith("UP") for r in servers), len(servers)


@contextlib.contextmanager
def haproxy(eps: list[tuple[str, int]], workdir: Path) -> Iterator[subprocess.Popen[bytes]]:
    """HAProxy checking every endpoint (even indices tcp, odd http, as lvsmon's side)."""
    tmp = workdir / "haproxy"
    tmp.mkdir(exist_ok=True)
    tcp = [f"  server t{i} {a}:{p}" for i, (a, p) in enumerate(eps) if i % 2 == 0]
    http = [f"  server h{i} {a}:{p}" for i, (a, p) in enumerate(eps) if i % 2]
    conf = tmp / "haproxy.cfg"
    conf.write_text(
        HAPROXY_CONF.format(tmp=tmp, tcp_servers="\n".join(tcp), http_servers="\n".join(http))
    )
    with (tmp / "haproxy.log").open("wb") as out:
        proc = subprocess.Popen(
            ["haproxy", "-db", "-f", str(conf)], stdout=out, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 30
        while not (tmp / "haproxy.sock").exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                log = (tmp / "haproxy.log").read_text()[-2000:]
                raise SystemExit(f"bench/health.py: haproxy did not start:\n{log}")
            time.sleep(0.05)
        yield proc
    finally:
        stop(proc)
