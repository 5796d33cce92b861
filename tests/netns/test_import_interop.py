"""One keepalived.conf, two directors: keepalived (Debian's) runs it as the backup
(`-i dir2`), lvsmon runs what `lvsmon import keepalived --config-id dir1` made of it as
the master. The corpus files tests/data/import/keepalived/interop-*.conf choose each
director's priority (and unicast peer) with @dir1 / @dir2 conditional lines.

keepalived accepts lvsmon's VRRPv3 adverts and stays backup while lvsmon holds the
addresses; lvsmon's graceful stop (priority 0) hands them to keepalived; lvsmon,
started again with the higher priority, takes them back (preempt)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.netns.conftest import _missing
from tests.netns.topology import NAT_GW, VIP, Topology, wait_for

DATA = Path(__file__).resolve().parents[1] / "data" / "import" / "keepalived"


@pytest.fixture(scope="module")
def net() -> Iterator[Topology]:
    reason = _missing()
    if reason:
        pytest.fail(f"netns tier {reason}")
    with Topology(with_real_servers=False) as t:
        yield t


def imported(name: str, config_id: str) -> str:
    argv = ["import", "keepalived", str(DATA / name), "--config-id", config_id]
    result = subprocess.run(
        [sys.executable, "-m", "lvsmon.cli", *argv], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


CASES = [("interop-web.conf", "VI_EDGE", True), ("interop-unicast.conf", "VI_UNICAST", False)]


@pytest.mark.parametrize(("name", "group", "moves_gateway"), CASES)
def test_keepalived_backup_and_imported_lvsmon_master(
    net: Topology, name: str, group: str, moves_gateway: bool
) -> None:
    lv = net.lvsmon("dir1", imported(name, "dir1"), listener=False)
    try:
        lv.wait_state("master", name=group)
        ka = net.keepalived("dir2", (DATA / name).read_text(), listener=False, config_id="dir2")
        wait_for("keepalived backup", lambda: "Entering BACKUP STATE" in ka.proc.output(), 5)
        time.sleep(1.5)  # several master-down intervals: lvsmon's adverts keep it backup
        assert "Entering MASTER STATE" not in ka.proc.output(), ka.proc.output()
        assert lv.holds_vip() and not ka.holds_vip()
        assert net.holds("dir1", NAT_GW, "eth1") == moves_gateway
        assert lv.group(group)["rejected"] == {}

        lv.terminate()  # priority 0: keepalived takes over at once
        wait_for("keepalived master", ka.holds_vip, 3)
        assert not net.holds("dir1")

        lv = net.lvsmon("dir1", imported(name, "dir1"), listener=False)
        lv.wait_state("master", 5, name=group)  # higher priority, preempt
        wait_for("keepalived released the VIP", lambda: not ka.holds_vip(), 3)
        ka.kill9()
        lv.terminate()
        assert not net.holds("dir1")
    finally:  # the next case starts from bare directors, even after a failure
        for proc in list(net.procs):
            Topology._kill(proc)
        net.procs.clear()
        for host in ("dir1", "dir2"):
            net.ip(host, "addr", "del", f"{VIP}/24", "dev", "eth0", check=False)
            net.ip(host, "addr", "del", f"{NAT_GW}/24", "dev", "eth1", check=False)
