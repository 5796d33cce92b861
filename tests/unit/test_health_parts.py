"""Small pure pieces of health checking: DNS wire format, chunked bodies, HTTP response
judging, the timeline, check definitions."""

from __future__ import annotations

import contextlib
import math
import re
from typing import Any

import dns.message
import dns.rrset
import pytest
from hypothesis import given
from hypothesis import strategies as st

from lvsmon import http1
from lvsmon.health import dnswire
from lvsmon.health.probes.http import Response
from lvsmon.health.ticker import Timeline
from lvsmon.model.health import (
    OK,
    CheckType,
    HealthCheck,
    HttpSpec,
    Reason,
    Result,
    TcpSpec,
    TlsSpec,
    fail,
)


def test_queries_are_what_dnspython_reads() -> None:
    query = dns.message.from_wire(dnswire.build_query(0x1234, "WWW.Example.com.", "MX", True))
    assert query.id == 0x1234 and query.flags & 0x0100
    (q,) = query.question
    assert q.name.to_text() == "WWW.Example.com." and q.rdtype == 15


def test_responses_with_name_compression() -> None:
    query = dns.message.make_query("example.com", "MX")
    response = dns.message.make_response(query)
    mx = ["10 mail.example.com.", "20 MX2.example.com."]
    response.answer.append(dns.rrset.from_text_list("example.com.", 60, "IN", "MX", mx))
    parsed = dnswire.parse_response(response.to_wire(), query.id)
    assert parsed.rcode_name == "NOERROR"
    assert sorted(parsed.answers) == ["10 mail.example.com.", "20 mx2.example.com."]
    assert dnswire.normalize("20 MX2.Example.com", "MX") == "20 mx2.example.com."


@given(st.binary(max_size=80), st.integers(0, 0xFFFF))
def test_garbage_never_crashes_the_parser(data: bytes, qid: int) -> None:
    with contextlib.suppress(ValueError):
        dnswire.parse_response(data, qid)


BAD_NAMES = ["", "a..b", "x" * 64 + ".com", ("a" * 60 + ".") * 5, "sp ace.com"]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_names(name: str) -> None:
    with pytest.raises(ValueError):
        dnswire.encode_name(name)


def test_dechunk() -> None:
    full = b"5\r\nhello\r\n7;x=y\r\n, world\r\n0\r\n\r\n"
    assert http1.dechunk(full) == b"hello, world"
    assert http1.dechunk(b"5\r\nhel", complete=False) == b"hel"  # capped mid-chunk: what came
    with pytest.raises(http1.Truncated):
        http1.dechunk(b"5\r\nhel")  # a whole answer (adaptive weights) must be complete
    with pytest.raises(http1.Truncated):
        http1.dechunk(b"zz\r\nhello\r\n")


def test_head_and_body_framing() -> None:
    raw = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\n\r\nhello, and more"
    start = http1.head_end(raw)
    head = http1.parse_head(raw)
    assert (head.status, head.reason, head.length, head.chunked) == (200, "OK", 5, False)
    assert head.headers["x-a"] == "1"
    assert http1.body(raw, head, start) == b"hello"
    with pytest.raises(http1.NotHttp):
        http1.parse_head(b"SSH-2.0-OpenSSH\r\n\r\n")
    cut = b"HTTP/1.0 200 OK\r\nContent-Length: 10\r\n\r\nhel"
    with pytest.raises(http1.Truncated):
        http1.body(cut, http1.parse_head(cut), http1.head_end(cut))


OK_BODY = b"HTTP/1.1 200 OK\r\nContent-Length: 15\r\n\r\nstatus: healthy"
CHUNKED = (
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"7\r\nstatus:\r\n8\r\n healthy\r\n0\r\n\r\n"
)


def judge(spec: HttpSpec, data: bytes, cap: int = 65536, step: int = 0) -> Result | None:
    """Feed `data` whole (step 0) or `step` bytes at a time, then EOF if still undecided."""
    response = Response(spec, cap)
    pieces = [data[i : i + step] for i in range(0, len(data), step)] if step else [data]
    for piece in pieces:
        if (result := response.feed(piece[: response.room])) is not None:
            return result
    return response.feed(b"")


