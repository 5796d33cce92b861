"""The metrics endpoint's web config (exporter-toolkit format) and its basic auth."""

from __future__ import annotations

import asyncio
import base64
import shutil
import ssl
from pathlib import Path

import bcrypt
import pytest
import trustme
from cryptography.hazmat.primitives import serialization

from lvsmon import config as configmod
from lvsmon.config import web as webconfig
from lvsmon.config.web import WebConfigError
from lvsmon.model.web import WebConfig
from lvsmon.webauth import BasicAuth, parse_basic

ROOT = Path(__file__).resolve().parents[2]
HASH = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(4)).decode()  # cost 4: fast tests


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def certs(tmp_path: Path, ca: trustme.CA) -> Path:
    """server.crt / server.key / ca.crt in tmp_path."""
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "server.crt"))
    cert.private_key_pem.write_to_path(str(tmp_path / "server.key"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.crt"))
    return tmp_path


def load(tmp: Path, text: str) -> WebConfig:
    path = tmp / "web.yml"
    path.write_text(text)
    return webconfig.load(str(path))


def problems(tmp: Path, text: str) -> list[tuple[str, str]]:
    with pytest.raises(WebConfigError) as err:
        load(tmp, text)
    return err.value.problems


TLS = "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"


def test_full_config_relative_to_its_directory(certs: Path) -> None:
    web = load(
        certs,
        TLS + "  client_auth_type: RequireAndVerifyClientCert\n"
        "  client_ca_file: ca.crt\n  client_allowed_sans: [prometheus.example]\n"
        "  min_version: TLS13\n"
        "http_server_config:\n  http2: true\n  headers:\n    X-Frame-Options: deny\n"
        f"basic_auth_users:\n  prom: {HASH}\n  alice: '$2y${HASH[4:]}'\n",
    )
    assert web.tls is not None and web.scheme == "https"
    assert web.tls.cert_file == str(certs / "server.crt")
    assert web.tls.client_ca_file == str(certs / "ca.crt")
    assert web.tls.context is not None
    assert web.tls.context.verify_mode == ssl.CERT_REQUIRED
    assert web.tls.context.minimum_version == ssl.TLSVersion.TLSv1_3
    assert [u for u, _ in web.users] == ["alice", "prom"]
    assert web.headers == (("X-Frame-Options", "deny"),)
    assert "client certificates (RequireAndVerifyClientCert), basic auth (2 users)" in (
        web.describe()
    )


def test_empty_file_is_plain_http_without_auth(tmp_path: Path) -> None:
    web = load(tmp_path, "")
    assert web.tls is None and web.users == () and web.scheme == "http"


def test_a_renewed_certificate_changes_the_fingerprint(certs: Path, ca: trustme.CA) -> None:
    first = load(certs, TLS)
    assert load(certs, TLS).tls == first.tls  # same files: no rebind
    renewed = ca.issue_cert("127.0.0.1")
    renewed.cert_chain_pems[0].write_to_path(str(certs / "server.crt"))
    renewed.private_key_pem.write_to_path(str(certs / "server.key"))
    assert load(certs, TLS).tls != first.tls


def test_missing_and_unreadable_files_name_key_and_path(certs: Path) -> None:
    found = problems(certs, "tls_server_config:\n  cert_file: nope.crt\n")
    assert (
        "tls_server_config.cert_file",
        f'"{certs / "nope.crt"}" cannot be read: No such file or directory',
    ) in found
    assert any(k == "tls_server_config.key_file" and m.startswith("missing") for k, m in found)


def test_bad_yaml_names_the_line(tmp_path: Path) -> None:
    [(key, message)] = problems(tmp_path, "tls_server_config:\n  cert_file: [a\n")
    assert key == "" and message.startswith("not valid YAML") and "line" in message


def test_not_a_mapping(tmp_path: Path) -> None:
    [(_, message)] = problems(tmp_path, "- a\n- b\n")
    assert "expected a YAML mapping" in message


def test_unknown_and_unsupported_keys(certs: Path) -> None:
    found = dict(
        problems(
            certs,
            TLS + "  cert_flie: x\n  cipher_suites: [TLS_AES_128]\n"
            "rate_limit: {interval: 1s}\nbasic_auth: {}\n",
        )
    )
    assert found["tls_server_config.cert_flie"].startswith("unknown key; known keys here:")
    assert "cert_file" in found["tls_server_config.cert_flie"]
    assert "not supported" in found["tls_server_config.cipher_suites"]
    assert found["rate_limit"] == "not supported by lvsmon"
    assert found["basic_auth"].startswith("unknown key")


def test_a_value_that_is_not_bcrypt_is_rejected_and_not_echoed(tmp_path: Path) -> None:
    found = dict(
        problems(
            tmp_path,
            "basic_auth_users:\n  prom: hunter2hunter2\n"
            f"  low: '$2b$03${HASH[7:]}'\n  'a:b': {HASH}\n  n: 12\n",
        )
    )
    assert "is not a bcrypt hash" in found["basic_auth_users.prom"]
    assert "hunter2" not in found["basic_auth_users.prom"]  # may be the plain password
    assert "htpasswd -nBC 10" in found["basic_auth_users.prom"]
    assert "is not a bcrypt hash" in found["basic_auth_users.low"]  # cost below 4
    assert "user name" in found["basic_auth_users.a:b"]
    assert "12 is not valid" in found["basic_auth_users.n"]


@pytest.mark.parametrize(
    ("extra", "key", "words"),
    [
        ("  client_auth_type: RequireAnyClientCert\n", "client_auth_type", "not supported"),
        ("  client_auth_type: Required\n", "client_auth_type", "expected one of"),
        ("  client_ca_file: ca.crt\n", "client_ca_file", 'client_auth_type is "NoClientCert"'),
        ("  client_auth_type: VerifyClientCertIfGiven\n", "client_ca_file", "missing"),
        ("  client_allowed_sans: [x]\n", "client_allowed_sans", "RequireAndVerifyClientCert"),
        ("  min_version: TLS13\n  max_version: TLS12\n", "min_version", "above max_version"),
        ("  min_version: TLS14\n", "min_version", '"TLS14" is not valid'),
        ("  prefer_server_cipher_suites: maybe\n", "prefer_server_cipher_suites", "true or"),
    ],
)
def test_tls_settings_that_cannot_work(certs: Path, extra: str, key: str, words: str) -> None:
    found = dict(problems(certs, TLS + extra))
    assert words in found[f"tls_server_config.{key}"], found


def test_key_of_another_certificate(certs: Path, ca: trustme.CA) -> None:
    ca.issue_cert("other").private_key_pem.write_to_path(str(certs / "other.key"))
    found = dict(
        problems(certs, "tls_server_config:\n  cert_file: server.crt\n  key_file: other.key\n")
    )
    assert "is not the key of cert_file" in found["tls_server_config.key_file"]


def test_encrypted_key_is_refused_without_prompting(certs: Path) -> None:
    key = serialization.load_pem_private_key((certs / "server.key").read_bytes(), None)
    (certs / "enc.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"pw"),
        )
    )
    found = dict(
        problems(certs, "tls_server_config:\n  cert_file: server.crt\n  key_file: enc.key\n")
    )
    assert "is encrypted" in found["tls_server_config.key_file"]


def test_not_pem(certs: Path) -> None:
    (certs / "junk.crt").write_text("hello\n")
    found = dict(
        problems(certs, "tls_server_config:\n  cert_file: junk.crt\n  key_file: server.key\n")
    )
    assert "not a PEM certificate" in found["tls_server_config.cert_file"]


def test_headers_are_checked(tmp_path: Path) -> None:
    found = dict(
        problems(
            tmp_path,
            "http_server_config:\n  headers:\n    X-Frame-Options: allow\n    Server: lvsmon\n",
        )
    )
    assert "expected one of deny, sameorigin" in found["http_server_config.headers.X-Frame-Options"]
    assert "cannot be set" in found["http_server_config.headers.Server"]


def test_client_allowed_sans_match_dns_and_ip_by_value(certs: Path) -> None:
    web = load(
        certs,
        TLS + "  client_auth_type: RequireAndVerifyClientCert\n"
        "  client_ca_file: ca.crt\n  client_allowed_sans: [scraper.example, '::1']\n",
    )
    assert web.tls is not None
    assert web.tls.allows_peer({"subjectAltName": (("DNS", "scraper.example"),)})
    assert web.tls.allows_peer({"subjectAltName": (("IP Address", "0:0:0:0:0:0:0:1\n"),)})
    assert not web.tls.allows_peer({"subjectAltName": (("DNS", "other.example"),)})
    assert not web.tls.allows_peer(None)


# --- through the TOML config: `lvsmon check` reports it like any config error ---


def toml(web_file: Path) -> str:
    return f'[daemon]\nweb_config_file = "{web_file}"\n'


def test_config_error_names_the_key_the_file_and_the_problem(tmp_path: Path) -> None:
    web_file = tmp_path / "web.yml"
    web_file.write_text("tls_server_config:\n  cert_file: nope.crt\n  key_file: nope.key\n")
    with pytest.raises(configmod.ConfigError) as err:
        configmod.loads(toml(web_file), "lvsmon.toml")
    text = err.value.render()
    assert (
        f'lvsmon.toml: daemon.web_config_file: "{web_file}": tls_server_config.cert_file: '
        f'"{tmp_path / "nope.crt"}" cannot be read: No such file or directory'
    ) in text
    assert "tls_server_config.key_file" in text


def test_config_error_for_a_missing_web_config(tmp_path: Path) -> None:
    with pytest.raises(configmod.ConfigError) as err:
        configmod.loads(toml(tmp_path / "absent.yml"), "lvsmon.toml")
    assert f'daemon.web_config_file: "{tmp_path / "absent.yml"}": cannot read: No such' in (
        err.value.render()
    )


def test_config_carries_the_web_config(certs: Path) -> None:
    (certs / "web.yml").write_text(TLS + f"basic_auth_users:\n  prom: {HASH}\n")
    cfg = configmod.loads(toml(certs / "web.yml"))
    assert cfg.daemon.web_config_file == str(certs / "web.yml")
    assert cfg.daemon.web is not None and cfg.daemon.web.users == (("prom", HASH),)


def test_the_example_web_config_is_valid(certs: Path) -> None:
    shutil.copy(ROOT / "config" / "web.yml", certs / "web.yml")
    shutil.copy(certs / "server.crt", certs / "lvsmon.crt")
    shutil.copy(certs / "server.key", certs / "lvsmon.key")
    web = webconfig.load(str(certs / "web.yml"))
    assert web.tls is not None and [u for u, _ in web.users] == ["prometheus"]
    auth = BasicAuth(web.users)
    assert auth.verify("prometheus", b"changeme")  # what its comment says


# --- basic auth ---


def header(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_parse_basic() -> None:
    assert parse_basic(header("prom", "a:b")) == ("prom", b"a:b")
    assert parse_basic("basic " + base64.b64encode(b"u:").decode()) == ("u", b"")
    assert parse_basic(None) is None
    assert parse_basic("Bearer abc") is None
    assert parse_basic("Basic !!!") is None
    assert parse_basic("Basic " + base64.b64encode(b"nocolon").decode()) is None


def test_verify_and_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[bytes] = []
    real = bcrypt.checkpw

    def counting(password: bytes, hashed: bytes) -> bool:
        calls.append(password)
        return real(password, hashed)

    monkeypatch.setattr(bcrypt, "checkpw", counting)  # the module webauth calls
    auth = BasicAuth([("prom", HASH)])

    async def scenario() -> list[bool]:
        return [
            await auth.allows(header("prom", "s3cret")),  # bcrypt
            await auth.allows(header("prom", "s3cret")),  # cached
            await auth.allows(header("prom", "wrong")),  # bcrypt, not cached
            await auth.allows(header("prom", "wrong")),  # bcrypt again
            await auth.allows(header("nobody", "s3cret")),  # bcrypt against the dummy hash
            await auth.allows(None),
            await auth.allows(header("prom", "x" * 100)),  # over bcrypt's 72 bytes
            await auth.allows(header("prom", "s3cret")),  # still cached
        ]

    assert asyncio.run(scenario()) == [True, True, False, False, False, False, False, True]
    assert calls == [b"s3cret", b"wrong", b"wrong", b"s3cret", b"x" * 100]


def test_a_cached_password_is_not_kept_in_clear() -> None:
    auth = BasicAuth([("prom", HASH)])
    assert auth.verify("prom", b"s3cret")
    assert all(b"s3cret" not in v for v in auth._verified.values())
