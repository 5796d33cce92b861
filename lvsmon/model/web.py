"""The metrics endpoint's web config (TLS, client certificates, basic auth) as values.

Read from an exporter-toolkit web config file by lvsmon.config.web; served by
lvsmon.httpd. `context` is the server's SSL context, built once when the file is read.
"""

from __future__ import annotations

import ipaddress
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class TlsServer:
    cert_file: str
    key_file: str
    client_auth_type: str = "NoClientCert"
    client_ca_file: str = ""
    client_allowed_sans: tuple[str, ...] = ()
    min_version: str = "TLS12"
    max_version: str = "TLS13"
    # sha256 of the files and settings read: a renewed certificate is a change (rebind)
    fingerprint: str = ""
    context: ssl.SSLContext | None = field(default=None, compare=False, repr=False)

    @property
    def requires_client_cert(self) -> bool:
        return self.client_auth_type == "RequireAndVerifyClientCert"

    def allows_peer(self, peercert: Mapping[str, Any] | None) -> bool:
        """client_allowed_sans: the client certificate names one of them (DNS, IP, email,
        URI), compared exactly (IP addresses by value)."""
        if not self.client_allowed_sans:
            return True
        sans = [str(v) for _, v in (peercert or {}).get("subjectAltName", ())]
        return any(_same_name(a, s) for a in self.client_allowed_sans for s in sans)


@dataclass(frozen=True, slots=True)
class WebConfig:
    path: str
    tls: TlsServer | None = None
    users: tuple[tuple[str, str], ...] = ()  # (username, bcrypt hash), sorted by name
    headers: tuple[tuple[str, str], ...] = ()  # http_server_config.headers

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    def describe(self) -> str:
        """One line for `lvsmon check`."""
        parts = [self.scheme]
        if self.tls and self.tls.client_auth_type != "NoClientCert":
            parts.append(f"client certificates ({self.tls.client_auth_type})")
        if self.users:
            n = len(self.users)
            parts.append(f"basic auth ({n} user{'s' if n != 1 else ''})")
        return ", ".join(parts) + f" from {self.path}"


def _same_name(allowed: str, san: str) -> bool:
    if allowed == san:
        return True
    try:
        return ipaddress.ip_address(allowed) == ipaddress.ip_address(san.strip())
    except ValueError:
        return False
