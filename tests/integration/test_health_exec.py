"""`exec` checks: real programs, exit codes, dynamic weights, timeouts that kill the whole
process group, no zombies, and arguments passed literally (no shell)."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from pathlib import Path

import pytest

from lvsmon.health.monitor import Target
from lvsmon.model import DestKey
from lvsmon.model.health import CheckType, ExecSpec, HealthCheck, Reason
from tests.integration.test_health_support import WEB, NoJitter, Watch, first_verdict, run

DEST = DestKey("127.0.0.1", 8080)


def script(tmp: Path, body: str, name: str = "check.py") -> str:
    path = tmp / name
    path.write_text(f"#!{sys.executable}\nimport os, sys, json, time, subprocess\n{body}\n")
    path.chmod(0o755)
    return str(path)


def exec_check(
    program: str, *args: str, timeout: float = 2.0, dynamic: bool = False, interval: float = 3.0
) -> HealthCheck:
    return HealthCheck(
        CheckType.EXEC, interval=interval, timeout=timeout, spec=ExecSpec(program, args, dynamic)
    )


def zombies() -> set[int]:
    return {pid for pid, state in children_of_this_process() if state == "Z"}


def children_of_this_process() -> list[tuple[int, str]]:
    """(pid, state) of every child: a zombie shows as state Z."""
    out = []
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        for pid in (task / "children").read_text().split():
            stat = Path(f"/proc/{pid}/stat").read_text()
            out.append((int(pid), stat.rsplit(")", 1)[1].split()[0]))
    return out


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


@pytest.mark.parametrize(
    ("code", "up", "reason"),
    [
        (0, True, None),
        (1, False, Reason.EXEC_FAILED),
        (3, False, Reason.EXEC_FAILED),
    ],
)
def test_exit_codes(tmp_path: Path, code: int, up: bool, reason: Reason | None) -> None:
    program = script(tmp_path, f"print('said {code}'); sys.exit({code})")
    state = run(first_verdict(exec_check(program), DEST)).state
    assert (state.up, state.reason) == (up, reason)
    if not up:
        assert state.detail == f"exit {code}: said {code}"


def test_dynamic_weight_from_the_exit_code(tmp_path: Path) -> None:
    program = script(tmp_path, "sys.exit(12)")

    async def scenario() -> None:
        check = exec_check(program, dynamic=True)
        async with Watch([Target(WEB, DEST, check, "web", weight=3)], rng=NoJitter()) as w:
            await w.settled()
            assert w.monitor.weights()[1] == {(WEB, DEST): 10}  # 12 - 2: the dynamic weight

    run(scenario())
    # without dynamic_weight, 12 is just a failure
    assert not run(first_verdict(exec_check(program), DEST)).state.up


def test_arguments_and_environment_are_passed_literally(tmp_path: Path) -> None:
    out = tmp_path / "argv.json"
    program = script(
        tmp_path,
        f"""
