"""Run commands inside a throw-away QEMU guest that has real IPVS.

The host kernel has no IPVS, so tests that need it boot Debian's stock
kernel under QEMU (TCG) with the host's root filesystem shared read-only
over 9p and a tmpfs overlay on top, run one command there and power off.

Stdlib only.  Two entry points:

* :func:`ensure_assets` downloads and prepares the kernel, an uncompressed
  ``vmlinux`` (booted directly via PVH) and a tiny busybox initramfs into a
  cache directory (``$LVSMON_VM_CACHE`` or ``~/.cache/lvsmon-vm``).  It is
  idempotent and keyed by kernel version, so later calls are instant.
* :func:`run_in_vm` boots the guest, runs ``argv`` in ``cwd`` and returns its
  exit code and output (stdout+stderr, written by the guest to a file on a
  writable 9p share, never scraped from the serial console).

Command line::

    python tests/vm/vmharness.py assets
    python tests/vm/vmharness.py run [--cwd DIR] [-e K=V] [--timeout S] -- CMD...

Host requirements (see ``scripts/install-test-deps``): qemu-system-x86,
busybox-static, kmod, apt-get/dpkg-deb (Debian) and an apt package list.
"""

from __future__ import annotations

import argparse
import bz2
import dataclasses
import fcntl
import gzip
import hashlib
import lzma
import os
import shlex
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

__all__ = [
    "KERNEL_6_12_META_PACKAGE",
    "KERNEL_META_PACKAGE",
    "Assets",
    "VmError",
    "VmResult",
    "VmTimeout",
    "default_cache_dir",
    "ensure_assets",
    "main",
    "run_in_vm",
]

Progress = Callable[[str], None]

#: Meta package whose current dependency names the kernel to boot.
KERNEL_META_PACKAGE = "linux-image-amd64"
#: Meta package of Debian 12's newer kernel series (bookworm-security carries it),
#: for tests that need a feature 6.1 lacks (e.g. the twos scheduler).
KERNEL_6_12_META_PACKAGE = "linux-image-6.12-amd64"
#: Modules the initramfs loads before mounting the host root (missing or
#: built-in ones are skipped; dependencies come from modules.dep).
INITRAMFS_MODULES = (
    "virtio_pci",
    "9pnet_virtio",
    "9p",
    "overlay",
    "fscache",
)
#: Modules that must end up in the initramfs or the guest cannot mount root.
REQUIRED_MODULES = ("virtio_pci", "9pnet_virtio", "9p", "overlay")
#: Bump to force a rebuild of cached kernel trees / vmlinux files.
ASSET_FORMAT = "1"

#: Where the guest sees its private pieces (all inside the tmpfs overlay).
GUEST_DIR = "/.lvsmon-vm"
GUEST_BUSYBOX = f"{GUEST_DIR}/busybox"
GUEST_RUNDIR = f"{GUEST_DIR}/run"

_SBIN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

_INIT_SCRIPT = f"""#!/bin/busybox sh
# lvsmon-vm stage 1: runs from the initramfs as PID 1.
BB=/bin/busybox
fail() {{
    echo "lvsmon-vm init: $*" >/dev/console
    $BB sync
    $BB poweroff -f
    exit 1
}}
for m in $($BB cat /modules/order); do
    $BB insmod "/modules/$m.ko" || fail "insmod $m failed"
done
O9P=trans=virtio,version=9p2000.L,msize=512000
$BB mount -t 9p -o "$O9P,ro,cache=loose" hostroot /lower \\
    || fail "cannot mount the host root (9p tag hostroot)"
$BB mount -t tmpfs -o mode=0755 tmpfs /rw || fail "cannot mount tmpfs"
$BB mkdir -p /rw/upper /rw/work
$BB mount -t overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work \\
    overlay /newroot || fail "cannot mount the overlay root"
$BB mkdir -p /newroot{GUEST_RUNDIR}
$BB cp /bin/busybox /newroot{GUEST_BUSYBOX} || fail "cannot copy busybox"
$BB mount -t 9p -o "$O9P" rundir /newroot{GUEST_RUNDIR} \\
    || fail "cannot mount the run directory (9p tag rundir)"
[ -f /newroot{GUEST_RUNDIR}/stage2.sh ] || fail "no stage2.sh in the run directory"
exec $BB switch_root /newroot {GUEST_BUSYBOX} sh {GUEST_RUNDIR}/stage2.sh
fail "switch_root failed"
"""


