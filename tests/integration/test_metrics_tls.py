"""The daemon's metrics endpoint behind TLS, client certificates and basic auth (an
exporter-toolkit web config), proven with real clients: urllib, `lvsmon status/save`,
`lvsmon check`, and a real Prometheus scraping it."""

from __future__ import annotations

import http.client
import json
import os
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import bcrypt
import pytest
import trustme

from lvsmon.client import PASSWORD_ENV, StatusClient, basic_authorization
from tests.integration.harness import REPO, Daemon, backends, wait_for
from tests.integration.test_daemon import service
from tests.ports import free_port
from tests.prometheus import Job, Prometheus, job

USER, PASSWORD = "prom", "correct horse"
# cost 12 (~0.25 s a check): an uncached verification per scrape could not hide
HASH = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(12)).decode()


@dataclass
class Pki:
    dir: Path
    ca: trustme.CA
    client_ca: trustme.CA

    @property
    def ca_file(self) -> Path:
        return self.dir / "ca.crt"

    @property
    def client_ca_file(self) -> Path:
        return self.dir / "client-ca.crt"

    @property
    def client_pem(self) -> Path:  # a scraper's certificate and key, from client_ca
        return self.dir / "client.pem"

    def issue_server(self, ca: trustme.CA | None = None) -> None:
        cert = (ca or self.ca).issue_cert("127.0.0.1", "localhost")
        cert.cert_chain_pems[0].write_to_path(str(self.dir / "server.crt"))
        cert.private_key_pem.write_to_path(str(self.dir / "server.key"))

    def context(
        self, *, client_cert: Path | None = None, ca_file: Path | None = None
    ) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(ca_file or self.ca_file))
        if client_cert is not None:
            ctx.load_cert_chain(str(client_cert))
        return ctx


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    pki = Pki(tmp_path / "pki", trustme.CA(), trustme.CA())
    pki.dir.mkdir()
    pki.issue_server()
    pki.ca.cert_pem.write_to_path(str(pki.ca_file))
    pki.client_ca.cert_pem.write_to_path(str(pki.client_ca_file))
    scraper = pki.client_ca.issue_cert("scraper.example")
    scraper.private_key_and_cert_chain_pem.write_to_path(str(pki.client_pem))
    return pki


def web_yml(pki: Pki, extra_tls: str = "", hashed: str = HASH) -> str:
    return (
        f"tls_server_config:\n  cert_file: {pki.dir / 'server.crt'}\n"
        f"  key_file: {pki.dir / 'server.key'}\n{extra_tls}"
        f"basic_auth_users:\n  {USER}: {hashed}\n"
    )


MTLS = "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: {ca}\n"


class TlsDaemon(Daemon):
    """The harness daemon with `web_config_file`, read over HTTPS with credentials."""

    def __init__(self, tmp: Path, body: str, web: Path, context: ssl.SSLContext):
        self.web = web
        super().__init__(tmp, body)
        self.url = f"https://127.0.0.1:{self.metrics_port}"
        self.client = StatusClient(self.url, context, basic_authorization(USER, PASSWORD))

    def header(self) -> str:
        return super().header() + f'web_config_file = "{self.web}"\n'

    def get(self, path: str) -> bytes:
        return self.client.get(path)


@pytest.fixture
def daemons() -> Iterator[list[Daemon]]:
    started: list[Daemon] = []
    yield started
    for d in started:
        d.kill()


def start(daemons: list[Daemon], tmp: Path, web: str, context: ssl.SSLContext) -> TlsDaemon:
    (tmp / "web.yml").write_text(web)
    d = TlsDaemon(tmp, service(free_port(), _rs()), tmp / "web.yml", context)
    daemons.append(d)
    return d.start()  # type: ignore[return-value]


def _rs() -> str:  # a real server nobody connects to: the endpoint is what is tested
    return f'[[virtual_server.real_server]]\naddress = "127.0.0.1"\nport = {free_port()}\n'


def fetch(
    url: str, context: ssl.SSLContext | None, auth: str | None = None
) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url)
    if auth:
        request.add_header("Authorization", auth)
    try:
        with urllib.request.urlopen(request, timeout=5, context=context) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        with exc:  # the error is the response: it holds the connection
            return exc.code, dict(exc.headers), exc.read()


def refused(url: str, context: ssl.SSLContext | None, auth: str | None = None) -> str:
    """The request gets no HTTP response at all; returns why."""
    with pytest.raises((OSError, http.client.HTTPException)) as err:
        fetch(url, context, auth)
    return repr(err.value)