env = {{k: v for k, v in os.environ.items() if k.startswith("LVSMON_")}}
json.dump({{"argv": sys.argv[1:], "env": env}}, open({str(out)!r}, "w"))
""",
    )
    canary = tmp_path / "pwned"
    args = (
        "two words",
        f"$(touch {canary})",
        f"; touch {canary}",
        "`id`",
        "*",
        "'q' \"qq\"",
        "a\nb",
        "{address}:{port}",
        "vs={virtual_server}",
        "{unknown}",
    )
    probe = run(first_verdict(exec_check(program, *args), DEST, vs="web site"))
    assert probe.state.up, probe.state.detail
    seen = json.loads(out.read_text())
    assert seen["argv"] == [*args[:7], "127.0.0.1:8080", "vs=web site", "{unknown}"]
    assert seen["env"] == {
        "LVSMON_REAL_SERVER_ADDRESS": "127.0.0.1",
        "LVSMON_REAL_SERVER_PORT": "8080",
        "LVSMON_VIRTUAL_SERVER": "web site",
        "LVSMON_CHECK_TIMEOUT": "2",
    }
    assert not canary.exists()


def test_timeout_kills_the_process_group_and_leaves_no_zombies(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    program = script(
        tmp_path,
        f"""
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
grandchild_holder = subprocess.Popen(["sleep", "60"], stdout=sys.stdout)
open({str(pids)!r}, "w").write(f"{{os.getpid()}} {{child.pid}} {{grandchild_holder.pid}}")
time.sleep(60)
""",
    )
    before = zombies()  # other tests' leftovers, if any, are not ours
    start = time.monotonic()
    state = run(first_verdict(exec_check(program, timeout=1.5), DEST)).state
    assert state.reason is Reason.TIMEOUT and "wait for the program" in state.detail
    assert time.monotonic() - start < 3
    listed = [int(p) for p in pids.read_text().split()]
    deadline = time.monotonic() + 2
    while any(alive(p) for p in listed) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not [p for p in listed if alive(p)], "the program's process group survived"
    assert zombies() <= before


def test_leftovers_of_a_program_that_exited_are_killed(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    program = script(
        tmp_path,
        f"""
bg = subprocess.Popen(["sleep", "60"], stdout=sys.stdout)
open({str(pids)!r}, "w").write(str(bg.pid))
sys.exit(0)
""",
    )
    start = time.monotonic()
    assert run(first_verdict(exec_check(program), DEST)).state.up
    assert time.monotonic() - start < 2  # not held up by the background child's stdout
    bg = int(pids.read_text())
    deadline = time.monotonic() + 2
    while alive(bg) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not alive(bg)


def test_a_program_that_cannot_start(tmp_path: Path) -> None:
    program = script(tmp_path, "sys.exit(0)")
    os.unlink(program)  # valid at config load, gone at run time
    state = run(first_verdict(exec_check(program), DEST)).state
    assert state.reason is Reason.EXEC_FAILED and "cannot run" in state.detail


def test_killed_by_a_signal(tmp_path: Path) -> None:
    program = script(tmp_path, "import signal; os.kill(os.getpid(), signal.SIGSEGV)")
    state = run(first_verdict(exec_check(program), DEST)).state
    assert state.reason is Reason.EXEC_FAILED and state.detail.startswith("killed by SIGSEGV")


def test_repeated_checks_leave_no_zombies(tmp_path: Path) -> None:
    program = script(tmp_path, "sys.exit(0)", "fast.py")
    slow = script(tmp_path, "time.sleep(5)", "slow.py")
    before = zombies()

    async def scenario() -> None:
        targets = [
            Target(WEB, DEST, exec_check(program, interval=0.1, timeout=0.08), "a"),
            Target(WEB._replace(port=81), DEST, exec_check(slow, interval=0.1, timeout=0.05), "b"),
        ]
        async with Watch(targets) as w:
            import asyncio

            await asyncio.sleep(1.0)
            assert sum(sum(p.durations.counts) for p in w.monitor.probes()) >= 4

    run(scenario())
    time.sleep(0.1)
    assert zombies() <= before


def test_a_timeout_while_the_program_is_being_started_loses_nothing() -> None:
    """1 ms: the deadline falls while the process is being set up; it is still killed
    and reaped once it exists."""
    before = zombies()
    marker = f"{time.monotonic() % 1000:.6f}"
    state = run(first_verdict(exec_check("/bin/sleep", "29", marker, timeout=0.001), DEST)).state
    assert state.reason is Reason.TIMEOUT

    def strays() -> list[str]:
        found = []
        for proc in Path("/proc").iterdir():
            with contextlib.suppress(OSError):
                if proc.name.isdigit() and marker.encode() in (proc / "cmdline").read_bytes():
                    found.append(proc.name)
        return found

    deadline = time.monotonic() + 3
    while (strays() or zombies() - before) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not strays() and zombies() <= before
