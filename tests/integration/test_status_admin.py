"""Admin actions on the status page, in a real browser, over TLS with basic auth: a
drain clicked in the page reaches the real data plane (new connections avoid the
server), a temporary weight and a reload work; without credentials or without the
CSRF token the daemon refuses, says why, logs and counts it. One daemon (TLS, a
bcrypt user, `admin = true`) and one browser for the module."""

from __future__ import annotations

import base64
import json
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import bcrypt
import pytest
import trustme
from selenium.webdriver.common.by import By

from lvsmon.status import DirectorView, render_table
from tests.browser import chromium, text_of, until
from tests.integration.harness import Backend, connect, wait_for
from tests.integration.test_metrics_tls import TlsDaemon
from tests.integration.test_status_page import Site, axe_violations, load, parts
from tests.ports import free_port

USER, PASSWORD = "prom", "correct horse"  # test_metrics_tls.TlsDaemon's credentials
AUTH = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()


@dataclass
class AdminSite(Site):
    context: ssl.SSLContext  # trusts the test's own CA

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.daemon.metrics_port}"

    def click(self, selector: str) -> None:
        # found and clicked in one script: a refresh may redraw the table at any moment
        self.browser.execute_script("document.querySelector(arguments[0]).click()", selector)

    def real_servers(self) -> dict[str, dict[str, Any]]:
        """From /status.json, as the page reads it."""
        doc = json.loads(self.daemon.get("/status.json"))
        return {r["real_server"]: r for r in doc["virtual_servers"][0]["real_servers"]}

    def message(self) -> str:
        return str(self.browser.find_element(By.ID, "admin-message").text)

    def post(self, body: dict[str, Any], headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
        request = urllib.request.Request(
            self.url + "/admin", json.dumps(body).encode(), headers, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=5, context=self.context) as resp:
                return resp.status, dict(json.loads(resp.read()))
        except urllib.error.HTTPError as exc:
            with exc:  # the error is the response: it holds the connection
                raw = exc.read()
            return exc.code, dict(json.loads(raw)) if raw.startswith(b"{") else {}


def rs(b: Backend) -> str:
    return f"127.0.0.1:{b.port}"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AdminSite]:
    tmp = tmp_path_factory.mktemp("status-admin")
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp / "ca.crt"))
    cert = ca.issue_cert("127.0.0.1")
    cert.cert_chain_pems[0].write_to_path(str(tmp / "server.crt"))
    cert.private_key_pem.write_to_path(str(tmp / "server.key"))
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(6)).decode()
    (tmp / "web.yml").write_text(
        f"tls_server_config:\n  cert_file: {tmp / 'server.crt'}\n"
        f"  key_file: {tmp / 'server.key'}\nbasic_auth_users:\n  {USER}: {hashed}\n"
    )
    context = ssl.create_default_context(cafile=str(tmp / "ca.crt"))
    backends = [Backend(n) for n in ("a", "b")]
    vip = free_port()
    body = (
        '[daemon.status_page]\nrefresh = "1s"\nsample_interval = "1s"\nadmin = true\n\n'
        f'[[virtual_server]]\nname = "web"\naddress = "127.0.0.1"\nport = {vip}\n'
        'scheduler = "rr"\n' + "".join(b.toml() for b in backends)
    )
    daemon = TlsDaemon(tmp, body, tmp / "web.yml", context)
    try:
        daemon.start()
        with chromium(1280, 900, insecure_tls=True) as browser:
            # basic auth on every request the page makes, as a browser sends it after login
            browser.execute_cdp_cmd("Network.enable", {})
            browser.execute_cdp_cmd(
                "Network.setExtraHTTPHeaders", {"headers": {"Authorization": AUTH}}
            )
            site = AdminSite(daemon, backends, vip, browser, tmp, context)
            load(site)
            yield site
    finally:
        daemon.kill()
        for b in backends:
            b.close()


def served_by(vip: int, n: int) -> set[str]:
    names = set()
    for _ in range(n):
        sock, name = connect(vip)
        sock.close()
        names.add(name)
    return names