class VmError(RuntimeError):
    """The guest could not be prepared, booted, or did not report a result."""


class VmTimeout(VmError):
    """The guest command did not finish in time (QEMU was killed)."""


@dataclasses.dataclass(frozen=True)
class Assets:
    """Everything needed to boot the guest, all under ``cache_dir``."""

    cache_dir: Path
    kernel_package: str
    kver: str
    vmlinux: Path
    initramfs: Path
    #: Host path of the unpacked ``lib/modules/<kver>`` (depmod'ed).
    modules_dir: Path


@dataclasses.dataclass(frozen=True)
class VmResult:
    returncode: int
    #: The guest command's stdout and stderr, interleaved.
    output: str
    #: QEMU start until the guest command was about to start.
    boot_seconds: float
    #: QEMU start until QEMU exited.
    total_seconds: float


# --------------------------------------------------------------------------
# small helpers


def default_cache_dir() -> Path:
    env = os.environ.get("LVSMON_VM_CACHE")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "lvsmon-vm"


def _which(name: str, hint: str) -> str:
    found = shutil.which(name) or shutil.which(name, path=_SBIN_PATH)
    if not found:
        raise VmError(f"{name} not found: {hint}")
    return found


def _run(cmd: Sequence[str], what: str, cwd: Path | None = None) -> str:
    proc = subprocess.run(
        list(cmd),
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        detail = (proc.stderr.strip() or proc.stdout.strip())[-2000:]
        raise VmError(f"{what} failed (exit {proc.returncode}): {shlex.join(cmd)}\n{detail}")
    return proc.stdout


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.rstrip("\n").splitlines()[-lines:])


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_bytes(data)
    tmp.chmod(mode)
    tmp.replace(path)


# --------------------------------------------------------------------------
# kernel package


def _apt_lists_key() -> str:
    """Changes whenever apt's view of the archive may have changed."""
    h = hashlib.sha256()
    for pattern in ("/var/lib/apt/lists/*", "/etc/apt/preferences*", "/etc/apt/sources.list*"):
        for p in sorted(Path("/").glob(pattern.lstrip("/"))):
            try:
                st = p.stat()
            except OSError:
                continue
            h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _memo_path(cache_dir: Path, meta_package: str) -> Path:
    if meta_package == KERNEL_META_PACKAGE:
        return cache_dir / "resolved-package"
    return cache_dir / f"resolved-package-{meta_package}"