BODY = HttpSpec(expect_body=re.compile(b"healthy"))
RESPONSES = [  # (spec, answer, cap, reason or None for OK, detail)
    (HttpSpec(), b"HTTP/1.1 204 No Content\r\n", 65536, None, ""),
    (HttpSpec(), b"HTTP/1.0 503 Busy\r\n\r\n", 65536, Reason.BAD_STATUS, "status 503"),
    (HttpSpec(expect_status=((503, 503),)), b"HTTP/1.1 503 x\r\n", 65536, None, ""),
    (HttpSpec(), b"SSH-2.0-OpenSSH\r\n", 65536, Reason.BAD_RESPONSE, "not HTTP"),
    (HttpSpec(), b"HTTP/1.1 20", 65536, Reason.CLOSED, "before the status line ended"),
    (HttpSpec(), b"HTTP/1.1 200" + b"x" * 100, 64, Reason.BAD_RESPONSE, "longer than 64"),
    (BODY, OK_BODY, 65536, None, ""),
    (BODY, OK_BODY.replace(b"healthy", b"sickly!"), 65536, Reason.BAD_BODY, "first 15"),
    (BODY, OK_BODY[:30], 65536, Reason.CLOSED, "before the headers ended"),
    (BODY, CHUNKED, 65536, None, ""),
    (BODY, OK_BODY + b"never read", 65536, None, ""),  # Content-Length decides, not EOF
    (
        BODY,
        OK_BODY.replace(b"15", b"99").replace(b"healthy", b"sickly!") + b"x" * 30 + b"healthy",
        60,
        Reason.BAD_BODY,
        "first 21",
    ),  # past the cap: never seen
]


@pytest.mark.parametrize("spec,data,cap,reason,detail", RESPONSES)
@pytest.mark.parametrize("step", [0, 1, 7])
def test_responses_are_judged_the_same_however_they_arrive(
    spec: HttpSpec, data: bytes, cap: int, reason: Reason | None, detail: str, step: int
) -> None:
    result = judge(spec, data, cap, step)
    assert result is not None and result.reason is reason and detail in result.detail, result


def test_a_response_is_decided_as_soon_as_it_can_be() -> None:
    response = Response(HttpSpec(), 65536)
    assert response.feed(b"HTTP/1.1 200") is None and response.phase == "read the status line"
    assert response.feed(b" OK\r\n") is OK  # no need for headers, body or EOF
    response.reset()
    assert response.feed(b"HTTP/1.1 500 no\r\n") == fail(Reason.BAD_STATUS, "status 500")


def test_the_spec_follows_the_type() -> None:
    assert HealthCheck(CheckType.HTTP).spec == HttpSpec()
    assert HealthCheck(CheckType.HTTPS).spec == HttpSpec(tls=TlsSpec())
    with pytest.raises(ValueError):
        HealthCheck(CheckType.DNS, spec=HttpSpec())
    assert HealthCheck(CheckType.TCP).spec == TcpSpec()


def test_timeline_keeps_time_order_across_lanes_and_the_heap() -> None:
    tl: Timeline[str] = Timeline()
    tl.add("first-run", 0.5)  # no lane: the heap
    tl.add("a", 1.0, lane=1.0)
    tl.add("b", 1.2, lane=1.0)
    tl.add("early", 0.9, lane=1.0)  # out of order for its lane: the heap, not lost
    tl.add("c", 0.7, lane=2.0)
    assert len(tl) == 5 and tl.next_time() == 0.5
    assert tl.pop_due(0.4) == []
    assert sorted(tl.pop_due(1.0)) == ["a", "c", "early", "first-run"]
    assert tl.next_time() == 1.2 and len(tl) == 1
    assert tl.pop_due(5.0) == ["b"] and tl.next_time() == math.inf
    assert tl._lanes == {}  # an emptied lane goes: intervals nobody uses any more


@given(st.lists(st.tuples(st.floats(0, 10), st.sampled_from([None, 0.5, 1.0])), max_size=60))
def test_timeline_pops_every_entry_once_and_only_when_due(entries: list[Any]) -> None:
    tl: Timeline[int] = Timeline()
    for i, (when, lane) in enumerate(entries):
        tl.add(i, when, lane)
    seen: list[int] = []
    for now in (2.5, 5.0, 7.5, 10.0):
        due = tl.pop_due(now)
        assert all(entries[i][0] <= now for i in due)
        assert tl.next_time() > now
        seen += due
    assert sorted(seen) == list(range(len(entries)))
