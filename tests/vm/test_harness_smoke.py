"""Host-side smoke test: the QEMU harness boots a kernel with real IPVS.

One guest boot for the whole module (TCG is slow): the fixture runs a small
Python script in the guest that programs an IPVS service and reports what
it saw as JSON; the tests below check that report.
"""

from __future__ import annotations

import importlib.util
import json
import platform
import sys
import textwrap
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]


def _load_harness() -> ModuleType:
    # Loaded by path so this works whether or not tests/ is a package.
    spec = importlib.util.spec_from_file_location(
        "vmharness", Path(__file__).with_name("vmharness.py")
    )
    assert spec is not None and spec.loader is not None
    module = sys.modules.get("vmharness")
    if module is None:
        module = importlib.util.module_from_spec(spec)
        sys.modules["vmharness"] = module
        spec.loader.exec_module(module)
    return module


vmharness = _load_harness()

GUEST_SCRIPT = textwrap.dedent(
    """
    import json, os, platform, shutil, socket, subprocess

    report = {"release": platform.release(), "lvsmon_vm": os.environ.get("LVSMON_VM")}
    ipvsadm = shutil.which("ipvsadm")
    try:
        import pyroute2  # noqa: F401
        have_pyroute2 = True
    except ImportError:
        have_pyroute2 = False
    report["have_pyroute2"] = have_pyroute2
    if ipvsadm:
        p = subprocess.run([ipvsadm, "-A", "-t", "10.1.1.1:80", "-s", "wlc"],
                           capture_output=True, text=True)
        report["added_by"] = "ipvsadm"
        report["add_rc"] = p.returncode
        report["add_output"] = p.stdout + p.stderr
    elif have_pyroute2:
        from pyroute2 import IPVS, IPVSService
        with IPVS() as ipvs:
            ipvs.service("add", service=IPVSService(
                addr="10.1.1.1", port=80, protocol=socket.IPPROTO_TCP, sched_name="wlc"))
        report["added_by"] = "pyroute2"
        report["add_rc"] = 0
    with open("/proc/net/ip_vs") as fh:
        report["proc_ip_vs"] = fh.read()
    if have_pyroute2:
        from pyroute2 import IPVS
        services = []
        with IPVS() as ipvs:
            for msg in ipvs.service("dump"):
                svc = msg.get_attr("IPVS_CMD_ATTR_SERVICE")
                services.append([svc.get_attr("IPVS_SVC_ATTR_ADDR"),
                                 svc.get_attr("IPVS_SVC_ATTR_PORT"),
                                 svc.get_attr("IPVS_SVC_ATTR_SCHED_NAME")])
        report["pyroute2_services"] = services
    print("LVSMON-VM-REPORT " + json.dumps(report))
    """
)


@pytest.fixture(scope="module")
def guest() -> tuple[Any, dict[str, Any]]:
    """Boot the guest once; return (VmResult, parsed report)."""
    assets = vmharness.ensure_assets()
    result = vmharness.run_in_vm(
        [sys.executable, "-c", GUEST_SCRIPT], cwd=str(REPO), timeout=600, assets=assets
    )
    print(
        f"guest {assets.kver}: exit {result.returncode}, boot {result.boot_seconds:.1f} s, "
        f"total {result.total_seconds:.1f} s"
    )
    assert result.returncode == 0, result.output
    lines = [ln for ln in result.output.splitlines() if ln.startswith("LVSMON-VM-REPORT ")]
    assert lines, f"no report from the guest:\n{result.output}"
    return result, json.loads(lines[-1].split(" ", 1)[1])


@pytest.mark.vm
def test_guest_runs_its_own_kernel(guest: tuple[Any, dict[str, Any]]) -> None:
    result, report = guest
    assert report["lvsmon_vm"] == "1"
    assert report["release"] != platform.release()
    assert result.boot_seconds > 0
    assert result.total_seconds >= result.boot_seconds


@pytest.mark.vm
def test_ipvs_service_shows_in_proc(guest: tuple[Any, dict[str, Any]]) -> None:
    _, report = guest
    assert "added_by" in report, "neither ipvsadm nor pyroute2 is available in the guest"
    assert report["add_rc"] == 0, report.get("add_output")
    lines = report["proc_ip_vs"].splitlines()
    assert lines[0].startswith("IP Virtual Server version")
    # 10.1.1.1:80 as the kernel prints it: hex address and port.
    assert any(ln.split()[:3] == ["TCP", "0A010101:0050", "wlc"] for ln in lines), lines


@pytest.mark.vm
def test_pyroute2_sees_the_service(guest: tuple[Any, dict[str, Any]]) -> None:
    _, report = guest
    if not report["have_pyroute2"]:
        pytest.skip(f"pyroute2 is not installed for {sys.executable}")
    assert ["10.1.1.1", 80, "wlc"] in report["pyroute2_services"]


def test_failure_is_reported_without_a_boot() -> None:
    with pytest.raises(ValueError):
        vmharness.run_in_vm(["true"], cwd="relative/path")
