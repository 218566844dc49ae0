"""Tenants and secrets: an app admin must not get the server's secrets, another app's secrets,
or a port scanner out of the channel settings of the admin API.

The reproduced attack: an app admin created a channel whose relay was their own SMTP server
and whose `password_env` named GATEWAY_SECRET_KEY; `POST /channels/{id}/test` then logged in
there with the server's key, and with it customer tokens of other apps could be forged. Here it
is replayed over the real HTTP API against an attacker's SMTP and IMAP server on loopback that
keep every credential they are sent.
"""

from __future__ import annotations

import logging
import os
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select, text

from channels.email import outbox
from channels.email.egress import CheckedSMTP, HostPolicy
from gateway.config import AppConfig, ConfigError, GatewayConfig, embedded_default, parse_config
from gateway.outbound import send_outbound
from gateway.runtime import Runtime
from tests.support.api_world import World, build_world
from tests.support.console import signed_in
from tests.support.http import loopback_config, running_http
from tests.support.imap_trap import ImapTrap
from tests.support.serve import clean_env
from tests.support.smtp_sink import SmtpSink
from tickets import services
from tickets.models import Channel, Outbox, OutboxState

SERVER_SECRET = "server-secret-key-0123456789-abcdefghij"
B_PASSWORD = "b-relay-password-of-app-b"


@dataclass
class Tenants:
    world: World
    relay_a: SmtpSink  # the relay the operator allows app A (demo)
    relay_b: SmtpSink  # the relay the operator allows app B (other)
    smtp_trap: SmtpSink  # the attacker's servers
    imap_trap: ImapTrap

    @property
    def runtime(self) -> Runtime:
        return self.world.http.runtime

    def allow(self, app: str, hosts: list[str]) -> None:
        """The operator edits `allowed_hosts` of an app (as after a config reload)."""
        config = self.runtime.config
        apps = [
            a.model_copy(update={"allowed_hosts": hosts}) if a.name == app else a
            for a in config.apps
        ]
        self.runtime.config = config.model_copy(update={"apps": apps})

    def leaked(self) -> list[tuple[str, str]]:
        return self.smtp_trap.logins + self.imap_trap.logins

    def assert_no_secret_left(self) -> None:
        every = repr(self.leaked()) + repr([m.raw for m in self.smtp_trap.messages])
        assert SERVER_SECRET not in every
        assert B_PASSWORD not in every


def _apps(a_hosts: list[str], b_hosts: list[str]) -> list[AppConfig]:
    demo = embedded_default().apps[0]
    return [
        # The operator grants app A the domain its admin's channels use (a.example).
        demo.model_copy(update={"allowed_hosts": a_hosts, "domains": [*demo.domains, "a.example"]}),
        AppConfig(name="other", brand="Other", allowed_hosts=b_hosts),
    ]


@pytest.fixture(autouse=True)
def server_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_SECRET_KEY", SERVER_SECRET)


@pytest.fixture
def tenants(tmp_path: Path, database_url: str) -> Iterator[Tenants]:
    relay_a = SmtpSink(record_logins=True).start()
    relay_b = SmtpSink(record_logins=True).start()
    smtp_trap = SmtpSink(record_logins=True).start()
    imap_trap = ImapTrap().start()
    config = loopback_config(tmp_path).model_copy(
        update={
            "database_url": database_url,
            "apps": _apps([f"127.0.0.1:{relay_a.port}"], [f"127.0.0.1:{relay_b.port}"]),
        }
    )
    runtime = Runtime.create(config)
    try:
        with running_http(runtime) as http:
            yield Tenants(build_world(http), relay_a, relay_b, smtp_trap, imap_trap)
    finally:
        runtime.close()
        for server in (relay_a, relay_b, smtp_trap, imap_trap):
            server.stop()


def _smtp(port: int, **more: Any) -> dict[str, Any]:
    return {"host": "127.0.0.1", "port": port, "starttls": False, "username": "x", **more}


def _imap(port: int, **more: Any) -> dict[str, Any]:
    return {"host": "127.0.0.1", "port": port, "ssl": False, "username": "x", **more}


