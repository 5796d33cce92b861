"""Every program the test tiers run comes from a package scripts/install-test-deps
installs: a fresh machine gets all of them from `make test` (a missing one once
failed the VM tier there: the harness needs zstd for Debian's kernels)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SBIN = "/usr/local/sbin:/usr/sbin:/sbin"

# program the tests or benches run -> the Debian package that ships it
PROGRAMS = {
    "prometheus": "prometheus",
    "promtool": "prometheus",
    "prometheus-node-exporter": "prometheus-node-exporter",
    "haproxy": "haproxy",
    "wrk": "wrk",
    "nginx": "nginx-light",
    "qemu-system-x86_64": "qemu-system-x86",
    "busybox": "busybox-static",
    "depmod": "kmod",
    "modprobe": "kmod",
    "ipvsadm": "ipvsadm",
    "ip": "iproute2",
    "nft": "nftables",
    "keepalived": "keepalived",
    "ping": "iputils-ping",
    "zstd": "zstd",
    "xz": "xz-utils",
    "chromium": "chromium",  # the status page's browser tests (tests/browser.py)
    "chromedriver": "chromium-driver",
    "bird": "bird2",  # the BGP fleet (tests/netns/test_bgp_fleet.py, the VM tier)
    "birdc": "bird2",
    "faketime": "faketime",  # its libfaketime: tests/integration/test_wall_clock_jump.py
}


def _packages() -> set[str]:
    text = (ROOT / "scripts" / "install-test-deps").read_text()
    match = re.search(r"for pkg in (.*?); do", text, re.S)
    assert match, "scripts/install-test-deps lost its package loop"
    return set(match.group(1).replace("\\\n", " ").split())


def test_every_program_has_its_package_in_install_test_deps() -> None:
    missing = {prog: pkg for prog, pkg in PROGRAMS.items() if pkg not in _packages()}
    assert not missing, f"add to scripts/install-test-deps: {missing}"


def test_every_program_is_installed_here() -> None:
    absent = [p for p in PROGRAMS if not (shutil.which(p) or shutil.which(p, path=SBIN))]
    assert not absent, f"not installed (run scripts/install-test-deps): {absent}"
