"""The metrics endpoint's web config: TLS and basic auth, in Prometheus' exporter-toolkit
format (`--web.config.file`), so one file and one habit serve lvsmon and the exporters.

https://github.com/prometheus/exporter-toolkit/blob/master/docs/web-configuration.md

Read with the TOML config (`lvsmon check`, start, SIGHUP): a file that cannot be used
is a config error naming the key, never a surprise at the first scrape. Relative file
names are taken from the web config's directory, as exporter-toolkit does.
"""

from __future__ import annotations

import hashlib
import re
import ssl
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from lvsmon import configkit as ck
from lvsmon.model.web import TlsServer, WebConfig

TLS_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}
# Go's tls.ClientAuthType names. Python's TLS verifies every client certificate it asks
# for, so the two "accept any certificate" modes cannot be offered (exporter-toolkit
# itself calls them insecure).
CLIENT_AUTH = {
    "NoClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
UNVERIFIED_CLIENT_AUTH = ("RequestClientCert", "RequireAnyClientCert")
# The response headers exporter-toolkit lets a web config set, with their allowed values.
HEADERS: dict[str, tuple[str, ...]] = {
    "Strict-Transport-Security": (),
    "X-Content-Type-Options": ("nosniff",),
    "X-Frame-Options": ("deny", "sameorigin"),
    "X-XSS-Protection": (),
    "Content-Security-Policy": (),
}
# exporter-toolkit keys lvsmon does not implement: named, with what to do instead.
UNSUPPORTED = {
    "tls_server_config.cert": "inline PEM is not supported: put it in a file, use cert_file",
    "tls_server_config.key": "inline PEM is not supported: put it in a file, use key_file",
    "tls_server_config.client_ca": "inline PEM is not supported: use client_ca_file",
    "tls_server_config.cipher_suites": "not supported (Go cipher names): OpenSSL's defaults apply",
    "tls_server_config.curve_preferences": "not supported: OpenSSL's default groups apply",
    "rate_limit": "not supported by lvsmon",
}
# the web config and each PEM file it names are read whole: capped
MAX_WEB_CONFIG_BYTES = 1 * 2**20
MAX_PEM_BYTES = 1 * 2**20
_BCRYPT = re.compile(r"\$2[aby]\$(\d\d)\$[./A-Za-z0-9]{53}")
BCRYPT_EXPECTED = (
    'expected a bcrypt hash: "$2y$" (or $2a$, $2b$), a cost 04..31, "$", 53 characters; '
    "make one with: htpasswd -nBC 10 \"\" | tr -d ':\\n'"
)


class WebConfigError(Exception):
    """`problems`: (key path inside the file, what is wrong), every one found."""

    def __init__(self, path: str, problems: list[tuple[str, str]]):
        self.path = path
        self.problems = problems
        super().__init__("; ".join(f"{k}: {m}" if k else m for k, m in problems))


def load(path: str) -> WebConfig:
    """Read and validate a web config file (and the files it names). Raises WebConfigError."""
    try:
        text = ck.read_text(path, MAX_WEB_CONFIG_BYTES)
    except ck.FileProblem as exc:
        raise WebConfigError(path, [("", str(exc))]) from None
    return parse(text, path, Path(path).parent)


def parse(text: str, path: str, base: Path) -> WebConfig:
    problems: list[tuple[str, str]] = []
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise WebConfigError(path, [("", f"not valid YAML: {_yaml_reason(exc)}")]) from None
    except RecursionError:
        raise WebConfigError(path, [("", "not valid YAML: nested too deeply")]) from None
    if doc is None:  # an empty file: plain HTTP, no auth (as exporter-toolkit)
        doc = {}
    if not isinstance(doc, dict):
        raise WebConfigError(path, [("", f"expected a YAML mapping, got {_show(doc)}")])
    root = _Map(doc, "", problems)
    tls_map = root.mapping("tls_server_config")
    tls = _read_tls(tls_map, base) if tls_map is not None else None
    headers = _read_http(root.mapping("http_server_config"))
    users = _read_users(root.mapping("basic_auth_users"))
    root.check_unknown()
    if problems:
        raise WebConfigError(path, problems)
    return WebConfig(path=path, tls=tls, users=users, headers=headers)


class _Map:
    """One YAML mapping being read: records the keys used and the problems found."""

    def __init__(self, data: dict[Any, Any], path: str, problems: list[tuple[str, str]]):
        self.data = data
        self.path = path
        self.problems = problems
        self.known: set[str] = set()

    def key(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def error(self, key: str, message: str) -> None:
        self.problems.append((self.key(key), message))

    def take(self, key: str) -> Any:
        self.known.add(key)
        return self.data.get(key)

    def string(self, key: str, default: str = "") -> str:
        value = self.take(key)
        if value is None:
            return default
        if not isinstance(value, str):
            self.error(key, f"{_show(value)} is not valid: expected a string")
            return default
        return value

    def choice(self, key: str, options: Iterable[str], default: str) -> str:
        value = self.string(key, default)
        allowed = tuple(options)
        if value not in allowed:
            self.error(key, f'"{value}" is not valid: expected one of {", ".join(allowed)}')
            return default
        return value

    def boolean(self, key: str, default: bool) -> bool:
        value = self.take(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            self.error(key, f"{_show(value)} is not valid: expected true or false")
            return default
        return value

    def strings(self, key: str) -> tuple[str, ...]:
        value = self.take(key)
        if value is None:
            return ()
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.error(key, f"{_show(value)} is not valid: expected a list of strings")
            return ()
        return tuple(value)

    def mapping(self, key: str) -> _Map | None:
        value = self.take(key)
        if value is None:
            return None
        if not isinstance(value, dict):
            self.error(key, f"{_show(value)} is not valid: expected a mapping")
            return None
        return _Map(value, self.key(key), self.problems)

    def check_unknown(self) -> None:
        for key in self.data:
            if key in self.known:
                continue
            where = self.key(str(key))
            if where in UNSUPPORTED:
                self.problems.append((where, UNSUPPORTED[where]))
            else:
                known = ", ".join(sorted(self.known))
                self.problems.append((where, f"unknown key; known keys here: {known}"))


def _read_tls(m: _Map, base: Path) -> TlsServer | None:
    before = len(m.problems)
    cert = _file(m, "cert_file", base, required=True)
    key = _file(m, "key_file", base, required=True)
    auth = m.string("client_auth_type", "NoClientCert")
    if auth in UNVERIFIED_CLIENT_AUTH:
        m.error(
            "client_auth_type",
            f'"{auth}" is not supported: it accepts unverified client '
            'certificates; use "RequireAndVerifyClientCert" with client_ca_file',
        )
    elif auth not in CLIENT_AUTH:
        m.error(
            "client_auth_type", f'"{auth}" is not valid: expected one of {", ".join(CLIENT_AUTH)}'
        )
    ca = _file(m, "client_ca_file", base, required=False)
    sans = m.strings("client_allowed_sans")
    low = m.choice("min_version", TLS_VERSIONS, "TLS12")
    high = m.choice("max_version", TLS_VERSIONS, "TLS13")
    prefer = m.boolean("prefer_server_cipher_suites", True)
    m.check_unknown()
    if ca and auth == "NoClientCert":
        m.error(
            "client_ca_file",
            f'"{ca}" is set but client_auth_type is "NoClientCert": '
            "set client_auth_type: RequireAndVerifyClientCert to check client certificates",
        )
    if auth in ("VerifyClientCertIfGiven", "RequireAndVerifyClientCert") and not ca:
        m.error(
            "client_ca_file",
            f'missing: client_auth_type "{auth}" needs the CA that signs client certificates',
        )
    if sans and auth != "RequireAndVerifyClientCert":
        m.error(
            "client_allowed_sans",
            "needs client_auth_type: RequireAndVerifyClientCert (otherwise a client "
            "without a certificate has no name to check)",
        )
    if TLS_VERSIONS[low] > TLS_VERSIONS[high]:
        m.error("min_version", f'"{low}" is above max_version "{high}"')
    if len(m.problems) > before or not cert or not key:
        return None
    context = _context(m, cert, key, ca, auth, low, high, prefer)
    if context is None:
        return None
    digest = hashlib.sha256(repr((auth, sans, low, high, prefer)).encode())
    for name in (cert, key, ca):
        if name:
            digest.update(ck.read_file(name, MAX_PEM_BYTES))
    return TlsServer(
        cert_file=cert,
        key_file=key,
        client_auth_type=auth,
        client_ca_file=ca,
        client_allowed_sans=sans,
        min_version=low,
        max_version=high,
        fingerprint=digest.hexdigest(),
        context=context,
    )


def _file(m: _Map, key: str, base: Path, *, required: bool) -> str:
    """A readable file's path (relative to the web config's directory), or "" on a problem."""
    name = m.string(key)
    if not name:
        if required and key not in m.data:
            m.error(
                key, "missing: expected a file name (remove tls_server_config to serve plain HTTP)"
            )
        elif required:
            m.error(key, '"" is not valid: expected a file name')
        return ""
    path = base / name
    try:
        ck.read_file(str(path), MAX_PEM_BYTES)
    except ck.FileProblem as exc:
        m.error(key, f'"{path}" {_cannot(exc)}')
        return ""
    return str(path)


def _cannot(exc: ck.FileProblem) -> str:
    """'cannot read: <why>' worded as this file has always worded it: 'cannot be read: ...'."""
    return "cannot be read: " + str(exc).removeprefix("cannot read: ")


class _EncryptedKey(Exception):
    pass


def _no_password() -> bytes:
    # OpenSSL would otherwise prompt on the terminal and hang `lvsmon check` or the daemon
    raise _EncryptedKey


def _context(
    m: _Map, cert: str, key: str, ca: str, auth: str, low: str, high: str, prefer: bool
) -> ssl.SSLContext | None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = TLS_VERSIONS[low]
    ctx.maximum_version = TLS_VERSIONS[high]
    if prefer:
        ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    else:
        ctx.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
    try:
        ctx.load_cert_chain(cert, key, password=_no_password)
    except _EncryptedKey:
        m.error(
            "key_file",
            f'"{key}" is encrypted: lvsmon needs an unencrypted key '
            "(make it readable by lvsmon only)",
        )
        return None
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            m.error("key_file", f'"{key}" is not the key of cert_file "{cert}"')
        else:
            m.error(
                "cert_file",
                f'"{cert}" with key_file "{key}": not a PEM certificate and '
                f"private key ({exc.reason or exc})",
            )
        return None
    if ca:
        try:
            ctx.load_verify_locations(cafile=ca)
        except ssl.SSLError as exc:
            m.error("client_ca_file", f'"{ca}": no PEM CA certificate in it ({exc.reason})')
            return None
    ctx.verify_mode = CLIENT_AUTH[auth]
    return ctx


def _read_http(m: _Map | None) -> tuple[tuple[str, str], ...]:
    if m is None:
        return ()
    m.boolean("http2", True)  # accepted for compatibility: lvsmon answers HTTP/1.0
    headers: list[tuple[str, str]] = []
    hm = m.mapping("headers")
    if hm is not None:
        for name, value in hm.data.items():
            hm.known.add(str(name))
            allowed = HEADERS.get(str(name))
            if allowed is None:
                hm.error(str(name), "this header cannot be set; allowed: " + ", ".join(HEADERS))
            elif not isinstance(value, str) or "\r" in value or "\n" in value:
                hm.error(str(name), f"{_show(value)} is not valid: expected a one-line string")
            elif allowed and value not in allowed:
                hm.error(str(name), f'"{value}" is not valid: expected one of {", ".join(allowed)}')
            elif value:  # blank: unset, as exporter-toolkit
                headers.append((str(name), value))
    m.check_unknown()
    return tuple(headers)


def _read_users(m: _Map | None) -> tuple[tuple[str, str], ...]:
    if m is None:
        return ()
    users: list[tuple[str, str]] = []
    for name, hashed in m.data.items():
        user = str(name)
        m.known.add(user)
        if not isinstance(name, str) or not name or ":" in name:
            m.error(user, "is not a valid user name: expected a non-empty string without ':'")
        elif not isinstance(hashed, str):
            m.error(user, f"{_show(hashed)} is not valid: {BCRYPT_EXPECTED}")
        elif not (match := _BCRYPT.fullmatch(hashed)) or not 4 <= int(match.group(1)) <= 31:
            # not echoed: a value that is no hash may well be the plain password
            m.error(
                user,
                f"the value ({len(hashed)} characters, not shown) is not a bcrypt "
                f"hash: {BCRYPT_EXPECTED}",
            )
        else:
            users.append((user, hashed))
    return tuple(sorted(users))


def _yaml_reason(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    return f"{problem} at line {mark.line + 1}" if mark is not None else str(problem)


def _show(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "null"
    return repr(value)