def _add(c: httpx.Client, name: str, **sections: Any) -> httpx.Response:
    """An app admin adds the channel `name` (address name@a.example) with these sections."""
    body = {"name": name, "addresses": [f"{name}@a.example"], **sections}
    return c.post("/api/v1/admin/channels", json=body)


def _test(c: httpx.Client, channel_id: int) -> httpx.Response:
    return c.post(f"/api/v1/admin/channels/{channel_id}/test", json={"timeout": 1})


# --- secrets go in by value only -----------------------------------------------------------


@pytest.mark.parametrize("indirect", ["password_env", "password_file", "oauth2_token_env"])
def test_the_api_refuses_to_name_a_server_secret(tenants: Tenants, indirect: str) -> None:
    key_file = str(tenants.runtime.config.data_path / "secret_key")
    name = "GATEWAY_SECRET_KEY" if indirect.endswith("_env") else key_file
    trap = tenants.smtp_trap.port
    with tenants.world.http.client(tenants.world.admin_a) as c:
        for body in (
            {"smtp": _smtp(trap, **{indirect: name})},
            {"imap": _imap(tenants.imap_trap.port, **{indirect: name})},
        ):
            r = _add(c, "evil", **body)
            assert r.status_code == 422, r.text
            assert "operator's config file" in r.text and indirect in r.text
        cid = _add(c, "ok").json()["id"]
        r = c.patch(f"/api/v1/admin/channels/{cid}", json={"smtp": _smtp(trap, **{indirect: name})})
        assert r.status_code == 422 and "operator's config file" in r.text
        assert _test(c, cid).json()["ok"] is False
    assert tenants.leaked() == [] and tenants.smtp_trap.greeted == 0
    assert tenants.imap_trap.connections == 0


def test_a_stored_reference_to_a_server_secret_is_never_followed(tenants: Tenants) -> None:
    """A channel written by an older version (the API took password_env then): even on a host
    the operator allows, the server's variable is not read for an app admin's setting."""
    trap = tenants.smtp_trap.port
    tenants.allow("demo", [f"127.0.0.1:{trap}", f"127.0.0.1:{tenants.imap_trap.port}"])
    with tenants.world.http.client(tenants.world.admin_a) as c:
        cid = _add(c, "old").json()["id"]
        with tenants.runtime.unit_of_work() as s:
            channel = s.get(Channel, cid)
            assert channel is not None
            channel.settings = {
                **channel.settings,
                "smtp": _smtp(trap, password_env="GATEWAY_SECRET_KEY"),
                "imap": _imap(tenants.imap_trap.port, password_env="GATEWAY_SECRET_KEY"),
            }
        result = _test(c, cid).json()
    assert result["ok"] is False and result["message"] == "no password for x"
    tenants.assert_no_secret_left()


def test_an_operator_secret_stays_with_the_operators_setting(
    tenants: Tenants, tmp_path: Path
) -> None:
    """The operator (CLI on the server) may name an environment variable for a channel's IMAP
    password, on any host. An app admin who then rewrites that setting through the API gets a
    setting of their own: the operator's variable is not read for it any more."""
    trap = tenants.imap_trap
    config = tmp_path / "operator.toml"
    config.write_text(
        f'database_url = "{tenants.runtime.config.resolved_database_url}"\n'
        f'data_dir = "{tmp_path}"\n[[apps]]\nname = "demo"\nbrand = "Demo"\n'
        'domains = ["a.example"]\n'
        '[[apps.channels]]\nname = "support"\naddresses = ["support@localhost"]\n'
    )
    env = clean_env(GATEWAY_SECRET_KEY=SERVER_SECRET, OPS_IMAP_PASSWORD="operator-imap-pw")

    def gateway(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "gateway", "--config", str(config), *args]
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)

    added = gateway("channels", "add", "ops", "--address", "ops@a.example", "--imap-host",
                    "127.0.0.1", "--imap-port", str(trap.port), "--imap-no-ssl", "--imap-user",
                    "ops", "--imap-password-env", "OPS_IMAP_PASSWORD")  # fmt: skip
    assert added.returncode == 0, added.stderr
    gateway("channels", "test", "ops", "--timeout", "1")
    assert trap.logins == [("ops", "operator-imap-pw")]  # the operator's own choice
    tenants.allow("demo", [f"127.0.0.1:{trap.port}"])
    with tenants.world.http.client(tenants.world.admin_a) as a:
        (ops,) = [c for c in a.get("/api/v1/admin/channels").json() if c["name"] == "ops"]
        assert ops["imap"]["has_password"] is True
        r = a.patch(
            f"/api/v1/admin/channels/{ops['id']}", json={"imap": _imap(trap.port, username="ops")}
        )
        assert r.status_code == 200 and r.json()["imap"]["has_password"] is False
        result = _test(a, ops["id"]).json()
    assert result["message"] == "no password for ops"
    assert trap.logins == [("ops", "operator-imap-pw")]  # nothing more