def _resolve_kernel_package(cache_dir: Path, meta_package: str = KERNEL_META_PACKAGE) -> str | None:
    """The package ``meta_package`` currently depends on, or None.

    ``apt-cache`` takes ~0.7 s here (its binary cache is disabled), so the
    answer is remembered until the apt package lists change.
    ``$LVSMON_VM_KERNEL_PACKAGE`` overrides the default meta package only.
    """
    override = os.environ.get("LVSMON_VM_KERNEL_PACKAGE")
    if override and meta_package == KERNEL_META_PACKAGE:
        return override
    apt_cache = shutil.which("apt-cache")
    if not apt_cache:
        return None
    memo = _memo_path(cache_dir, meta_package)
    key = _apt_lists_key()
    try:
        memo_key, memo_pkg = memo.read_text().split()
        if memo_key == key:
            return memo_pkg
    except (OSError, ValueError):
        pass
    proc = subprocess.run(
        [apt_cache, "depends", meta_package],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        return None
    for line in proc.stdout.splitlines():
        dep_key, _, value = line.strip().lstrip("|").partition(":")
        value = value.strip()
        if dep_key == "Depends" and value.startswith("linux-image-"):
            _write_atomic(memo, f"{key} {value}\n".encode())
            return value
    return None


def _kver_of(package: str) -> str:
    kver = package.removeprefix("linux-image-").removesuffix("-unsigned")
    if not kver or kver == package:
        raise VmError(f"cannot derive a kernel version from package name {package!r}")
    return kver


def _complete_kernels(cache_dir: Path) -> list[Path]:
    return sorted(
        (p.parent for p in cache_dir.glob("*/complete") if p.read_text().strip() == ASSET_FORMAT),
        key=lambda p: p.stat().st_mtime,
    )


def _cached_kernel(cache_dir: Path, meta_package: str) -> Path | None:
    """A prepared kernel tree for when apt cannot help (offline, no lists): the
    one ``meta_package`` resolved to last, else (default meta package only)
    the newest prepared one."""
    try:
        kdir = cache_dir / _kver_of(_memo_path(cache_dir, meta_package).read_text().split()[1])
        if (kdir / "complete").read_text().strip() == ASSET_FORMAT:
            return kdir
    except (OSError, IndexError, VmError):
        pass
    if meta_package != KERNEL_META_PACKAGE:
        return None
    have = _complete_kernels(cache_dir)
    return have[-1] if have else None


def _download_deb(package: str, dest: Path, progress: Progress) -> Path:
    apt_get = _which("apt-get", "this harness needs Debian's apt-get to fetch the kernel")
    cmd = [apt_get, "download", "-q", package]
    try:
        _run(cmd, "apt-get download", cwd=dest)
    except VmError:
        if os.geteuid() != 0:
            raise VmError(
                f"apt-get download {package} failed; run 'apt-get update' (as root) and retry"
            ) from None
        progress("lvsmon-vm: apt-get download failed; running apt-get update and retrying")
        _run([apt_get, "update", "-q"], "apt-get update")
        _run(cmd, "apt-get download", cwd=dest)
    debs = sorted(dest.glob(f"{package}_*.deb"))
    if not debs:
        raise VmError(f"apt-get download {package} produced no .deb in {dest}")
    return debs[-1]


def _prepare_kernel(cache_dir: Path, package: str, progress: Progress) -> Path:
    """Download, unpack and depmod ``package`` into ``cache_dir/<kver>``."""
    kver = _kver_of(package)
    kdir = cache_dir / kver
    stamp = kdir / "complete"
    if stamp.is_file() and stamp.read_text().strip() == ASSET_FORMAT:
        return kdir
    dpkg_deb = _which("dpkg-deb", "install dpkg")
    depmod = _which("depmod", "install kmod")
    if kdir.exists():
        shutil.rmtree(kdir)
    for stale in cache_dir.glob(f".{kver}.*"):  # left by an interrupted build
        shutil.rmtree(stale, ignore_errors=True)
    work = Path(tempfile.mkdtemp(prefix=f".{kver}.", dir=cache_dir))
    work.chmod(0o755)
    try:
        t0 = time.monotonic()
        progress(f"lvsmon-vm: downloading {package} (~70 MB) ...")
        deb = _download_deb(package, work, progress)
        progress(f"lvsmon-vm: unpacking {deb.name} ...")
        root = work / "root"
        _run([dpkg_deb, "-x", str(deb), str(root)], "dpkg-deb -x")
        deb.unlink()
        mods = _find_modules_dir(root, kver)
        progress("lvsmon-vm: running depmod ...")
        _run([depmod, "-b", str(mods.parent.parent.parent), kver], "depmod")
        progress("lvsmon-vm: extracting vmlinux from the bzImage ...")
        bzimage = root / "boot" / f"vmlinuz-{kver}"
        if not bzimage.is_file():
            raise VmError(f"{package} has no /boot/vmlinuz-{kver}")
        _write_atomic(work / "vmlinux", extract_vmlinux(bzimage.read_bytes()))
        (work / "package").write_text(package + "\n")
        work.rename(kdir)
        stamp.write_text(ASSET_FORMAT + "\n")
        progress(f"lvsmon-vm: kernel {kver} ready in {time.monotonic() - t0:.1f} s")
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
    return kdir


def _find_modules_dir(root: Path, kver: str) -> Path:
    for cand in (root / "lib" / "modules" / kver, root / "usr" / "lib" / "modules" / kver):
        if cand.is_dir():
            return cand
    raise VmError(f"no lib/modules/{kver} in the unpacked kernel package at {root}")


# --------------------------------------------------------------------------
# vmlinux extraction


def _decompress_at(data: bytes, offset: int, kind: str) -> bytes | None:
    chunk = data[offset:]
    try:
        if kind == "xz":
            return lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(chunk)
        if kind == "gzip":
            return zlib.decompressobj(wbits=31).decompress(chunk)
        if kind == "bzip2":
            return bz2.BZ2Decompressor().decompress(chunk)
        if kind == "zstd":
            zstd = shutil.which("zstd")
            if not zstd:
                raise VmError("the kernel is zstd-compressed and zstd was not found: install zstd")
            proc = subprocess.run([zstd, "-dcq"], input=chunk, capture_output=True, check=False)
            # zstd complains about trailing garbage but still writes the frame.
            return proc.stdout or None
    except (lzma.LZMAError, zlib.error, OSError, EOFError, ValueError):
        return None
    raise AssertionError(kind)


def extract_vmlinux(bzimage: bytes) -> bytes:
    """Find the compressed payload of a bzImage and return the ELF vmlinux."""
    magics = (
        ("xz", b"\xfd7zXZ\x00"),
        ("zstd", b"\x28\xb5\x2f\xfd"),
        ("gzip", b"\x1f\x8b\x08"),
        ("bzip2", b"BZh"),
    )
    for kind, magic in magics:
        pos = bzimage.find(magic)
        tries = 0
        while pos != -1 and tries < 8:
            out = _decompress_at(bzimage, pos, kind)
            if out and out[:4] == b"\x7fELF":
                return out
            pos = bzimage.find(magic, pos + 1)
            tries += 1
    raise VmError("no xz/zstd/gzip/bzip2 stream holding an ELF vmlinux found in the bzImage")


# --------------------------------------------------------------------------
# initramfs


def _is_static_elf(path: Path) -> bool:
    data = path.read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 2:  # 64-bit only
        return False
    e_phoff = struct.unpack_from("<Q", data, 0x20)[0]
    e_phentsize, e_phnum = struct.unpack_from("<HH", data, 0x36)
    for i in range(e_phnum):
        (p_type,) = struct.unpack_from("<I", data, e_phoff + i * e_phentsize)
        if p_type == 3:  # PT_INTERP
            return False
    return True


def _find_busybox() -> Path:
    for cand in ("/bin/busybox", "/usr/bin/busybox", shutil.which("busybox") or ""):
        if cand and Path(cand).is_file() and _is_static_elf(Path(cand)):
            return Path(cand)
    raise VmError("static busybox not found: install busybox-static")


def _modname(path: str) -> str:
    name = path.rsplit("/", 1)[-1]
    name = name.split(".ko", 1)[0]
    return name.replace("-", "_")


def resolve_modules(modules_dir: Path, wanted: Sequence[str]) -> list[tuple[str, Path]]:
    """(name, file) of ``wanted`` and their dependencies, in load order.

    Built-in modules are skipped; so are wanted modules that do not exist
    unless they are in :data:`REQUIRED_MODULES`.
    """
    deps: dict[str, list[str]] = {}
    files: dict[str, Path] = {}
    for line in (modules_dir / "modules.dep").read_text().splitlines():
        target, sep, rest = line.partition(":")
        if not sep:
            continue
        name = _modname(target)
        files[name] = modules_dir / target
        deps[name] = [_modname(d) for d in rest.split()]
    builtin_file = modules_dir / "modules.builtin"
    builtin = (
        {_modname(line) for line in builtin_file.read_text().split()}
        if builtin_file.is_file()
        else set()
    )
    order: list[str] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        if name in seen:
            return
        seen.add(name)
        for dep in deps.get(name, []):
            visit(dep)
        order.append(name)

    for raw in wanted:
        name = raw.replace("-", "_")
        if name in builtin:
            continue
        if name not in files:
            if name in REQUIRED_MODULES:
                raise VmError(f"kernel module {name} is neither built in nor in {modules_dir}")
            continue
        visit(name)
    return [(n, files[n]) for n in order]


def _read_module(path: Path) -> bytes:
    data = path.read_bytes()
    if path.name.endswith(".ko.xz"):
        return lzma.decompress(data)
    if path.name.endswith(".ko.gz"):
        return gzip.decompress(data)
    if path.name.endswith(".ko.zst"):
        zstd = _which("zstd", "modules are zstd-compressed: install zstd")
        return subprocess.run([zstd, "-dcq"], input=data, capture_output=True, check=True).stdout
    return data


class _Cpio:
    """Minimal writer for the 'newc' cpio format the kernel unpacks."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._ino = 1

    def _add(self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)) -> None:
        encoded = name.encode() + b"\0"
        # ino mode uid gid nlink mtime filesize devmajor devminor
        # rdevmajor rdevminor namesize check
        fields = [self._ino, mode, 0, 0, 1, 0, len(data), 0, 0, *rdev, len(encoded), 0]
        self._ino += 1
        header = b"070701" + b"".join(b"%08X" % f for f in fields)
        self._parts += [header, encoded, b"\0" * (-(len(header) + len(encoded)) % 4)]
        self._parts += [data, b"\0" * (-len(data) % 4)]

    def dir(self, name: str) -> None:
        self._add(name, 0o040755)

    def file(self, name: str, data: bytes, perm: int = 0o644) -> None:
        self._add(name, 0o100000 | perm, data)

    def symlink(self, name: str, target: str) -> None:
        self._add(name, 0o120777, target.encode())

    def chardev(self, name: str, major: int, minor: int, perm: int = 0o600) -> None:
        self._add(name, 0o020000 | perm, rdev=(major, minor))

    def finish(self) -> bytes:
        self._add("TRAILER!!!", 0)
        return b"".join(self._parts)


def _build_initramfs(busybox: Path, modules: Sequence[tuple[str, Path]]) -> bytes:
    """The gzip'ed newc cpio: busybox as /init's shell, modules, /init."""
    loaded = [(name, _read_module(path)) for name, path in modules]
    cpio = _Cpio()
    for d in ("bin", "dev", "proc", "sys", "lower", "rw", "newroot", "modules"):
        cpio.dir(d)
    cpio.chardev("dev/console", 5, 1)
    cpio.chardev("dev/null", 1, 3, 0o666)
    cpio.file("bin/busybox", busybox.read_bytes(), 0o755)
    cpio.symlink("bin/sh", "busybox")
    cpio.file("init", _INIT_SCRIPT.encode(), 0o755)
    cpio.file("modules/order", "".join(f"{n}\n" for n, _ in loaded).encode())
    for name, data in loaded:
        cpio.file(f"modules/{name}.ko", data)
    return gzip.compress(cpio.finish(), compresslevel=6, mtime=0)


def _ensure_initramfs(kdir: Path, modules_dir: Path, progress: Progress) -> Path:
    busybox = _find_busybox()
    modules = resolve_modules(modules_dir, INITRAMFS_MODULES)
    h = hashlib.sha256(_INIT_SCRIPT.encode())
    for name, path in [("busybox", busybox), *modules]:
        st = path.stat()
        h.update(f"{name}\0{path}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    path = kdir / f"initramfs-{h.hexdigest()[:16]}.cpio.gz"
    if not path.is_file():
        data = _build_initramfs(busybox, modules)
        progress(f"lvsmon-vm: writing {path.name} ({len(data) // 1024} KiB)")
        _write_atomic(path, data)
        for old in kdir.glob("initramfs-*.cpio.gz"):
            if old != path:
                old.unlink(missing_ok=True)
    return path


# --------------------------------------------------------------------------
# public API


def ensure_assets(
    cache_dir: Path | None = None,
    progress: Progress = print,
    meta_package: str = KERNEL_META_PACKAGE,
) -> Assets:
    """Make sure kernel, vmlinux and initramfs exist in the cache; return them.

    Idempotent: the kernel tree is keyed by kernel version and the
    initramfs by its content, so a warm call only checks files. The kernel
    is the package ``meta_package`` depends on (e.g.
    :data:`KERNEL_6_12_META_PACKAGE` for Debian 12's 6.12 series).
    """
    cache = (cache_dir or default_cache_dir()).expanduser().resolve()
    cache.mkdir(parents=True, exist_ok=True)
    overridden = meta_package == KERNEL_META_PACKAGE and os.environ.get("LVSMON_VM_KERNEL_PACKAGE")
    with _locked(cache / ".lock"):
        package = _resolve_kernel_package(cache, meta_package)
        if package is None:
            cached = _cached_kernel(cache, meta_package)
            if cached is None:
                raise VmError(
                    f"cannot tell which kernel {meta_package} depends on "
                    "(apt-cache missing or no package lists): run 'apt-get update', "
                    "or set LVSMON_VM_KERNEL_PACKAGE=linux-image-<version>-amd64"
                )
            kdir = cached
            package = (kdir / "package").read_text().strip()
        else:
            try:
                kdir = _prepare_kernel(cache, package, progress)
            except VmError as exc:
                cached = _cached_kernel(cache, meta_package)
                if cached is None or overridden:
                    raise
                kdir = cached  # e.g. offline: the kernel prepared before
                progress(f"lvsmon-vm: WARNING: {exc}\nlvsmon-vm: using cached {kdir.name}")
                package = (kdir / "package").read_text().strip()
        kver = kdir.name
        modules_dir = _find_modules_dir(kdir / "root", kver)
        initramfs = _ensure_initramfs(kdir, modules_dir, progress)
        return Assets(
            cache_dir=cache,
            kernel_package=package,
            kver=kver,
            vmlinux=kdir / "vmlinux",
            initramfs=initramfs,
            modules_dir=modules_dir,
        )


def _stage2_script(assets: Assets) -> str:
    bb = GUEST_BUSYBOX
    run = GUEST_RUNDIR
    modsrc = shlex.quote(str(assets.modules_dir))
    moddst = shlex.quote(f"/lib/modules/{assets.kver}")
    return f"""# lvsmon-vm stage 2: PID 1 in the switched root (host fs + tmpfs overlay).
BB={bb}
R={run}
export PATH={_SBIN_PATH}
exec 3>&2 2>$R/setup.log  # setup errors are shown ahead of the command's output
$BB mount -t proc proc /proc
$BB mount -t sysfs sysfs /sys
$BB mount -t devtmpfs devtmpfs /dev
$BB mkdir -p /dev/pts /dev/shm
$BB mount -t devpts -o gid=5,mode=0620,ptmxmode=0666 devpts /dev/pts
$BB mount -t tmpfs -o mode=1777 tmpfs /dev/shm
$BB mount -t tmpfs -o mode=0755 tmpfs /run
$BB mkdir -p /run/netns /run/lock
$BB mount -t tmpfs -o mode=0755 tmpfs /run/netns
$BB mkdir -p {moddst} && $BB mount --bind {modsrc} {moddst}
$BB hostname lvsmon-vm
$BB ip link set lo up
$BB touch $R/started
exec 2>&3 3>&-
$BB sh $R/job.sh >$R/output 2>&1 </dev/null
echo $? >$R/exitcode.tmp
$BB mv $R/exitcode.tmp $R/exitcode
$BB sync
$BB poweroff -f
"""


def _job_script(argv: Sequence[str], cwd: str, env: dict[str, str]) -> str:
    # The host's env(1), not busybox's: busybox would prefer its own applets
    # (sh, ip, ...) over the host's programs when resolving argv[0].
    assigns = " ".join(shlex.quote(f"{k}={v}") for k, v in sorted(env.items()))
    return (
        f"cd {shlex.quote(cwd)} || exit 125\n"
        "ENV=/usr/bin/env; [ -x $ENV ] || ENV=/bin/env\n"
        f"exec $ENV -i {assigns} {shlex.join(argv)}\n"
    )


def _guest_env(env: dict[str, str] | None) -> dict[str, str]:
    base = {
        "PATH": os.environ.get("PATH") or _SBIN_PATH,
        "HOME": os.environ.get("HOME") or "/root",
        "LANG": "C.UTF-8",
        "LVSMON_VM": "1",
        "LVSMON_VM_RUNDIR": GUEST_RUNDIR,
    }
    # Make sure sbin tools (ip, ipvsadm, modprobe) are found in the guest.
    have = base["PATH"].split(":")
    base["PATH"] = ":".join(have + [p for p in _SBIN_PATH.split(":") if p not in have])
    base.update(env or {})
    for key in base:
        if not key or "=" in key:
            raise ValueError(f"bad environment variable name {key!r}")
    return base


def _qemu_opt(value: str) -> str:
    return value.replace(",", ",,")


def run_in_vm(
    argv: list[str],
    *,
    cwd: str,
    env: dict[str, str] | None = None,
    timeout: float = 900,
    memory_mb: int = 1024,
    assets: Assets | None = None,
) -> VmResult:
    """Boot the guest, run ``argv`` in ``cwd`` there, power off, return the result.

    ``env`` is added to a minimal guest environment (the host's PATH and
    HOME, LANG=C.UTF-8, LVSMON_VM=1, LVSMON_VM_RUNDIR).  ``cwd`` must be an
    absolute path on the host filesystem (seen read-only plus a tmpfs
    overlay, so the command may write anywhere; nothing reaches the host
    except files under ``$LVSMON_VM_RUNDIR``).  Raises :class:`VmTimeout`
    after ``timeout`` seconds and :class:`VmError` if the guest did not
    report an exit code.
    """
    if not argv:
        raise ValueError("argv must not be empty")
    if not os.path.isabs(cwd):
        raise ValueError(f"cwd must be absolute: {cwd!r}")
    qemu = _which("qemu-system-x86_64", "install qemu-system-x86")
    if assets is None:
        assets = ensure_assets(progress=lambda _msg: None)
    guest_env = _guest_env(env)
    rundir = Path(tempfile.mkdtemp(prefix="lvsmon-vm-run-"))
    keep = bool(os.environ.get("LVSMON_VM_KEEP_RUNDIR"))
    try:
        (rundir / "stage2.sh").write_text(_stage2_script(assets))
        (rundir / "job.sh").write_text(_job_script(argv, cwd, guest_env))
        console_path = rundir / "console.log"
        cmd = [
            qemu,
            "-accel",
            "tcg",
            "-M",
            "pc",
            "-cpu",
            "max",
            "-smp",
            "1",
            "-m",
            str(memory_mb),
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-no-reboot",
            "-serial",
            "stdio",
            "-monitor",
            "none",
            "-kernel",
            str(assets.vmlinux),
            "-initrd",
            str(assets.initramfs),
            "-append",
            _KERNEL_CMDLINE,
            "-fsdev",
            "local,id=hostroot,path=/,security_model=none,readonly=on,multidevs=remap",
            "-device",
            "virtio-9p-pci,fsdev=hostroot,mount_tag=hostroot",
            "-fsdev",
            f"local,id=rundir,path={_qemu_opt(str(rundir))},security_model=none",
            "-device",
            "virtio-9p-pci,fsdev=rundir,mount_tag=rundir",
        ]
        start_wall = time.time()
        start = time.monotonic()
        with open(console_path, "wb") as console:
            proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT
            )
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                raise VmTimeout(
                    f"guest command {shlex.join(argv)} did not finish within {timeout:g} s "
                    f"(QEMU killed).\n{_diagnostics(rundir)}"
                ) from None
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        total = time.monotonic() - start
        started = rundir / "started"
        boot = started.stat().st_mtime - start_wall if started.exists() else total
        code_file = rundir / "exitcode"
        if not code_file.exists():
            raise VmError(
                f"guest did not report an exit code for {shlex.join(argv)} "
                f"(QEMU exit status {proc.returncode}).\n{_diagnostics(rundir)}"
            )
        setup_errors = "".join(
            f"lvsmon-vm guest setup: {line}\n"
            for line in _read_text(rundir / "setup.log").splitlines()
            if line.strip()
        )
        return VmResult(
            returncode=int(code_file.read_text().strip()),
            output=setup_errors + _read_text(rundir / "output"),
            boot_seconds=max(0.0, boot),
            total_seconds=total,
        )
    finally:
        if not keep:
            shutil.rmtree(rundir, ignore_errors=True)


_KERNEL_CMDLINE = " ".join(
    (
        "console=ttyS0",
        "quiet",
        "loglevel=1",
        "panic=-1",
        "rdinit=/init",
        "mitigations=off",
        "8250.nr_uarts=1",
        "i8042.noaux",
        "i8042.nokbd",
    )
)


def _read_text(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return ""


def _diagnostics(rundir: Path) -> str:
    out = _tail(_read_text(rundir / "output"))
    console = _tail(_read_text(rundir / "console.log"), 25)
    return (
        f"--- tail of the command output ---\n{out or '(empty)'}\n"
        f"--- tail of the guest console ---\n{console or '(empty)'}"
    )


# --------------------------------------------------------------------------
# command line


def main(args: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="vmharness.py", description="Run commands in a throw-away IPVS-capable QEMU guest."
    )
    kernel_opt = argparse.ArgumentParser(add_help=False)
    kernel_opt.add_argument(
        "--meta-package",
        default=KERNEL_META_PACKAGE,
        help=f"boot the kernel this meta package depends on (default {KERNEL_META_PACKAGE})",
    )
    sub = parser.add_subparsers(dest="action", required=True)
    sub.add_parser(
        "assets", parents=[kernel_opt], help="download/build the kernel, vmlinux and initramfs"
    )
    run_p = sub.add_parser(
        "run", parents=[kernel_opt], help="run a command in the guest: run [options] -- CMD..."
    )
    run_p.add_argument("--cwd", default=os.getcwd(), help="working directory (default: .)")
    run_p.add_argument("-e", "--env", action="append", default=[], metavar="K=V")
    run_p.add_argument("--timeout", type=float, default=900.0)
    run_p.add_argument("--memory", type=int, default=1024, metavar="MB")
    run_p.add_argument("command", nargs=argparse.REMAINDER)
    ns = parser.parse_args(args)
    try:
        if ns.action == "assets":
            t0 = time.monotonic()
            a = ensure_assets(meta_package=ns.meta_package)
            print(f"kernel {a.kver} ({a.kernel_package})")
            print(f"vmlinux   {a.vmlinux}")
            print(f"initramfs {a.initramfs}")
            print(f"modules   {a.modules_dir}")
            print(f"ready in {time.monotonic() - t0:.1f} s")
            return 0
        command = list(ns.command)
        if command and command[0] == "--":
            command = command[1:]
        if not command:
            parser.error("run needs a command after --")
        extra: dict[str, str] = {}
        for item in ns.env:
            key, sep, value = item.partition("=")
            if not sep:
                parser.error(f"-e expects K=V, got {item!r}")
            extra[key] = value
        assets = ensure_assets(
            progress=lambda m: print(m, file=sys.stderr), meta_package=ns.meta_package
        )
        res = run_in_vm(
            command,
            cwd=os.path.abspath(ns.cwd),
            env=extra,
            timeout=ns.timeout,
            memory_mb=ns.memory,
            assets=assets,
        )
        sys.stdout.write(res.output)
        sys.stdout.flush()
        print(
            f"lvsmon-vm: exit {res.returncode}, boot {res.boot_seconds:.1f} s, "
            f"total {res.total_seconds:.1f} s",
            file=sys.stderr,
        )
        return res.returncode
    except VmError as exc:
        print(f"lvsmon-vm: {exc}", file=sys.stderr)
        return 125


if __name__ == "__main__":
    sys.exit(main())
