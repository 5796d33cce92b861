"""Receive-side checks of one advert for one failover group, pure (no sockets, no clock).

The codec checks what the bytes alone can show; this adds what needs the
packet's IP framing and the group's settings: TTL, the kernel clipping an
oversized datagram, a spoofed own source, unicast peers, the address list and
the auth replay counter. Every refusal is a `codec.Rejected` whose reason is a
label of lvsmon_ha_adverts_rejected_total (keepalived's VRRP statistics are
the model: ip_ttl_err, packet_len_err, addr_list_err, auth_failure ...).

    accepted = accept(gram, expect, replay)    # raises codec.Rejected
"""

from __future__ import annotations

from dataclasses import dataclass

from lvsmon.ha import codec
from lvsmon.model import IPAddress


@dataclass(frozen=True, slots=True)
class Datagram:
    payload: bytes
    source: IPAddress
    destination: IPAddress
    ttl: int
    arrived: float  # time.monotonic() of the kernel's receive timestamp
    clipped: bool = False  # longer than the receive buffer: the kernel cut it (MSG_TRUNC)


@dataclass(frozen=True, slots=True)
class Expect:
    """What one group accepts (from its config and its socket)."""

    own: IPAddress  # our advert source: nobody else may use it
    advertised: tuple[IPAddress, ...]  # sorted, as the group's adverts list them
    unicast_peers: tuple[IPAddress, ...] = ()
    auth_key: bytes = b""


def accept(gram: Datagram, expect: Expect, replay: dict[IPAddress, int]) -> codec.Advert:
    """The advert, if this group may act on it; `replay` (source -> last auth counter)
    is updated only for an accepted advert. Raises codec.Rejected."""
    source = gram.source
    if gram.ttl != codec.TTL:
        raise codec.Rejected("ttl", f"{gram.ttl} from {source}")
    if gram.clipped:
        raise codec.Rejected("length", f"over {len(gram.payload)} bytes from {source}")
    if source == expect.own:
        # Our own adverts never come back (multicast loop is off): someone uses our address.
        # (IPv4 drops a local source before us, as a martian; IPv6 link-local does not.)
        raise codec.Rejected("own_address", f"from {source}")
    try:
        adv = codec.decode(gram.payload, source, gram.destination, expect.auth_key)
    except codec.Rejected as exc:
        raise codec.Rejected(exc.reason, f"{exc.detail} from {source}".lstrip()) from None
    if expect.unicast_peers and source not in expect.unicast_peers:
        raise codec.Rejected("source", str(source))
    if sorted(adv.addresses) != list(expect.advertised):
        listed = ",".join(map(str, adv.addresses))
        raise codec.Rejected("addresses", f"{listed} from {source}")
    if adv.counter is not None:
        last = replay.get(source)
        if last is not None and adv.counter <= last:
            raise codec.Rejected("replay", f"{adv.counter} <= {last} from {source}")
        replay[source] = adv.counter
    return adv
