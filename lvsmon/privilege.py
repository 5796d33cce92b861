"""Give up privileges once started: keep only the capabilities the data plane needs,
optionally as an unprivileged user (`daemon.user`), and run scripts as `daemon.script_user`.

From the moment it has read its config and written its pid file (before any
other thread exists: capabilities are per thread), the daemon keeps CAP_NET_ADMIN
(IPVS netlink, addresses), CAP_NET_RAW (raw sockets, ARP) and
CAP_NET_BIND_SERVICE (a virtual server or metrics port below 1024), plus, only
where needed: CAP_SYS_NICE for the VRRP process's real-time priority (failover
groups), and CAP_SETUID, CAP_SETGID, CAP_KILL to start scripts as `script_user`
and kill their process groups. Everything else leaves the bounding set too, so
no program started later regains it.

Capabilities are per thread in Linux: `restrict` runs on the main thread before
any other thread exists; threads created later inherit the reduced sets
(tests/integration/test_privileges.py reads every /proc/PID/task/*/status).

ctypes over libc's prctl(2) and capset(2): the calls are five and stable, while
the PyPI bindings (python-prctl, cap-ng) need libcap headers and a compiler.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import grp
import os
import pwd
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

CAPS = {
    "CAP_KILL": 5,
    "CAP_SETGID": 6,
    "CAP_SETUID": 7,
    "CAP_NET_BIND_SERVICE": 10,
    "CAP_NET_ADMIN": 12,
    "CAP_NET_RAW": 13,
    "CAP_SYS_NICE": 23,
}
DATA_PLANE = ("CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_NET_BIND_SERVICE")
SCRIPTS_AS_OTHER_USER = ("CAP_SETUID", "CAP_SETGID", "CAP_KILL")
REALTIME_VRRP = ("CAP_SYS_NICE",)

PR_CAPBSET_DROP = 24
PR_SET_KEEPCAPS = 8
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_RAISE = 2
PR_CAP_AMBIENT_CLEAR_ALL = 4
_LINUX_CAPABILITY_VERSION_3 = 0x20080522
_LAST_CAP_FILE = "/proc/sys/kernel/cap_last_cap"


class PrivilegeError(Exception):
    """Dropping privileges failed: the daemon must not run on with more than it said."""


@dataclass(frozen=True, slots=True)
class Account:
    name: str
    uid: int
    gid: int

    @classmethod
    def named(cls, name: str) -> Account:
        """Raises KeyError when there is no such user."""
        entry = pwd.getpwnam(name)
        return cls(name, entry.pw_uid, entry.pw_gid)


class _Header(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _Data(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise PrivilegeError(f"{what}: {os.strerror(err)}")


def _prctl(option: int, arg: int = 0, arg3: int = 0) -> None:
    _check(_libc.prctl(option, ctypes.c_ulong(arg), ctypes.c_ulong(arg3), 0, 0), f"prctl({option})")


def _capset(mask: int) -> None:
    header = _Header(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_Data * 2)()
    for i in range(2):
        word = (mask >> (32 * i)) & 0xFFFFFFFF
        data[i].effective = data[i].permitted = data[i].inheritable = word
    _check(_libc.capset(ctypes.byref(header), data), "capset")


def mask_of(names: Iterable[str]) -> int:
    mask = 0
    for name in names:
        mask |= 1 << CAPS[name]
    return mask


def names_of(mask: int) -> set[str]:
    return {name for name, bit in CAPS.items() if mask >> bit & 1} | (
        {f"cap_{bit}" for bit in range(64) if mask >> bit & 1 and bit not in CAPS.values()}
    )


def needed(*, failover: bool, script_user: bool) -> tuple[str, ...]:
    """The capabilities the daemon keeps after start, and why each."""
    keep = list(DATA_PLANE)
    if failover:
        keep += REALTIME_VRRP
    if script_user:
        keep += SCRIPTS_AS_OTHER_USER
    return tuple(keep)


def restrict(keep: Iterable[str], user: Account | None = None, groups: Iterable[int] = ()) -> None:
    """Keep only `keep` (bounding, permitted, effective, inheritable; ambient too when
    `user` is set, so a restarted VRRP process still has them), switching to `user`.
    `groups`: supplementary groups to hold from now on (added to root's, or the only
    ones of `user`): without CAP_DAC_OVERRIDE, group permission is how the daemon (and
    the birdc it runs) reaches a socket another daemon owns, such as BIRD's."""
    mask = mask_of(keep)
    extra = sorted(set(groups))
    last = int(Path(_LAST_CAP_FILE).read_text())
    if extra and user is None:
        os.setgroups(sorted(set(os.getgroups()) | set(extra)))  # while CAP_SETGID is held
    for bit in range(last + 1):
        if not mask >> bit & 1:
            _prctl(PR_CAPBSET_DROP, bit)
    if user is not None:
        _prctl(PR_SET_KEEPCAPS, 1)
        os.setgroups(extra)
        os.setresgid(user.gid, user.gid, user.gid)
        os.setresuid(user.uid, user.uid, user.uid)  # glibc applies it to every thread
        _prctl(PR_SET_KEEPCAPS, 0)
    _capset(mask)
    if user is not None:
        for name in keep:
            _prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, CAPS[name])


def clear_ambient() -> None:
    """In a script's child before exec: it gets no capability from the daemon."""
    _libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)


def status_caps(pid: int | str = "self") -> dict[str, int]:
    """CapInh, CapPrm, CapEff, CapBnd, CapAmb of /proc/PID/status as masks."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key.startswith("Cap"):
                out[key] = int(value.strip(), 16)
    return out


def script_launcher(user: Account | None) -> dict[str, object]:
    """Keyword arguments for create_subprocess_exec: the script runs as `user` (if set)
    with no supplementary groups and no capability inherited from the daemon. (In the
    child before exec: uvloop has no user/group arguments.)"""

    def become() -> None:
        if user is not None and user.uid != os.geteuid():
            os.setgroups([])
            os.setresgid(user.gid, user.gid, user.gid)
            os.setresuid(user.uid, user.uid, user.uid)
        clear_ambient()

    return {"preexec_fn": become}


def socket_group(path: str, fallback: str = "") -> int | None:
    """The group that owns the socket (or file) at `path`, or else the group named
    `fallback` (the socket may not exist yet: BIRD is started after lvsmon); None when
    neither exists."""
    try:
        return os.stat(path).st_gid
    except OSError:
        pass
    if fallback:
        try:
            return grp.getgrnam(fallback).gr_gid
        except KeyError:
            return None
    return None
