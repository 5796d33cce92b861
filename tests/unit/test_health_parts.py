"""Small pure pieces of health checking: DNS wire format, chunked bodies, the ticker,
the in-flight limit, check definitions."""

from __future__ import annotations

import asyncio
import contextlib

import dns.message
import dns.rrset
import pytest
from hypothesis import given
from hypothesis import strategies as st

from lvsmon.health import dnswire
from lvsmon.health.check import CheckType, HealthCheck, HttpSpec, TcpSpec, TlsSpec
from lvsmon.health.probes.http import dechunk
from lvsmon.health.ticker import Limit, Ticker


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
    assert dechunk(b"5\r\nhello\r\n7;x=y\r\n, world\r\n0\r\n\r\n") == b"hello, world"
    assert dechunk(b"5\r\nhel") == b"hel"  # capped mid-chunk: what there is


def test_the_spec_follows_the_type() -> None:
    assert HealthCheck(CheckType.HTTP).spec == HttpSpec()
    assert HealthCheck(CheckType.HTTPS).spec == HttpSpec(tls=TlsSpec())
    with pytest.raises(ValueError):
        HealthCheck(CheckType.DNS, spec=HttpSpec())
    assert HealthCheck(CheckType.TCP).spec == TcpSpec()


def test_ticker_runs_in_order_skips_cancelled_and_wakes_early() -> None:
    async def scenario() -> list[str]:
        loop = asyncio.get_running_loop()
        ticker = Ticker(tick=0.005)
        ticker.start()
        ran: list[str] = []
        now = loop.time()
        ticker.at(now + 0.2, lambda: ran.append("late"))
        gone = ticker.at(now + 0.01, lambda: ran.append("cancelled"))
        Ticker.cancel(gone)
        await asyncio.sleep(0.01)  # the runner sleeps until 0.2 now...
        ticker.at(loop.time() + 0.02, lambda: ran.append("early"))  # ...and must wake sooner
        start = loop.time()
        await ticker.sleep_until(start + 0.05)
        ran.append(f"slept {loop.time() - start < 0.1}")
        await asyncio.sleep(0.2)
        await ticker.stop()
        return ran

    assert asyncio.run(scenario()) == ["early", "slept True", "late"]


def test_limit_hands_slots_over_and_survives_cancellation() -> None:
    async def scenario() -> None:
        limit = Limit(1)
        limit.free -= 1  # taken
        waiter = asyncio.ensure_future(limit.wait())
        gone = asyncio.ensure_future(limit.wait())
        await asyncio.sleep(0)
        gone.cancel()  # cancelled while queued: leaves the queue
        await asyncio.sleep(0)
        limit.release()  # to the first waiter
        await waiter
        assert limit.free == 0 and limit.in_use == 1
        late = asyncio.ensure_future(limit.wait())
        await asyncio.sleep(0)
        limit.release()  # granted to `late`...
        late.cancel()  # ...which is cancelled before it runs: the slot is passed back
        with pytest.raises(asyncio.CancelledError):
            await late
        assert limit.free == 1

    asyncio.run(scenario())
