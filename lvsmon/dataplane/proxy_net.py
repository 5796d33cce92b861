"""Socket helpers shared by the proxy's TCP and UDP relays."""

from __future__ import annotations

import _socket
import contextlib
import ipaddress
import socket
import struct

from lvsmon.dataplane.base import DataPlaneError
from lvsmon.model import IPAddress, endpoint_label

# Linux values; the socket module does not export them.
IP_FREEBIND = 15
IPV6_FREEBIND = 78

_LINGER_RST = struct.pack("ii", 1, 0)

# Client addresses repeat (NAT gateways, keep-alive pools): parsing one costs
# ~3us, a lookup ~30ns. Bounded by clearing, not LRU: cheap and good enough.
_ADDRESSES: dict[str, IPAddress] = {}
_ADDRESSES_MAX = 65536


def parse_address(host: str) -> IPAddress:
    addr = _ADDRESSES.get(host)
    if addr is None:
        if len(_ADDRESSES) >= _ADDRESSES_MAX:
            _ADDRESSES.clear()
        addr = _ADDRESSES[host] = ipaddress.ip_address(host)
    return addr


def family_of(address: IPAddress) -> socket.AddressFamily:
    return socket.AF_INET6 if address.version == 6 else socket.AF_INET


def bind_socket(name: str, address: IPAddress, port: int, kind: socket.SocketKind) -> socket.socket:
    """A non-blocking socket bound to a virtual server's address.

    Free-bind: a backup director programs its virtual servers before the HA
    layer moves the virtual address to it, as haproxy does with
    net.ipv4.ip_nonlocal_bind."""
    family = family_of(address)
    sock = socket.socket(family, kind)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            _try_setsockopt(sock, socket.IPPROTO_IPV6, IPV6_FREEBIND)
        else:
            _try_setsockopt(sock, socket.IPPROTO_IP, IP_FREEBIND)
        sock.bind((str(address), port))
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        where = endpoint_label(address, port)
        raise DataPlaneError(
            f"virtual server {name!r}: cannot listen on {kind.name.lower()} {where}: "
            f"{exc.strerror or exc}"
        ) from exc
    return sock


def _try_setsockopt(sock: socket.socket, level: int, option: int) -> None:
    with contextlib.suppress(OSError):  # older kernel: the address must then be local
        sock.setsockopt(level, option, 1)


def reset_socket(sock: _socket.socket) -> None:
    """Make the coming close() an RST (SO_LINGER 0), so the peer sees a reset, not a FIN."""
    with contextlib.suppress(OSError):  # already failed underneath
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
