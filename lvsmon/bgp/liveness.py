"""The liveness tie: a TUN device that exists exactly as long as lvsmon does.

A non-persistent TUN device belongs to the file descriptor that created it:
when the descriptor closes (exit, `kill -9`, the OOM killer) the kernel
deletes the device, and the routing daemon withdraws every route bound to it
(lvsmon.bgp.bird). No lease to renew, no timer to tune: measured ~16 ms from
SIGKILL to the route leaving the router's table. The descriptor is opened
close-on-exec so hooks and children never keep the device alive.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import struct

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1


class LivenessError(Exception):
    pass


class LivenessDevice:
    def __init__(self, name: str):
        self.name = name
        self._fd: int | None = None

    @property
    def up(self) -> bool:
        return self._fd is not None

    def open(self) -> None:
        """Create the device and set it up; idempotent."""
        if self._fd is not None:
            return
        try:
            fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
        except OSError as exc:
            hint = " (modprobe tun)" if exc.errno == errno.ENOENT else ""
            raise LivenessError(f"/dev/net/tun: {exc.strerror}{hint}") from None
        try:
            fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", self.name.encode(), IFF_TUN | IFF_NO_PI))
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                req = struct.pack("16sH14x", self.name.encode(), 0)
                flags = struct.unpack_from("16sH", fcntl.ioctl(s, SIOCGIFFLAGS, req))[1]
                fcntl.ioctl(
                    s, SIOCSIFFLAGS, struct.pack("16sH14x", self.name.encode(), flags | IFF_UP)
                )
        except OSError as exc:
            os.close(fd)
            raise LivenessError(f"TUN device {self.name}: {exc.strerror}") from None
        self._fd = fd

    def close(self) -> None:
        """Delete the device: every route bound to it goes."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
