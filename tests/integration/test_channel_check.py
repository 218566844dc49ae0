"""`gateway channels test` against a real Dovecot and an aiosmtpd relay with STARTTLS and AUTH.

The relay delivers what it accepts into Dovecot, so a passing check really sent a mail through
the relay and found it in the IMAP folder. Each broken setting gets its own plain message.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.api_tokens import issue_token
from gateway.config import load_config
from gateway.runtime import Runtime
from tests.support.certs import make_self_signed_cert
from tests.support.dovecot import Dovecot
from tests.support.http import free_port, loopback_config, running_http
from tests.support.relay import Relay
from tests.support.serve import clean_env
from tickets import services

USER = "support@example.test"
RELAY_USER = "gateway"
RELAY_PASSWORD = "relay-secret"


@dataclass
class Setup:
    tmp_path: Path
    dovecot: Dovecot
    relay: Relay
    ca_bundle: Path

    def config(self, **override: object) -> Path:
        imap = {
            "host": "127.0.0.1",
            "port": self.dovecot.port,
            "ssl": False,
            "starttls": True,
            "username": USER,
            "password_env": "TEST_IMAP_PASSWORD",
            "folder": "INBOX",
        }
        relay = {"host": "127.0.0.1", "port": self.relay.port, "starttls": True}
        imap.update({k[5:]: v for k, v in override.items() if k.startswith("imap_")})
        relay.update({k[6:]: v for k, v in override.items() if k.startswith("relay_")})
        path = self.tmp_path / "gateway.toml"
        path.write_text(
            f'database_url = "sqlite:///{self.tmp_path / "gw.db"}"\ndata_dir = "{self.tmp_path}"\n'
            f'[outbound]\ntransport = "smtp"\n{_toml(relay)}'
            f'username = "{RELAY_USER}"\npassword_env = "TEST_RELAY_PASSWORD"\n'
            '[[apps]]\nname = "demo"\nbrand = "Demo"\n'
            f'[[apps.channels]]\nname = "support"\naddresses = ["{USER}"]\n'
            f"[apps.channels.imap]\n{_toml(imap)}"
        )
        return path

    def gateway(
        self,
        config: Path,
        *args: str,
        imap_password: str = "secret",  # noqa: S107 - the throwaway Dovecot's test user
        relay_password: str = RELAY_PASSWORD,
        ca_bundle: str = "",
    ) -> subprocess.CompletedProcess[str]:
        env = clean_env(
            SSL_CERT_FILE=ca_bundle or str(self.ca_bundle),
            TEST_IMAP_PASSWORD=imap_password,
            TEST_RELAY_PASSWORD=relay_password,
        )
        return subprocess.run(
            [sys.executable, "-m", "gateway", "--config", str(config), *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )

    def check(self, config: Path, **kwargs: str) -> subprocess.CompletedProcess[str]:
        return self.gateway(config, "channels", "test", "support", "--timeout", "3", **kwargs)


def _toml(values: dict[str, object]) -> str:
    return "".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items())


def _setup(tmp_path: Path, dovecot: Dovecot, deliver: bool) -> Iterator[Setup]:
    cert = make_self_signed_cert(tmp_path / "relay-tls", name="relay")
    bundle = tmp_path / "ca.pem"
    bundle.write_text(dovecot.cert_path.read_text() + cert.cert_path.read_text())
    relay = Relay(
        cert,
        {RELAY_USER: RELAY_PASSWORD},
        deliver=(lambda rcpt, raw: dovecot.deliver(rcpt, raw)) if deliver else None,
    ).start()
    try:
        yield Setup(tmp_path, dovecot, relay, bundle)
    finally:
        relay.stop()


@pytest.fixture
def setup(tmp_path: Path, dovecot: Dovecot) -> Iterator[Setup]:
    yield from _setup(tmp_path, dovecot, deliver=True)


@pytest.fixture
def black_hole(tmp_path: Path, dovecot: Dovecot) -> Iterator[Setup]:
    """A relay that accepts mail and never delivers it."""
    yield from _setup(tmp_path, dovecot, deliver=False)


def test_a_working_channel_passes_and_is_verified(setup):
    config = setup.config()
    result = setup.check(config)
    assert result.returncode == 0, result.stdout + result.stderr
    for step in ("imap connect", "imap tls", "imap login", "imap folder", "smtp connect",
                 "smtp tls", "smtp auth", "round trip"):  # fmt: skip
        assert f"ok   {step}:" in result.stdout
    assert "channel support verified" in result.stdout
    listed = json.loads(setup.gateway(config, "channels", "list", "--json").stdout)
    assert listed[0]["verified_at"] is not None
    # The check mail went through the relay and was cleaned out of the mailbox afterwards.
    assert len(setup.relay.received) == 1
    with setup.dovecot.login(USER) as imap:
        imap.select_folder("INBOX")
        assert imap.search(["HEADER", "X-Gateway-Channel-Test", ""]) == []


def _fails(result: subprocess.CompletedProcess[str], message: str, hint: str) -> None:
    assert result.returncode == 1, result.stdout + result.stderr
    (line,) = result.stderr.strip().splitlines()  # one line, no traceback
    assert message in line, line
    assert f"Hint: {hint}" in line or hint in line, line


def test_wrong_imap_password(setup):
    result = setup.check(setup.config(), imap_password="wrong")
    _fails(
        result,
        f"refused the login of {USER}: wrong user name or password",
        "check the user name and password",
    )
    assert "FAIL imap login" in result.stdout


def test_wrong_relay_password(setup):
    result = setup.check(setup.config(), relay_password="wrong")
    _fails(
        result,
        f"the relay 127.0.0.1:{setup.relay.port} refused the login of {RELAY_USER}",
        "check the relay's user name and password",
    )


def test_wrong_port(setup):
    port = free_port()
    result = setup.check(setup.config(imap_port=port))
    _fails(
        result,
        f"127.0.0.1:{port} refused the connection: nothing listens on that port",
        "check the port",
    )


def test_tls_mismatch(setup):
    # Implicit TLS spoken to the plain IMAP port.
    result = setup.check(setup.config(imap_ssl=True, imap_starttls=False))
    _fails(result, "TLS mismatch with 127.0.0.1", "the port and the TLS setting do not match")


def test_untrusted_certificate(setup):
    # The relay's certificate is trusted, Dovecot's is not.
    relay_only = setup.tmp_path / "relay-only.pem"
    relay_only.write_text(setup.ca_bundle.read_text().split("-----END CERTIFICATE-----")[1]
                          + "-----END CERTIFICATE-----\n")  # fmt: skip
    result = setup.check(setup.config(), ca_bundle=str(relay_only))
    _fails(result, "the TLS certificate of 127.0.0.1", "a certificate valid for 127.0.0.1")


def test_wrong_folder(setup):
    result = setup.check(setup.config(imap_folder="Support/Missing"))
    _fails(result, "the folder 'Support/Missing' does not exist", "choose one of the account's")


def test_unknown_host(setup):
    result = setup.check(setup.config(imap_host="imap.no-such-host.invalid"))
    _fails(result, "cannot find the host imap.no-such-host.invalid", "check the spelling")


def test_mailbox_that_never_receives_the_round_trip(black_hole):
    config = black_hole.config()
    result = black_hole.check(config)
    _fails(
        result,
        f"a mail sent through the relay to {USER} did not come back within 3 seconds",
        "MX record or forwarding",
    )
    assert "ok   smtp auth:" in result.stdout
    assert len(black_hole.relay.received) == 1
    listed = json.loads(black_hole.gateway(config, "channels", "list", "--json").stdout)
    assert listed[0]["verified_at"] is None


def test_the_admin_api_checks_a_channel_and_convert_stops_warning(setup, monkeypatch):
    monkeypatch.setenv("SSL_CERT_FILE", str(setup.ca_bundle))
    monkeypatch.setenv("TEST_IMAP_PASSWORD", "secret")
    monkeypatch.setenv("TEST_RELAY_PASSWORD", RELAY_PASSWORD)
    runtime = Runtime.create(load_config(str(setup.config())))
    try:
        with runtime.unit_of_work() as s:
            app = services.get_app(s, "demo")
            admin = services.add_agent(
                s, app, "admin@example.test", "Ada", runtime.clock(), "admin"
            )
            token = issue_token(s, admin, "test", runtime.clock())[1]
            customer = services.customer_by_address(s, app, "dana@example.org", runtime.clock())
            conversation, _ = services.start_conversation(
                s, app, customer, "chat", "hello", runtime.clock()
            )
            conversation_id = conversation.id
        with running_http(runtime) as http, http.client(token) as c:
            (channel,) = c.get("/api/v1/admin/channels").json()
            result = c.post(f"/api/v1/admin/channels/{channel['id']}/test", json={"timeout": 10})
            assert result.status_code == 200
            assert result.json()["ok"] is True, result.json()
            assert [s["name"] for s in result.json()["steps"]][-1] == "round trip"
            shown = c.get(f"/api/v1/admin/channels/{channel['id']}").json()
            assert shown["verified_at"] is not None and shown["last_test"]["ok"] is True
            converted = c.post(f"/api/v1/conversations/{conversation_id}/convert", json={})
            assert converted.json()["warning"] is None, converted.json()["warning"]
            assert converted.json()["ticket"]["email_check"]["ok"] is True
    finally:
        runtime.close()


def test_a_channel_added_by_the_api_with_its_own_passwords_passes(setup, monkeypatch):
    monkeypatch.setenv("SSL_CERT_FILE", str(setup.ca_bundle))
    config = loopback_config(setup.tmp_path)  # outbound: files, no relay
    # The operator lets the app use this IMAP server and relay (loopback: only when listed),
    # and grants it the domain of the channel its admin adds.
    hosts = [f"127.0.0.1:{setup.dovecot.port}", f"127.0.0.1:{setup.relay.port}"]
    granted = {"allowed_hosts": hosts, "domains": ["localhost", "example.test"]}
    apps = [a.model_copy(update=granted) for a in config.apps]
    runtime = Runtime.create(config.model_copy(update={"apps": apps}))
    imap = {
        "host": "127.0.0.1",
        "port": setup.dovecot.port,
        "ssl": False,
        "starttls": True,
        "username": USER,
        "password": "secret",
    }
    smtp = {
        "host": "127.0.0.1",
        "port": setup.relay.port,
        "starttls": True,
        "username": RELAY_USER,
        "password": RELAY_PASSWORD,
    }
    try:
        with runtime.unit_of_work() as s:
            app = services.get_app(s, "demo")
            admin = services.add_agent(s, app, "ada@example.test", "Ada", runtime.clock(), "admin")
            token = issue_token(s, admin, "test", runtime.clock())[1]
        with running_http(runtime) as http, http.client(token) as c:
            body = {"name": "mailbox", "addresses": [USER], "imap": imap, "smtp": smtp}
            created = c.post("/api/v1/admin/channels", json=body).json()
            url = f"/api/v1/admin/channels/{created['id']}"
            assert c.post(f"{url}/test", json={"timeout": 10}).json()["ok"] is True
            wrong = c.patch(url, json={"imap": {**imap, "password": "wrong"}}).json()
            assert wrong["verified_at"] is None  # changed settings need a new check
            failed = c.post(f"{url}/test", json={"timeout": 10}).json()
            assert failed["ok"] is False
            assert "refused the login of support@example.test" in failed["message"]
            without = {k: v for k, v in imap.items() if k != "password"}
            c.patch(url, json={"imap": without})  # keeps the stored (wrong) password
            assert c.post(f"{url}/test", json={"timeout": 10}).json()["ok"] is False
            c.patch(url, json={"imap": imap})
            assert c.post(f"{url}/test", json={"timeout": 10}).json()["ok"] is True
            assert "secret" not in c.get(url).text
    finally:
        runtime.close()