def cli(*args: str, password: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != PASSWORD_ENV}
    if password is not None:
        env[PASSWORD_ENV] = password
    return subprocess.run(
        [sys.executable, "-m", "lvsmon.cli", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )


def test_tls_and_basic_auth(daemons: list[Daemon], tmp_path: Path, pki: Pki) -> None:
    d = start(daemons, tmp_path, web_yml(pki), pki.context())
    good = basic_authorization(USER, PASSWORD)
    status, _, body = fetch(d.url + "/metrics", pki.context(), good)
    assert status == 200 and b"lvsmon_build_info{" in body
    assert "lvsmon_scrape_duration_seconds" in d.metrics()
    assert d.sample("lvsmon_scrape_duration_seconds")  # > 0: the previous render's cost
    assert json.loads(fetch(d.url + "/status", pki.context(), good)[2])["dataplane"] == "proxy"

    for auth in (
        basic_authorization(USER, "wrong"),
        basic_authorization("root", PASSWORD),
        None,
        "Basic !!!",
    ):
        for path in ("/metrics", "/status", "/"):
            status, headers, body = fetch(d.url + path, pki.context(), auth)
            assert status == 401, (auth, path)
            assert headers["WWW-Authenticate"].startswith('Basic realm="lvsmon"')
            assert b"lvsmon_" not in body

    # plain HTTP on the TLS port, and a client that does not trust the certificate
    refused(f"http://127.0.0.1:{d.metrics_port}/metrics", None, good)
    assert "CERTIFICATE_VERIFY_FAILED" in refused(
        d.url + "/metrics", ssl.create_default_context(), good
    )

    # bcrypt (cost 12, ~0.25 s) is paid once: ten scrapes cost far less than one more check
    began = time.monotonic()
    for _ in range(10):
        assert fetch(d.url + "/metrics", pki.context(), good)[0] == 200
    assert time.monotonic() - began < 1.5


def test_lvsmon_status_and_save_against_tls_and_auth(
    daemons: list[Daemon], tmp_path: Path, pki: Pki
) -> None:
    d = start(daemons, tmp_path, web_yml(pki), pki.context())
    vip = d.status()["virtual_servers"][0]["port"]
    # from the config: https, and the daemon's own certificate is trusted (no --ca-file)
    result = cli("status", "-c", str(d.path), "--user", USER, password=PASSWORD)
    assert result.returncode == 0, result.stderr
    assert f"TCP  127.0.0.1:{vip} wlc" in result.stdout
    (tmp_path / "password").write_text(PASSWORD + "\n")
    result = cli(
        "save",
        "--url",
        f"https://localhost:{d.metrics_port}",
        "--ca-file",
        str(pki.ca_file),
        "--user",
        USER,
        "--password-file",
        str(tmp_path / "password"),
    )
    assert result.returncode == 0, result.stderr
    assert f"-A -t 127.0.0.1:{vip} -s wlc" in result.stdout
    result = cli(
        "status", "--json", "--url", d.url, "--insecure", "--user", USER, password=PASSWORD
    )
    assert result.returncode == 0 and json.loads(result.stdout)["dataplane"] == "proxy"

    result = cli("status", "-c", str(d.path))
    assert result.returncode == 1 and "401 Unauthorized: it needs basic auth" in result.stderr
    result = cli("status", "-c", str(d.path), "--user", USER, password="wrong")
    assert result.returncode == 1 and "401" in result.stderr
    result = cli("status", "--url", d.url, "--user", USER, password=PASSWORD)  # system CAs
    assert result.returncode == 1 and "CERTIFICATE_VERIFY_FAILED" in result.stderr
    result = cli("status", "-c", str(d.path), "--user", USER)  # no password, no terminal
    assert result.returncode == 1 and PASSWORD_ENV in result.stderr


def test_client_certificates(daemons: list[Daemon], tmp_path: Path, pki: Pki) -> None:
    web = web_yml(pki, MTLS.format(ca=pki.client_ca_file))
    d = start(daemons, tmp_path, web, pki.context(client_cert=pki.client_pem))
    good = basic_authorization(USER, PASSWORD)
    assert fetch(d.url + "/metrics", pki.context(client_cert=pki.client_pem), good)[0] == 200
    refused(d.url + "/metrics", pki.context(), good)  # no client certificate
    stranger = pki.dir / "stranger.pem"  # from a CA the daemon does not trust
    trustme.CA().issue_cert("scraper.example").private_key_and_cert_chain_pem.write_to_path(
        str(stranger)
    )
    refused(d.url + "/metrics", pki.context(client_cert=stranger), good)
    result = cli(
        "status",
        "-c",
        str(d.path),
        "--user",
        USER,
        "--cert-file",
        str(pki.client_pem),
        password=PASSWORD,
    )
    assert result.returncode == 0, result.stderr

    # client_allowed_sans, applied by a reload (SIGHUP rebinds with the new TLS settings)
    (tmp_path / "web.yml").write_text(
        web_yml(
            pki, MTLS.format(ca=pki.client_ca_file) + "  client_allowed_sans: [other.example]\n"
        )
    )
    d.reload()

    def forbidden() -> bytes | None:
        status, _, body = fetch(d.url + "/metrics", pki.context(client_cert=pki.client_pem), good)
        return body if status == 403 else None

    assert b"lvsmon_" not in wait_for(forbidden, 10, "the allowed SANs to apply")


def test_sighup_rereads_the_web_config(daemons: list[Daemon], tmp_path: Path, pki: Pki) -> None:
    d = start(daemons, tmp_path, web_yml(pki), pki.context())
    old = basic_authorization(USER, PASSWORD)
    new_password = "battery staple"
    new = basic_authorization(USER, new_password)
    (tmp_path / "web.yml").write_text(
        web_yml(pki, hashed=bcrypt.hashpw(new_password.encode(), bcrypt.gensalt(4)).decode())
    )
    d.reload()
    assert fetch(d.url + "/metrics", pki.context(), new)[0] == 200
    assert fetch(d.url + "/metrics", pki.context(), old)[0] == 401

    # a renewed certificate (here from another CA) is served after SIGHUP
    other = trustme.CA()
    other.cert_pem.write_to_path(str(pki.dir / "other-ca.crt"))
    pki.issue_server(other)
    d.reload()
    renewed = pki.context(ca_file=pki.dir / "other-ca.crt")
    assert wait_for(lambda: fetch(d.url + "/metrics", renewed, new)[0] == 200, 10, "new cert")
    assert "CERTIFICATE_VERIFY_FAILED" in refused(d.url + "/metrics", pki.context(), new)

    # a broken web config is rejected on reload: the running one stays
    (tmp_path / "web.yml").write_text(web_yml(pki, hashed="plaintext"))
    d.reload()
    assert "web_config_file" in d.log() and "not a bcrypt hash" in d.log()
    assert fetch(d.url + "/metrics", renewed, new)[0] == 200
    d.client = StatusClient(d.url, renewed, new)
    assert d.sample("lvsmon_config_last_reload_successful") == 0


def test_check_and_run_reject_a_bad_web_config(tmp_path: Path, pki: Pki) -> None:
    (tmp_path / "web.yml").write_text(
        f"tls_server_config:\n  cert_file: {pki.dir / 'missing.crt'}\n"
        f"  key_file: {pki.dir / 'server.key'}\n  client_auth_type: RequireAnyClientCert\n"
        "basic_auth_users:\n  prom: not-a-hash\n"
    )
    d = Daemon(tmp_path, service(free_port(), _rs()))
    d.path.write_text(
        d.header() + f'web_config_file = "{tmp_path / "web.yml"}"\n' + service(free_port(), _rs())
    )
    result = cli("check", "-c", str(d.path))
    assert result.returncode == 1
    where = f'{d.path}: daemon.web_config_file: "{tmp_path / "web.yml"}": '
    assert (
        where + f'tls_server_config.cert_file: "{pki.dir / "missing.crt"}" cannot be read: '
        "No such file or directory"
    ) in result.stderr
    assert (
        where + 'tls_server_config.client_auth_type: "RequireAnyClientCert" is not '
        "supported" in result.stderr
    )
    assert (
        where + "basic_auth_users.prom: the value (10 characters, not shown) is not a "
        "bcrypt hash" in result.stderr
    )
    run = cli("run", "-c", str(d.path))
    assert run.returncode == 1 and "daemon.web_config_file" in run.stderr


def test_prometheus_scrapes_over_tls_with_basic_auth(
    daemons: list[Daemon], tmp_path: Path, pki: Pki
) -> None:
    with backends("a") as (a,):
        (tmp_path / "web.yml").write_text(web_yml(pki))
        d = TlsDaemon(
            tmp_path, service(free_port(), a.toml(3)), tmp_path / "web.yml", pki.context()
        )
        daemons.append(d)
        d.start()
        (tmp_path / "password").write_text(PASSWORD + "\n")
        target = f"127.0.0.1:{d.metrics_port}"
        (tmp_path / "wrong").write_text("wrong\n")

        def https(name: str, password: Path) -> Job:
            return job(
                name,
                [target],
                scheme="https",
                tls_config={"ca_file": str(pki.ca_file)},
                basic_auth={"username": USER, "password_file": str(password)},
            )

        jobs = [https("lvsmon", tmp_path / "password"), https("wrong_password", tmp_path / "wrong")]
        with Prometheus(tmp_path, jobs) as prom:
            prom.wait('up{job="lvsmon"} == 1', 30, "a successful scrape")
            weights = prom.wait(
                'lvsmon_real_server_weight{job="lvsmon"}', 30, "the weight in Prometheus"
            )
            assert [float(r["value"][1]) for r in weights] == [3]
            assert prom.wait(
                'up{job="wrong_password"} == 0', 30, "the wrong password's failed scrape"
            )
            assert prom.vector('lvsmon_build_info{job="wrong_password"}') == []