def test_the_operator_allow_list_is_checked_when_the_config_is_read() -> None:
    for entry, says in (
        ("smtp example.com", "is not a host name"),
        ("smtp.example.com:99999", "port must be a number"),
        ("[::1", "is not a host name"),
    ):
        with pytest.raises(ConfigError, match=says) as caught:
            parse_config({"apps": [{"name": "a", "brand": "A", "allowed_hosts": [entry]}]})
        assert str(caught.value).startswith("apps.0.allowed_hosts")


# --- no secret to a host the operator did not allow ----------------------------------------


def test_a_channel_cannot_point_at_a_host_the_operator_did_not_allow(tenants: Tenants) -> None:
    w = tenants.world
    with w.http.client(w.admin_a) as a:
        for body in (
            {"smtp": _smtp(tenants.smtp_trap.port, password="p")},
            {"imap": _imap(tenants.imap_trap.port, password="p")},
            {"smtp": _smtp(tenants.relay_b.port, password="p")},  # app B's relay is B's
            {"smtp": {**_smtp(tenants.smtp_trap.port), "host": "localhost"}},
        ):
            r = _add(a, "x", **body)
            assert r.status_code == 400, r.text
            assert "not among the hosts the operator allows for this app" in r.json()["detail"]
        # The allowed relay works, and its password goes only there.
        made = _add(a, "mine", smtp=_smtp(tenants.relay_a.port, password="a-relay-password"))
        assert made.status_code == 201, made.text
        cid = made.json()["id"]
        moved = a.patch(
            f"/api/v1/admin/channels/{cid}", json={"smtp": _smtp(tenants.smtp_trap.port)}
        )
        assert moved.status_code == 400
    with w.http.client(w.agent_a) as agent, w.http.client(w.admin_a) as a:
        assert agent.post("/api/v1/admin/channels", json={}).status_code == 403  # admins only
        # App B's channel, with B's password, on B's allowed relay.
        with tenants.runtime.unit_of_work() as s:
            app_b = services.get_app(s, "other")
            from gateway import channel_admin

            channel_b = channel_admin.create_channel(
                s,
                app_b,
                "b-mail",
                ["help@b.example"],
                tenants.runtime.clock(),
                smtp=_smtp(tenants.relay_b.port, password=B_PASSWORD),
                box=tenants.runtime.secret_box,
                policy=tenants.runtime.config.host_policy("other"),
            )
            b_id = channel_b.id
        # A's admin can neither move B's channel to the trap nor test it.
        r = a.patch(f"/api/v1/admin/channels/{b_id}", json={"smtp": _smtp(tenants.smtp_trap.port)})
        assert r.status_code == 404
        assert _test(a, b_id).status_code == 404
    tenants.assert_no_secret_left()
    assert tenants.smtp_trap.greeted == 0 and tenants.imap_trap.connections == 0


def test_sending_and_the_check_stop_when_the_operator_withdraws_a_host(tenants: Tenants) -> None:
    rt = tenants.runtime
    w = tenants.world
    with w.http.client(w.admin_a) as a:
        made = _add(a, "mine", smtp=_smtp(tenants.relay_a.port, password="a-relay-password"))
        cid = made.json()["id"]
        assert _send(rt, cid) == OutboxState.SENT
        assert tenants.relay_a.logins == [("x", "a-relay-password")]
        tenants.allow("demo", [])  # the operator takes the relay away
        assert _send(rt, cid) == OutboxState.PENDING  # kept, retried, the reason on the row
        with rt.unit_of_work() as s:
            last = s.scalar(select(Outbox.last_error).order_by(Outbox.id.desc()))
        assert "operator allows no IMAP or SMTP hosts for this app" in str(last)
        result = _test(a, cid).json()
    assert result["ok"] is False
    assert "operator allows no IMAP or SMTP hosts" in result["message"]
    assert tenants.relay_a.greeted == 1  # the one mail sent while it was allowed