def test_an_admin_drain_over_tls_with_auth_reaches_the_data_plane(site: AdminSite) -> None:
    a = site.backends[0]
    why = site.browser.find_element(By.ID, "admin-why").text
    assert why.startswith(f"Signed in as {USER}."), why
    assert served_by(site.vip, 4) == {"a", "b"}
    site.click(f'button[data-admin="drain"][data-rs="{rs(a)}"]')
    until(site.browser, lambda _: site.message().startswith("Done:"), 10, "the drain's answer")
    assert f"{rs(a)} in web: drained (weight 0) until restored" in site.message()
    until(site.browser, lambda _: site.cell(rs(a), "state") == "‖ drained", 10, "drained row")
    assert site.rows()[rs(a)]["parts"] == parts("1", "up", "-", "-", "op 0", "0")
    # programmed in the data plane, through the effective weight
    wait_for(lambda: site.real_servers()[rs(a)]["weight"] == 0, 5, "weight 0 programmed")
    assert served_by(site.vip, 6) == {"b"}  # the real proxy sends nothing new to a drained server
    table = render_table(DirectorView.from_json(site.daemon.status()))
    assert f"{rs(a)}" in table and "0 (operator 0)" in table  # `lvsmon status` says so too
    assert site.daemon.sample("lvsmon_admin_actions_total", action="drain") == 1
    log = site.daemon.log()
    assert 'msg="admin action"' in log and f"user={USER}" in log and "action=drain" in log
    site.click(f'button[data-admin="restore"][data-rs="{rs(a)}"]')
    until(site.browser, lambda _: site.cell(rs(a), "state") == "● up", 10, "restored row")
    wait_for(lambda: site.real_servers()[rs(a)]["weight"] == 1, 5, "weight 1 programmed")
    wait_for(lambda: served_by(site.vip, 4) == {"a", "b"}, 10, "a to serve again")


def test_without_credentials_or_csrf_token_an_action_is_refused(site: AdminSite) -> None:
    a = site.backends[0]
    drain = {"action": "drain", "virtual_server": "web", "real_server": rs(a)}
    status, _ = site.post(drain, {"Content-Type": "application/json"})
    assert status == 401  # the listener's basic auth, before the page is asked
    status, answer = site.post(drain, {"Authorization": AUTH})
    assert status == 403 and answer["reason"] == "csrf", answer
    assert "CSRF token is missing" in answer["message"]
    forged = {"Authorization": AUTH, "Cookie": "lvsmon_csrf=a.b", "X-CSRF-Token": "a.b"}
    status, answer = site.post(drain, forged)
    assert status == 403 and "not issued to user" in answer["message"], answer
    refused = site.daemon.sample(
        "lvsmon_admin_actions_refused_total", action="drain", reason="csrf"
    )
    assert refused == 2
    assert "admin action refused" in site.daemon.log()
    real = site.real_servers()
    assert real[rs(a)]["weight"] == 1 and real[rs(a)]["state"] == "up"


def test_the_admin_controls_have_no_serious_accessibility_violations(site: AdminSite) -> None:
    violations = axe_violations(site.browser)
    serious = [(v["id"], v["help"]) for v in violations if v["impact"] in ("serious", "critical")]
    assert not serious, serious
    assert site.browser.find_element(By.ID, "admin-form").is_displayed()


def test_a_refused_action_is_explained_in_the_page(site: AdminSite) -> None:
    site.click('button[data-admin="pick"]')
    site.browser.find_element(By.ID, "admin-rs").clear()
    site.browser.find_element(By.ID, "admin-rs").send_keys("127.0.0.1:1")
    site.browser.find_element(By.CSS_SELECTOR, 'button[data-admin="weight"]').click()
    until(site.browser, lambda _: site.message().startswith("Refused"), 10, "the refusal")
    assert site.message() == (
        "Refused (unknown_target): virtual server web has no configured real server 127.0.0.1:1"
    )
    cls = site.browser.find_element(By.ID, "admin-message").get_attribute("class")
    assert "refused" in str(cls)


def test_a_temporary_weight_and_a_reload_from_the_page(site: AdminSite) -> None:
    b = site.backends[1]
    site.click(f'button[data-admin="pick"][data-rs="{rs(b)}"]')
    weight = site.browser.find_element(By.ID, "admin-weight")
    weight.clear()
    weight.send_keys("5")
    site.browser.find_element(By.CSS_SELECTOR, 'button[data-admin="weight"]').click()
    until(site.browser, lambda _: site.cell(rs(b), "weight") == "5", 10, "weight 5 in the page")
    assert site.rows()[rs(b)]["parts"] == parts("1", "up", "-", "-", "op 5", "5")
    doc = json.loads(site.daemon.get("/status.json"))
    override = next(
        r for r in doc["virtual_servers"][0]["real_servers"] if r["real_server"] == rs(b)
    )
    assert override["admin"]["action"] == "weight" and override["admin"]["by"] == USER
    assert 50 < override["admin"]["until"] - override["admin"]["at"] <= 600
    site.click('button[data-admin="reload"]')

    def reloaded(_: Any) -> bool:
        text = site.browser.find_element(By.ID, "reloads").text
        return f"admin ({USER})" in text

    until(site.browser, reloaded, 15, "the reload in the page's history")
    first = text_of(site.browser, "#reloads-table tbody tr")
    assert "✔ ok" in first and f"admin ({USER})" in first
    assert site.rows()[rs(b)]["weight"] == "5"  # a reload keeps a configured server's weight
    assert site.daemon.sample("lvsmon_admin_actions_total", action="reload") == 1
