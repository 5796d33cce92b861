"""Reading a running director's /status (`lvsmon status`, `save`, the demo): plain HTTP,
or HTTPS with a CA, a client certificate and basic auth when its web config asks for them.
"""

from __future__ import annotations

import base64
import json
import ssl
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from lvsmon.model.web import TlsServer
from lvsmon.status import DirectorView

PASSWORD_ENV = "LVSMON_METRICS_PASSWORD"


@dataclass(frozen=True, slots=True)
class StatusClient:
    base_url: str  # "http://127.0.0.1:9108" or "https://director.example:9108"
    context: ssl.SSLContext | None = None
    authorization: str | None = None  # an Authorization header value

    def get(self, path: str, timeout: float = 5.0) -> bytes:
        request = urllib.request.Request(self.base_url + path)
        if self.authorization:
            request.add_header("Authorization", self.authorization)
        with urllib.request.urlopen(request, timeout=timeout, context=self.context) as resp:
            return bytes(resp.read())

    def view(self, timeout: float = 5.0) -> DirectorView:
        return DirectorView.from_json(json.loads(self.get("/status", timeout)))


def fetch_view(address: str, timeout: float = 5.0) -> DirectorView:
    """The /status of a daemon at address:port over plain HTTP (the demo's)."""
    return StatusClient(f"http://{address}").view(timeout)


def basic_authorization(user: str, password: str) -> str:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return f"Basic {token}"


def tls_context(
    *,
    ca_file: str | None = None,
    insecure: bool = False,
    cert_file: str | None = None,
    key_file: str | None = None,
    server: TlsServer | None = None,
) -> ssl.SSLContext:
    """Verify the director with `ca_file` (or the system's CAs); `insecure` skips that
    (curl -k). With neither, on the director itself (`server`: its own TLS settings),
    trust exactly the certificate it serves: it may be issued to a name that is not
    the metrics_listen address we connect to, so the pin replaces the hostname check."""
    if insecure:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif ca_file is None and server is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.load_verify_locations(cadata=_first_pem(server.cert_file))
        context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN  # a leaf as its own anchor
    else:
        context = ssl.create_default_context(cafile=ca_file)
    if cert_file:
        context.load_cert_chain(cert_file, key_file or None)
    return context


def _first_pem(path: str) -> str:
    """The leaf alone: trusting the intermediates that may follow it in cert_file, with no
    hostname check, would accept any certificate they issued."""
    text = Path(path).read_text(encoding="ascii", errors="replace")
    end = "-----END CERTIFICATE-----"
    start = text.find("-----BEGIN CERTIFICATE-----")
    stop = text.find(end, start)
    if start < 0 or stop < 0:
        raise ssl.SSLError(f"no PEM certificate in {path}")
    return text[start : stop + len(end)] + "\n"