def _send(rt: Runtime, channel_id: int) -> OutboxState | None:
    with rt.unit_of_work() as s:
        row = outbox.queue_email(
            s,
            app_id=services.get_app(s, "demo").id,
            from_address="mine@a.example",
            from_name="Ana",
            to=["dana@example.com"],
            subject="Hello",
            text="Hello there",
            now=rt.clock(),
            channel_id=channel_id,
        )
        row_id = row.id
    return send_outbound(rt, row_id)


# --- no port scanner -----------------------------------------------------------------------


class _Listener:
    """A port that accepts and then either says nothing or hangs up at once."""

    def __init__(self, hang_up: bool) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = int(self.sock.getsockname()[1])
        self.held: list[socket.socket] = []
        self.hang_up = hang_up
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            if self.hang_up:
                conn.close()
            else:
                self.held.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


def test_the_channel_check_does_not_tell_which_ports_are_open(tenants: Tenants) -> None:
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    closed_port = int(closed.getsockname()[1])
    closed.close()
    silent, hangs_up = _Listener(hang_up=False), _Listener(hang_up=True)
    tenants.allow("demo", ["127.0.0.1"])  # the operator allows loopback, every port
    answers = []
    try:
        with tenants.world.http.client(tenants.world.admin_a) as a:
            for port in (closed_port, silent.port, hangs_up.port, tenants.imap_trap.port):
                for kind, section in (("smtp", _smtp(port)), ("imap", _imap(port))):
                    if port == tenants.imap_trap.port and kind == "imap":
                        continue  # a real IMAP server: that one does answer
                    cid = _add(a, f"{kind}{port}", **{kind: section}).json()["id"]
                    started = time.monotonic()
                    result = _test(a, cid)
                    took = time.monotonic() - started
                    step = result.json()["steps"][-1]
                    answers.append((step["detail"].replace(str(port), "PORT"), step["hint"], took))
    finally:
        silent.close()
        hangs_up.close()
    assert {(d, h) for d, h, _ in answers} == {
        ("could not connect to 127.0.0.1:PORT", answers[0][1])
    }, answers
    times = [t for _, _, t in answers]
    assert min(times) >= 0.9 and max(times) - min(times) < 0.6, times


def test_loopback_and_private_addresses_only_where_the_operator_allows_them(
    tenants: Tenants,
) -> None:
    w = tenants.world
    port = tenants.smtp_trap.port
    # The operator allows a host NAME: whatever it resolves to must be public.
    tenants.allow("demo", [f"localhost:{port}", "*.internal.example", "10.0.0.0/8:25"])
    with w.http.client(w.admin_a) as a:
        for host in (
            "127.0.0.1",
            "10.1.2.3",
            "169.254.169.254",
            "::1",
            "::ffff:127.0.0.1",
            "0.0.0.0",
        ):
            r = _add(a, "x", smtp={**_smtp(port), "host": host})
            assert r.status_code == 400, (host, r.text)
        cid = _add(a, "named", smtp={**_smtp(port, password="p"), "host": "localhost"}).json()["id"]
        result = _test(a, cid).json()
    assert result["ok"] is False
    assert "localhost resolves to a private or local address" in result["message"]
    assert tenants.smtp_trap.greeted == 0


