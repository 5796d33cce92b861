"""Privilege and execution, proven on the real daemon and real programs (root).

- script security (keepalived's enable_script_security): `lvsmon check` refuses
  an exec check or notify hook that others could change, naming the key and path;
- exec checks and notify hooks run as `daemon.script_user` with no capability,
  and a hook that times out dies with everything it started;
- after start the daemon keeps only the capabilities it needs, in every thread,
  and `daemon.user` runs the proxy plane as an unprivileged user that still
  balances, reloads and binds a port below 1024 (read from /proc/PID/status).
"""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lvsmon import privilege
from lvsmon.ha import hooks
from tests.integration.harness import REPO, Daemon, backends, reached, wait_for
from tests.integration.test_daemon import service
from tests.integration.test_health_exec import alive
from tests.ports import free_port

NOBODY = pwd.getpwnam("nobody")
# root: switches users (a missing prerequisite fails in CI, as in the netns tier)
pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0 and os.environ.get("CI") != "true", reason="needs root"),
]


@pytest.fixture
def shared() -> Iterator[Path]:
    """A directory every user can traverse (pytest's tmp_path is root's 0700)."""
    path = Path(tempfile.mkdtemp(prefix="lvsmon-priv-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def write_script(path: Path, body: str, mode: int = 0o755) -> Path:
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(mode)
    return path


def lvsmon_check(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lvsmon.cli", "check", "-c", str(config)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
    )


def exec_service(program: Path) -> str:
    return "\n" + (
        service(
            free_port(),
            f'[[virtual_server.real_server]]\naddress = "127.0.0.1"\nport = {free_port()}\n',
            extra=f'[virtual_server.health_check]\ntype = "exec"\nprogram = "{program}"\n'
            'interval = "200ms"\n',
        )
    )


def test_script_security_refuses_programs_others_could_change(shared: Path) -> None:
    config = shared / "lvsmon.toml"
    key = "virtual_server[web].real_server[1].health_check.program"
    loose_dir = shared / "loose"
    loose_dir.mkdir()
    loose_dir.chmod(0o777)  # writable by all, no sticky bit: anyone can swap the script
    cases = {
        "writable by everyone": write_script(shared / "a.sh", "exit 0", 0o777),
        "writable by its group": write_script(shared / "b.sh", "exit 0", 0o775),
        "in a directory anyone can write": write_script(loose_dir / "c.sh", "exit 0"),
    }
    os.chown(shared / "b.sh", 0, NOBODY.pw_gid)
    for what, program in cases.items():
        config.write_text('[daemon]\ndataplane = "proxy"\n' + exec_service(program))
        result = lvsmon_check(config)
        assert result.returncode != 0, what
        assert f'{key}: "{program}" is not safe to run' in result.stdout + result.stderr, what
    # the same file made safe is accepted; so is anything with the check turned off
    (shared / "a.sh").chmod(0o755)
    config.write_text('[daemon]\ndataplane = "proxy"\n' + exec_service(shared / "a.sh"))
    assert lvsmon_check(config).returncode == 0
    config.write_text(
        '[daemon]\ndataplane = "proxy"\nscript_security = false\n'
        + exec_service(loose_dir / "c.sh")
    )
    assert lvsmon_check(config).returncode == 0


def test_notify_hook_in_a_writable_directory_is_refused(shared: Path) -> None:
    loose = shared / "loose"
    loose.mkdir()
    loose.chmod(0o777)
    hook = write_script(loose / "ha-event", "exit 0")
    config = shared / "lvsmon.toml"
    config.write_text(
        '[daemon]\ndataplane = "proxy"\n\n[[failover_group]]\nname = "edge"\nvrid = 9\n'
        'interface = "lo"\npriority = 100\n[[failover_group.address]]\n'
        'address = "192.0.2.1/32"\n[failover_group.notify]\n'
        f'on_master = ["{hook}", "master"]\n'
    )
    out = lvsmon_check(config)
    assert out.returncode != 0
    assert f'failover_group[edge].notify.on_master: "{hook}" is not safe' in out.stdout + out.stderr


def caps_of(pid: int | str) -> dict[str, int]:
    return privilege.status_caps(pid)


def uid_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[2])  # effective
    raise AssertionError("no Uid line")


def test_exec_checks_run_as_the_script_user_without_capabilities(shared: Path) -> None:
    out = shared / "out"
    out.mkdir()
    out.chmod(0o777)
    probe = write_script(
        shared / "probe.sh",
        f"id -u > {out}/uid.tmp; grep -E '^Cap(Eff|Prm|Amb)' /proc/self/status > {out}/caps.tmp\n"
        f"mv {out}/uid.tmp {out}/uid; mv {out}/caps.tmp {out}/caps; exit 0",
    )
    d = Daemon(shared, 'script_user = "nobody"\n' + exec_service(probe))
    try:
        d.start()
        wait_for(lambda: (out / "caps").exists(), 10, "the exec check to run")
        assert (out / "uid").read_text().strip() == str(NOBODY.pw_uid)
        said = dict(line.split(":") for line in (out / "caps").read_text().splitlines())
        assert {k: int(v, 16) for k, v in said.items()} == {"CapEff": 0, "CapPrm": 0, "CapAmb": 0}
        # the daemon stayed root with the data plane's three, plus what starting
        # and killing another user's scripts takes, in every thread
        assert d.proc is not None
        want = privilege.mask_of(privilege.DATA_PLANE + privilege.SCRIPTS_AS_OTHER_USER)
        assert uid_of(d.proc.pid) == 0
        for task in Path(f"/proc/{d.proc.pid}/task").iterdir():
            caps = caps_of(f"{d.proc.pid}/task/{task.name}")
            assert caps["CapEff"] == caps["CapPrm"] == caps["CapBnd"] == want, (
                task.name,
                privilege.names_of(int(caps["CapEff"])),
            )
    finally:
        d.kill()


def test_daemon_user_runs_the_proxy_plane_unprivileged(shared: Path) -> None:
    with backends("a", "b") as (a, b):
        vip = free_port()
        body = 'user = "nobody"\n' + service(vip, a.toml(), b.toml(), scheduler="rr")
        d = Daemon(shared, body)
        d.path.chmod(0o644)  # nobody must read it to reload
        try:
            d.start()
            assert d.proc is not None
            pid = d.proc.pid
            wait_for(lambda: uid_of(pid) == NOBODY.pw_uid, 10, "the switch to nobody")
            want = privilege.mask_of(privilege.DATA_PLANE)
            for task in Path(f"/proc/{pid}/task").iterdir():
                caps = caps_of(f"{pid}/task/{task.name}")
                assert uid_of(int(task.name)) == NOBODY.pw_uid
                assert caps["CapEff"] & ~want == 0 and caps["CapBnd"] == want, task.name
            assert caps_of(pid)["CapEff"] == want
            served = {reached(vip) for _ in range(4)}
            assert served == {"a", "b"}
            # a reload as nobody adds a virtual server on a port below 1024: the kept
            # CAP_NET_BIND_SERVICE binds it
            low = _free_low_port()
            d.reload(body + service(low, a.toml(), name="low"))
            wait_for(lambda: reached(low) == "a", 10, "the privileged port")
            assert d.sample("lvsmon_config_last_reload_successful") == 1
        finally:
            d.kill()


def _free_low_port() -> int:
    import socket

    for port in range(900, 1000):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError("no free port below 1024")


def test_a_hook_that_times_out_dies_with_everything_it_started(shared: Path) -> None:
    pids = shared / "pids"
    hook = write_script(
        shared / "hook.sh",
        f"sleep 300 & echo $! > {pids}.tmp; echo $$ >> {pids}.tmp; mv {pids}.tmp {pids}\nsleep 300",
    )
    began = time.monotonic()
    asyncio.run(hooks.run_program([str(hook)], dict(os.environ), 0.5))
    assert time.monotonic() - began < 30  # not the 300 s of its sleeps
    children = [int(p) for p in pids.read_text().split()]
    time.sleep(0.1)
    for pid in children:
        assert not alive(pid), f"{pid} outlived the hook's timeout"


def test_hooks_run_as_the_script_user(shared: Path) -> None:
    out = shared / "out"
    out.mkdir()
    out.chmod(0o777)
    hook = write_script(shared / "hook.sh", f"id -u > {out}/uid")
    hooks.run_as = privilege.Account.named("nobody")
    try:
        asyncio.run(hooks.run_program([str(hook)], dict(os.environ), 10))
    finally:
        hooks.run_as = None
    assert (out / "uid").read_text().strip() == str(NOBODY.pw_uid)
