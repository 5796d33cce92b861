"""`https` checks against a real TLS server with certificates made in the test (trustme)."""

from __future__ import annotations

import re
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme

from lvsmon.model.health import CheckType, HealthCheck, HttpSpec, Reason, TlsSpec
from tests.integration.test_health_support import Misbehaving, first_verdict, run


@dataclass
class Pki:
    ca_file: str
    client_cert: str
    other_ca_file: str
    server: Misbehaving
    sni: list[str | None]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pki]:
    tmp: Path = tmp_path_factory.mktemp("pki")
    ca, other = trustme.CA(), trustme.CA()
    ca.cert_pem.write_to_path(str(tmp / "ca.pem"))
    other.cert_pem.write_to_path(str(tmp / "other.pem"))
    ca.issue_cert("client.example").private_key_and_cert_chain_pem.write_to_path(
        str(tmp / "client.pem")
    )
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("www.example.com", "127.0.0.1").configure_cert(ctx)
    ca.configure_trust(ctx)  # client certificates are verified against the same CA...
    ctx.verify_mode = ssl.CERT_OPTIONAL  # ...when one is sent
    sni: list[str | None] = []
    ctx.sni_callback = lambda obj, name, c: sni.append(name)
    server = Misbehaving(ssl_context=ctx)
    yield Pki(str(tmp / "ca.pem"), str(tmp / "client.pem"), str(tmp / "other.pem"), server, sni)
    server.close()


def https(**tls: object) -> HealthCheck:
    spec = HttpSpec(path="/health", expect_body=re.compile(b"healthy"), tls=TlsSpec(**tls))  # type: ignore[arg-type]
    return HealthCheck(CheckType.HTTPS, interval=1.0, timeout=0.5, spec=spec)


def verdict(pki: Pki, check: HealthCheck) -> tuple[bool, Reason | None, str]:
    probe = run(first_verdict(check, pki.server.dest))
    return probe.state.up, probe.state.reason, probe.state.detail


def test_no_verification_by_default(pki: Pki) -> None:
    assert verdict(pki, https()) == (True, None, "")


def test_verified_against_the_ca_file_by_ip_san(pki: Pki) -> None:
    assert verdict(pki, https(verify=True, ca_file=pki.ca_file))[0]


def test_sni_is_sent_and_verified(pki: Pki) -> None:
    del pki.sni[:]
    assert verdict(pki, https(verify=True, ca_file=pki.ca_file, sni="www.example.com"))[0]
    assert pki.sni == ["www.example.com"]
    up, reason, detail = verdict(pki, https(verify=True, ca_file=pki.ca_file, sni="evil.example"))
    assert (up, reason) == (False, Reason.TLS) and "evil.example" in detail


def test_an_unknown_ca_fails_with_tls(pki: Pki) -> None:
    up, reason, detail = verdict(pki, https(verify=True, ca_file=pki.other_ca_file))
    assert (up, reason) == (False, Reason.TLS) and "certificate" in detail


def test_the_system_store_does_not_know_a_test_ca(pki: Pki) -> None:
    assert verdict(pki, https(verify=True))[1] is Reason.TLS


def test_a_client_certificate_is_presented(pki: Pki) -> None:
    ctx_required = pki.server.ssl
    assert ctx_required is not None
    ctx_required.verify_mode = ssl.CERT_REQUIRED
    try:
        assert verdict(pki, https(client_cert=pki.client_cert))[0]
        up, reason, _ = verdict(pki, https())
        assert not up and reason in (Reason.TLS, Reason.RESET, Reason.CLOSED)
    finally:
        ctx_required.verify_mode = ssl.CERT_OPTIONAL


def test_plain_http_to_a_tls_port_is_not_http(pki: Pki) -> None:
    check = HealthCheck(CheckType.HTTP, interval=1.0, timeout=0.5)
    up, reason, _ = verdict(pki, check)
    assert not up and reason in (Reason.BAD_RESPONSE, Reason.CLOSED, Reason.RESET)


def test_wrong_body_over_tls(pki: Pki) -> None:
    pki.server.set("body")
    try:
        assert verdict(pki, https())[1] is Reason.BAD_BODY
    finally:
        pki.server.set("ok")