def test_the_connection_goes_to_the_checked_address(monkeypatch: pytest.MonkeyPatch) -> None:
    """DNS rebinding: the name answers a public address to the check and a private one a
    moment later. The connection must use what was checked, never look the name up again.
    (The system resolver cannot be pointed at a test DNS server, so a hostile resolver is
    played by replacing getaddrinfo; the server connected to is a real one.)"""
    sink = SmtpSink(record_logins=True).start()
    answers = iter(["127.0.0.1", "10.9.9.9"])
    real = socket.getaddrinfo
    lookups: list[str] = []

    def hostile(host: str, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host != "rebind.example":
            return real(host, port, *args, **kwargs)
        address = next(answers, "10.9.9.9")
        lookups.append(address)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]

    monkeypatch.setattr(socket, "getaddrinfo", hostile)
    try:
        policy = HostPolicy.parse([f"127.0.0.1:{sink.port}"])
        client = CheckedSMTP(policy, "rebind.example", sink.port, timeout=5)
        client.ehlo()
        client.login("u", "pw")
        client.quit()
    finally:
        sink.stop()
    assert lookups == ["127.0.0.1"] and sink.logins == [("u", "pw")]


# --- encrypted at rest, rotation, never shown ----------------------------------------------


def _raw_settings(rt: Runtime, channel_id: int) -> str:
    with rt.engine.connect() as conn:
        value = conn.execute(
            text("SELECT settings FROM channels WHERE id = :id"), {"id": channel_id}
        ).scalar_one()
    return str(value)


def _data_bytes(rt: Runtime) -> bytes:
    return b"".join(p.read_bytes() for p in rt.config.data_path.glob("gw.db*") if p.is_file())


