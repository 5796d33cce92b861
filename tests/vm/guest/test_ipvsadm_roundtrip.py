"""`ipvsadm -S -n` -> `lvsmon import ipvsadm` -> lvsmon's IPVS plane -> `ipvsadm -S -n`,
byte-identical, in a real kernel.

Rules are programmed with the real ipvsadm (every protocol, IPv4 and IPv6, fwmark,
the three forwarding methods, persistence with netmasks, scheduler flags,
thresholds, weight 0, several real servers whose kernel order matters). Then:
  1. the table is cleared and `lvsmon run` programs it from the imported config: at
     READY=1 (sent once the table is programmed) `ipvsadm -S -n` is the same text,
     and still is after lvsmon stops (it leaves the table);
  2. lvsmon starts again over that table, adopting it (the import's adopt = true,
     a fresh ownership file): nothing changes.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.vm.guest.ipvs_topology import sh

LVSMON = str(Path(sys.executable).with_name("lvsmon"))
PORT = 19161
RULES = [
    "-A -t 192.0.2.10:80 -s wlc -p 300 -M 255.255.255.0",
    "-a -t 192.0.2.10:80 -r 10.1.0.2:8080 -m -w 3 -x 1000 -y 800",
    "-a -t 192.0.2.10:80 -r 10.1.0.3:8080 -m -w 1",
    "-a -t 192.0.2.10:80 -r 10.1.0.4:8080 -m -w 0",
    "-A -t 192.0.2.10:443 -s wrr",
    "-a -t 192.0.2.10:443 -r 10.1.0.2:443 -g -w 5",
    "-a -t 192.0.2.10:443 -r 10.1.0.3:443 -i -w 2",
    "-A -u 192.0.2.10:53 -s sh -b sh-port",
    "-a -u 192.0.2.10:53 -r 10.1.0.2:53 -m -w 1",
    "-a -u 192.0.2.10:53 -r 10.1.0.3:53 -m -w 2",
    "-A -f 25 -s rr -p 60",
    "-a -f 25 -r 10.1.0.5:0 -g -w 1",
    "-a -f 25 -r 10.1.0.6:0 -g -w 1",
    "-A -t [2001:db8::10]:443 -s mh -b mh-fallback,mh-port -p 120 -M 64",
    "-a -t [2001:db8::10]:443 -r [2001:db8:1::2]:8443 -m -w 1",
    "-a -t [2001:db8::10]:443 -r [2001:db8:1::3]:8443 -m -w 1",
    "-A --sctp-service 192.0.2.10:3868 -s lc",
    "-a --sctp-service 192.0.2.10:3868 -r 10.1.0.7:3868 -m -w 4",
]


@pytest.fixture
def clean() -> Iterator[None]:
    sh("ipvsadm", "-C")
    yield
    sh("ipvsadm", "-C")


def run_lvsmon(config: Path, tmp: Path) -> str:
    """Start `lvsmon run`, return `ipvsadm -S -n` at its READY=1, stop it (table stays)."""
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp / f"notify-{config.stem}"))
    notify.settimeout(300)
    log = open(tmp / f"{config.stem}.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [LVSMON, "run", "-c", str(config)],
        stderr=log,
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "NOTIFY_SOCKET": notify.getsockname()},
    )
    try:
        while b"READY=1" not in notify.recv(4096).split(b"\n"):
            pass
        table = sh("ipvsadm", "-S", "-n")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(120) == 0, (tmp / f"{config.stem}.log").read_text()
        return table
    finally:
        if proc.poll() is None:
            proc.kill()
        notify.close()
        log.close()


def test_ipvsadm_save_round_trip_is_byte_identical(clean: None, tmp_path: Path) -> None:
    for rule in RULES:
        sh("ipvsadm", *rule.split())
    before = sh("ipvsadm", "-S", "-n")
    assert before.count("\n") == len(RULES)
    saved = tmp_path / "rules"
    saved.write_text(before)
    imported = subprocess.run(
        [LVSMON, "import", "ipvsadm", str(saved)], capture_output=True, text=True, timeout=120
    )
    assert imported.returncode == 0, imported.stderr
    assert imported.stderr.endswith("0 errors, 0 warnings, 0 notes\n"), imported.stderr
    config = tmp_path / "imported.toml"
    config.write_text(
        imported.stdout.replace("127.0.0.1:9108", f"127.0.0.1:{PORT}")
        .replace('"/run/lvsmon.pid"', f'"{tmp_path}/lvsmon.pid"')
        .replace("adopt = true", f'adopt = true\nstate_file = "{tmp_path}/owned-1.json"')
    )

    sh("ipvsadm", "-C")  # 1: lvsmon programs the whole table itself
    assert run_lvsmon(config, tmp_path) == before
    assert sh("ipvsadm", "-S", "-n") == before

    adopt = tmp_path / "adopt.toml"  # 2: a second start adopts it as it is
    adopt.write_text(config.read_text().replace("owned-1.json", "owned-2.json"))
    assert run_lvsmon(adopt, tmp_path) == before
    assert sh("ipvsadm", "-S", "-n") == before
