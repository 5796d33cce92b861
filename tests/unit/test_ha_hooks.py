"""Notify hooks (argv, no shell, documented environment) and the sync-daemon role."""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import sys
from pathlib import Path

from lvsmon.ha.hooks import Serial, hook_job
from lvsmon.model.failover import FailoverGroup, GroupAddress, Hooks

GROUP = FailoverGroup(
    name="edge",
    vrid=51,
    interface="eth0",
    family=4,
    addresses=(GroupAddress(ipaddress.ip_address("192.0.2.100"), 24, "eth0"),),
)


def test_hook_runs_argv_with_the_environment(tmp_path: Path) -> None:
    out = tmp_path / "out"
    code = (
        "import os,sys; open(sys.argv[1],'a').write(' '.join([sys.argv[2]] + [os.environ[k] "
        "for k in ('LVSMON_HA_GROUP','LVSMON_HA_STATE','LVSMON_HA_PREVIOUS_STATE',"
        "'LVSMON_HA_PRIORITY')]) + '\\n')"
    )
    argv = (sys.executable, "-c", code, str(out), "$(not a shell)")
    group = dataclasses.replace(GROUP, hooks=Hooks(on_master=argv, on_stop=argv))

    async def main() -> None:
        serial = Serial()
        for state, previous in (
            ("master", "backup"),
            ("backup", "master"),
            ("initialize", "master"),
        ):
            job = hook_job(group, state, previous, 150)
            if job is not None:
                serial.submit("edge", job)
        await serial.drain(10)

    asyncio.run(main())
    assert out.read_text().splitlines() == [
        "$(not a shell) edge master backup 150",
        "$(not a shell) edge stop master 150",
    ]


def test_a_hanging_hook_is_killed_after_its_timeout(tmp_path: Path) -> None:
    argv = (sys.executable, "-c", "import time; time.sleep(30)")
    group = dataclasses.replace(GROUP, hooks=Hooks(on_master=argv, timeout=0.2))

    async def main() -> float:
        loop = asyncio.get_running_loop()
        started = loop.time()
        serial = Serial()
        job = hook_job(group, "master", "backup", 100)
        assert job is not None
        serial.submit("edge", job)
        await serial.drain(10)
        return loop.time() - started

    assert asyncio.run(main()) < 5