def test_passwords_are_stored_encrypted_and_never_shown(
    tenants: Tenants, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    rt, w = tenants.runtime, tenants.world
    password = "a-relay-password-zz9"
    seen = []
    with w.http.client(w.admin_a) as a:
        made = _add(a, "mine", smtp=_smtp(tenants.relay_a.port, password=password))
        cid = made.json()["id"]
        seen.append(made.text)
        seen.append(
            a.patch(f"/api/v1/admin/channels/{cid}", json={"addresses": ["m@a.example"]}).text
        )
        seen.append(a.get(f"/api/v1/admin/channels/{cid}").text)
        seen.append(a.get("/api/v1/admin/channels").text)
        seen.append(_test(a, cid).text)
    with signed_in(w.http, "alice@a.example") as page:
        seen.append(page.get("/admin/channels").text)
        seen.append(page.get(f"/admin/channels/{cid}").text)
    assert _send(rt, cid) == OutboxState.SENT
    assert ("x", password) in tenants.relay_a.logins  # it works
    assert '"has_password":true' in seen[0].replace(" ", "")
    for answer in seen:
        assert password not in answer and "sealed" not in answer
    assert password not in caplog.text
    assert password not in _raw_settings(rt, cid)
    if rt.engine.dialect.name == "sqlite":
        assert password.encode() not in _data_bytes(rt)


def _runtime(config: GatewayConfig) -> Runtime:
    return Runtime.create(config)


def test_key_rotation_keeps_stored_passwords_usable(
    tenants: Tenants, monkeypatch: pytest.MonkeyPatch
) -> None:
    w = tenants.world
    with w.http.client(w.admin_a) as a:
        made = _add(a, "mine", smtp=_smtp(tenants.relay_a.port, password="survives-rotation"))
        cid = made.json()["id"]
    before = _raw_settings(tenants.runtime, cid)
    # The operator rotates: a new key, the old one kept as a previous key.
    monkeypatch.setenv("GATEWAY_SECRET_KEY", "a-brand-new-secret-key-987654321-zyx")
    monkeypatch.setenv("GATEWAY_OLD_KEY", SERVER_SECRET)
    rotated = tenants.runtime.config.model_copy(
        update={"previous_secret_key_envs": ["GATEWAY_OLD_KEY"]}
    )
    rt = _runtime(rotated)
    try:
        assert _send(rt, cid) == OutboxState.SENT
        assert _raw_settings(rt, cid) != before  # resealed under the new key at start
    finally:
        rt.close()
    # Once resealed, the old key can be retired.
    monkeypatch.delenv("GATEWAY_OLD_KEY")
    rt = _runtime(rotated.model_copy(update={"previous_secret_key_envs": []}))
    try:
        assert _send(rt, cid) == OutboxState.SENT
    finally:
        rt.close()
    assert [p for _, p in tenants.relay_a.logins] == ["survives-rotation"] * 2


def test_cleartext_passwords_of_older_versions_are_encrypted_at_start(tenants: Tenants) -> None:
    w = tenants.world
    with w.http.client(w.admin_a) as a:
        cid = _add(a, "old", smtp=_smtp(tenants.relay_a.port)).json()["id"]
    with tenants.runtime.unit_of_work() as s:
        channel = s.get(Channel, cid)
        assert channel is not None
        channel.settings = {**channel.settings, "secrets": {"smtp": "cleartext-of-old"}}
    rt = _runtime(tenants.runtime.config)
    try:
        assert "cleartext-of-old" not in _raw_settings(rt, cid)
        assert _send(rt, cid) == OutboxState.SENT
    finally:
        rt.close()
    assert tenants.relay_a.logins == [("x", "cleartext-of-old")]


# --- operator and app admin ----------------------------------------------------------------

OPERATOR_KEYS = {
    "allowed_hosts", "listen", "public_url", "database_url", "broker_url", "data_dir",
    "secret_key_env", "secret_key_file", "previous_secret_key_envs", "outbound", "source",
}  # fmt: skip


def _properties(schema: Any, spec: dict[str, Any]) -> set[str]:
    if isinstance(schema, dict):
        if "$ref" in schema:
            name = schema["$ref"].rsplit("/", 1)[-1]
            return _properties(spec["components"]["schemas"][name], spec)
        found = set(schema.get("properties", {}))
        for value in schema.values():
            found |= _properties(value, spec)
        return found
    if isinstance(schema, list):
        return set().union(*(_properties(v, spec) for v in schema)) if schema else set()
    return set()


def test_no_app_admin_route_changes_what_spans_apps(tenants: Tenants) -> None:
    w = tenants.world
    with w.http.client() as anon:
        spec = anon.get("/openapi.json").json()
    writable = set()
    for ops in spec["paths"].values():
        for method, op in ops.items():
            if method in ("post", "put", "patch", "delete") and "requestBody" in op:
                writable |= _properties(op["requestBody"], spec)
    assert writable & OPERATOR_KEYS == set(), writable & OPERATOR_KEYS
    before = tenants.runtime.config.host_policy("demo")
    with w.http.client(w.admin_a) as a:
        for body in (
            {"name": "x", "addresses": ["x@a.example"], "allowed_hosts": ["0.0.0.0/0"]},
            {"name": "x", "addresses": ["x@a.example"], "source": "config"},
            {"name": "x", "addresses": ["x@a.example"],
             "smtp": {**_smtp(tenants.smtp_trap.port), "operator": True}},
        ):  # fmt: skip
            assert a.post("/api/v1/admin/channels", json=body).status_code == 422
    assert tenants.runtime.config.host_policy("demo") == before


# --- data files ----------------------------------------------------------------------------


def test_data_files_are_private_to_the_gateway(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GATEWAY_SECRET_KEY")  # the embedded default generates its key file
    data = tmp_path / "data"
    old = os.umask(0o022)  # the usual umask: files would be world-readable by default
    try:
        config = GatewayConfig(data_dir=str(data), apps=embedded_default().apps)
        rt = Runtime.create(config)
        try:
            config.secret_key()
            with rt.unit_of_work() as s:
                app = services.get_app(s, "demo")
                row = outbox.queue_email(
                    s, app_id=app.id, from_address="support@localhost", from_name="Ana",
                    to=["dana@example.com"], subject="Hi", text="Hi", now=rt.clock(),
                )  # fmt: skip
                row_id = row.id
            assert send_outbound(rt, row_id) == OutboxState.SENT
            # While it runs: the WAL and shared-memory files exist beside the database.
            files = [p for p in data.rglob("*") if p.is_file()]
            names = {p.name for p in files}
            assert {"gateway.db", "gateway.db-wal", "gateway.db-shm"} <= names, names
            assert {"gateway.db.writer-lock", "secret_key"} <= names, names
            assert any(n.endswith(".eml") for n in names), names
            for path in files:
                assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
            for path in [data, *(p for p in data.rglob("*") if p.is_dir())]:
                assert stat.S_IMODE(path.stat().st_mode) == 0o700, path
        finally:
            rt.close()
    finally:
        os.umask(old)
