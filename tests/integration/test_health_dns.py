"""`dns` and UDP `send_expect` checks against real responders on loopback.

The DNS responder is dnspython, so the checker's hand-written wire format is
judged by an independent implementation (with name compression in answers).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest

from lvsmon.model import DestKey
from lvsmon.model.health import CheckType, DnsSpec, HealthCheck, Reason, SendExpectSpec
from tests.integration.test_health_support import first_verdict, run
from tests.ports import free_port

ZONE = {
    ("www.example.com.", "A"): ["192.0.2.1", "192.0.2.2"],
    ("www.example.com.", "AAAA"): ["2001:db8::1"],
    ("example.com.", "MX"): ["10 mail.example.com."],
    ("alias.example.com.", "CNAME"): ["www.example.com."],
    ("example.com.", "TXT"): ['"v=spf1 -all"'],
}


class Responder:
    """A UDP DNS server (dnspython): answers from ZONE; `mode` = ok, servfail, silent, spoof."""

    def __init__(self, host: str = "127.0.0.1"):
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.dest = DestKey(host, self.sock.getsockname()[1])
        self.mode = "ok"
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                data, peer = self.sock.recvfrom(4096)
            except OSError:
                return
            query = dns.message.from_wire(data)
            response = dns.message.make_response(query)
            q = query.question[0]
            key = (q.name.to_text().lower(), dns.rdatatype.to_text(q.rdtype))
            if self.mode == "silent":
                continue
            if self.mode == "servfail":
                response.set_rcode(dns.rcode.SERVFAIL)
            elif key in ZONE:
                answer = dns.rrset.from_text_list(q.name, 60, "IN", key[1], ZONE[key])
                response.answer.append(answer)
            elif any(name == key[0] for name, _ in ZONE):
                pass  # NOERROR, no data
            else:
                response.set_rcode(dns.rcode.NXDOMAIN)
            if self.mode == "spoof":  # a stale answer with another id first: must be ignored
                stale = dns.message.make_response(query)
                stale.id = (query.id + 1) % 65536
                stale.set_rcode(dns.rcode.SERVFAIL)
                self.sock.sendto(stale.to_wire(), peer)
                self.sock.sendto(b"\x00garbage", peer)
            self.sock.sendto(response.to_wire(), peer)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(params=["127.0.0.1", "::1"])
def responder(request: pytest.FixtureRequest) -> Iterator[Responder]:
    r = Responder(request.param)
    yield r
    r.close()


def dns_check(
    name: str = "www.example.com",
    qtype: str = "A",
    rcode: str = "NOERROR",
    answers: tuple[str, ...] = (),
) -> HealthCheck:
    return HealthCheck(
        CheckType.DNS, interval=1.0, timeout=0.5, spec=DnsSpec(name, qtype, rcode, answers)
    )


def verdict(check: HealthCheck, dest: DestKey) -> tuple[bool, Reason | None, str]:
    state = run(first_verdict(check, dest)).state
    return state.up, state.reason, state.detail


CASES = {
    "A, one of two answers": (dns_check(answers=("192.0.2.2",)), True, None),
    "A, both answers": (dns_check(answers=("192.0.2.1", "192.0.2.2")), True, None),
    "A, any answer": (dns_check(), True, None),
    "AAAA, written long": (dns_check(qtype="AAAA", answers=("2001:0db8::0001",)), True, None),
    "MX with a compressed name": (
        dns_check("example.com", "MX", answers=("10 MAIL.example.com",)),
        True,
        None,
    ),
    "CNAME": (dns_check("alias.example.com", "CNAME", answers=("www.example.com",)), True, None),
    "TXT": (dns_check("example.com", "TXT", answers=("v=spf1 -all",)), True, None),
    "NXDOMAIN expected": (dns_check("nope.example.com", rcode="NXDOMAIN"), True, None),
    "wrong answer": (dns_check(answers=("192.0.2.9",)), False, Reason.BAD_ANSWER),
    "NXDOMAIN unexpected": (dns_check("nope.example.com"), False, Reason.BAD_ANSWER),
}


@pytest.mark.parametrize("case", list(CASES))
def test_dns_answers(responder: Responder, case: str) -> None:
    check, up, reason = CASES[case]
    got = verdict(check, responder.dest)
    assert got[:2] == (up, reason), got


def test_dns_detail_names_what_was_missing(responder: Responder) -> None:
    _, _, detail = verdict(dns_check(answers=("192.0.2.9",)), responder.dest)
    assert detail == "missing 192.0.2.9 (got 192.0.2.1, 192.0.2.2)"


def test_servfail_silence_spoof_and_refused(responder: Responder) -> None:
    responder.mode = "servfail"
    assert verdict(dns_check(), responder.dest)[2] == "rcode SERVFAIL, expected NOERROR"
    responder.mode = "silent"
    assert verdict(dns_check(), responder.dest)[1] is Reason.TIMEOUT
    responder.mode = "spoof"
    assert verdict(dns_check(answers=("192.0.2.1",)), responder.dest)[0]
    dead = DestKey(responder.dest.address, free_port(socket.SOCK_DGRAM, responder.dest.address))
    assert verdict(dns_check(), dead)[1] is Reason.REFUSED


def test_udp_send_expect() -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    dest = DestKey("127.0.0.1", sock.getsockname()[1])

    def echo() -> None:
        while True:
            try:
                data, peer = sock.recvfrom(2048)
            except OSError:
                return
            sock.sendto(b"noise", peer)  # a datagram that does not match is not the end
            sock.sendto(b"PONG " + data, peer)

    threading.Thread(target=echo, daemon=True).start()
    import re

    def check(expect: bytes) -> HealthCheck:
        spec = SendExpectSpec("udp", b"\x00ping", re.compile(expect))
        return HealthCheck(CheckType.SEND_EXPECT, interval=1.0, timeout=0.5, spec=spec)

    try:
        assert verdict(check(rb"^PONG \x00ping$"), dest)[0]
        up, reason, detail = verdict(check(b"^nothing"), dest)
        assert (up, reason) == (False, Reason.TIMEOUT) and "did not match" in detail
    finally:
        sock.close()
