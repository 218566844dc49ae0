"""Address squatting between apps of one installation, replayed against the running gateway.

Two apps with their own admins: `demo` (app A, granted localhost and a.example) and `other`
(app B, granted b.example, with the channel support@b.example). A's admin tries to take B's
address and domain through the admin API and the CLI, and to receive or send mail on domains A
has not proven; the gateway's own SMTP server (smtplib over loopback), its HTTP API over a real
socket and a real DNS server (for the TXT proof) answer. Runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import smtplib
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from gateway.config import load_config
from gateway.server import Services, start
from tests.support.api_world import World, build_world
from tests.support.dns_server import TxtServer
from tests.support.http import RunningHttp, free_port
from tests.support.serve import clean_env
from tests.support.waiting import wait_for
from tickets import domains, services
from tickets.errors import NotAllowed
from tickets.models import Channel, ChannelAddress, InboundMail, Outbox, OutboxState

REFRESH = 0.2  # [smtp] routes_refresh_seconds of these tests
UNKNOWN = "5.1.1 No such mailbox here"  # the answer to RCPT for an address no channel has


@dataclass
class Installation:
    services: Services
    world: World
    dns: TxtServer
    config: Path
    smtp_port: int

    def gateway(self, *args: str) -> subprocess.CompletedProcess[str]:
        """The `gateway` command, as the operator runs it on the server."""
        return subprocess.run(
            [sys.executable, "-m", "gateway", "--config", str(self.config), *args],
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )

    def rcpt(self, address: str) -> tuple[int, str]:
        with smtplib.SMTP("127.0.0.1", self.smtp_port, timeout=10) as client:
            client.ehlo()
            client.mail("mallory@outside.example")
            code, text = client.rcpt(address)
            return code, text.decode()

    def send(self, to: str, subject: str) -> None:
        message = EmailMessage()
        message["From"] = "Carol <carol@customer.example>"
        message["To"] = to
        message["Subject"] = subject
        message.set_content("Please send me the invoice.")
        with smtplib.SMTP("127.0.0.1", self.smtp_port, timeout=10) as client:
            client.send_message(message)


def _toml(tmp_path: Path, database_url: str, dns_port: int) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(
        f'database_url = "{database_url}"\n'
        f'data_dir = "{tmp_path}"\n'
        f'dns_resolver = "127.0.0.1:{dns_port}"\n'
        "sweep_seconds = 0.2\n"
        "worker_threads = 2\n"
        f'[smtp]\nlisten = "127.0.0.1:{free_port()}"\nroutes_refresh_seconds = {REFRESH}\n'
        '[http]\nlisten = "127.0.0.1:0"\n'
        "[delivery]\nemail_grace_seconds = 0\nwidget_online_seconds = 0\n"
        f'[outbound]\ntransport = "file"\nfile_dir = "{tmp_path / "sent"}"\n'
        '[[apps]]\nname = "demo"\nbrand = "Demo"\ndomains = ["localhost", "a.example"]\n'
        '[[apps.channels]]\nname = "support"\naddresses = ["support@localhost"]\n'
        '[[apps]]\nname = "other"\nbrand = "Other"\ndomains = ["b.example"]\n'
        '[[apps.channels]]\nname = "support"\naddresses = ["support@b.example"]\n'
    )
    return path


@pytest.fixture
def installation(tmp_path: Path, database_url: str) -> Iterator[Installation]:
    dns = TxtServer({}).start()
    path = _toml(tmp_path, database_url, dns.port)
    config = load_config(path)
    running = start(config, "all")
    try:
        url = next(line for line in running.listening if line.startswith("http: "))[6:]
        world = build_world(RunningHttp(running.runtime, url))
        port = int(config.smtp.listen.rpartition(":")[2])
        yield Installation(running, world, dns, path, port)
    finally:
        running.stop()
        dns.stop()


def _app_id(gw: Installation, name: str) -> int:
    with gw.services.runtime.unit_of_work() as s:
        return services.get_app(s, name).id


# --- one address, one app ------------------------------------------------------------------


def test_an_admin_cannot_take_the_address_or_domain_of_another_app(installation):
    gw, world = installation, installation.world
    with world.http.client(world.admin_a) as a:
        taken = a.post(
            "/api/v1/admin/channels", json={"name": "billing", "addresses": ["support@b.example"]}
        )
        assert taken.status_code == 409
        # On another app's domain an address B uses and one it does not get the same answer:
        # A's admin cannot list B's addresses by asking for them.
        assert taken.json()["detail"] == (
            "support@b.example: the domain b.example is not available to this app"
        )
        squat = a.post(
            "/api/v1/admin/channels", json={"name": "billing", "addresses": ["billing@b.example"]}
        )
        assert squat.status_code == 409
        assert "not available to this app" in squat.json()["detail"]
        created = a.post(
            "/api/v1/admin/channels", json={"name": "sales", "addresses": ["sales@a.example"]}
        )
        assert created.status_code == 201 and created.json()["unproven_addresses"] == []
        url = f"/api/v1/admin/channels/{created.json()['id']}"
        for address in ("Support@B.example", "billing@b.example"):
            patched = a.patch(url, json={"addresses": ["sales@a.example", address]})
            assert patched.status_code == 409
        # Another channel of the same app cannot have it twice either.
        twice = a.post(
            "/api/v1/admin/channels", json={"name": "x", "addresses": ["sales@a.example"]}
        )
        assert twice.status_code == 409
        for refused in (taken, squat, twice):
            assert "other" not in refused.text.lower()  # whose it is stays private
    # The operator's CLI is held to the same rule (its app is --app).
    cli = gw.gateway(
        "--app", "demo", "channels", "add", "billing", "--address", "billing@b.example"
    )
    assert cli.returncode != 0 and "Traceback" not in cli.stderr
    assert cli.stderr.strip().splitlines() == [
        "gateway: billing@b.example: the domain b.example is not available to this app"
    ]
    # B's mail still goes to B, and nothing of A's attempt answers for B's domain.
    time.sleep(3 * REFRESH)
    assert gw.rcpt("billing@b.example")[0] == 550
    gw.send("support@b.example", "Invoice for B")
    b_id = _app_id(gw, "other")

    def stored() -> list[InboundMail]:
        with gw.services.runtime.unit_of_work() as s:
            return list(s.scalars(select(InboundMail)))

    rows = wait_for(stored)
    assert [r.app_id for r in rows] == [b_id]


def test_two_concurrent_requests_for_one_address_have_one_winner(installation):
    world = installation.world
    answers: list[int] = []

    def claim(i: int) -> None:
        with world.http.client(world.admin_a) as a:
            r = a.post(
                "/api/v1/admin/channels", json={"name": f"c{i}", "addresses": ["race@a.example"]}
            )
            answers.append(r.status_code)

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(answers) == [201] + [409] * 7


# --- a domain is used only once it is proven --------------------------------------------------


def test_mail_to_an_unproven_domain_is_refused_until_the_dns_proof(installation):
    gw, world = installation, installation.world
    with world.http.client(world.admin_a) as a:
        created = a.post(
            "/api/v1/admin/channels", json={"name": "shop", "addresses": ["sales@shop.example"]}
        ).json()
        assert created["unproven_addresses"] == ["sales@shop.example"]
        test = a.post(f"/api/v1/admin/channels/{created['id']}/test", json={"timeout": 1}).json()
        assert test["ok"] is False and test["steps"][-1]["name"] == "domain"
        assert "shop.example is not proven" in test["message"]
        assert "_gateway-challenge.shop.example" in test["hint"]
        # Once the SMTP server has reloaded its addresses, it knows this one and refuses it.
        code, text = wait_for(lambda: (r := gw.rcpt("sales@shop.example"))[1] != UNKNOWN and r)
        assert code == 550 and "not verified" in text

        # An admin can start a proof, which by itself proves nothing.
        started = a.post("/api/v1/admin/domains", json={"domain": "Shop.Example."})
        assert started.status_code == 201
        record = started.json()["record"]
        assert record["name"] == "_gateway-challenge.shop.example"
        assert record["value"].startswith("gateway-verify=")
        early = a.post("/api/v1/admin/domains/shop.example/verify").json()
        assert early["state"] == "pending" and "no TXT record" in early["last_check"]
        gw.dns.records[record["name"] + "."] = b"gateway-verify=someone-elses-token"
        wrong = a.post("/api/v1/admin/domains/shop.example/verify").json()
        assert wrong["state"] == "pending"
        time.sleep(3 * REFRESH)
        assert gw.rcpt("sales@shop.example")[0] == 550

        gw.dns.records[record["name"] + "."] = record["value"].encode()
        proven = a.post("/api/v1/admin/domains/shop.example/verify").json()
        assert proven["state"] == "proven" and proven["proof"] == "dns"
        listed = a.get("/api/v1/admin/domains").json()
        assert {d["domain"]: d["state"] for d in listed} == {
            "a.example": "proven",
            "localhost": "proven",
            "shop.example": "proven",
        }
    wait_for(lambda: gw.rcpt("sales@shop.example")[0] == 250)
    gw.send("sales@shop.example", "Order 66")
    a_id = _app_id(gw, "demo")

    def stored() -> list[InboundMail]:
        with gw.services.runtime.unit_of_work() as s:
            return list(s.scalars(select(InboundMail)))

    assert [r.app_id for r in wait_for(stored)] == [a_id]
    # The domain is A's now: B's admin can neither claim it nor put an address on it.
    with world.http.client(world.agent_b) as b:
        claim = b.post("/api/v1/admin/domains", json={"domain": "shop.example"})
        assert claim.status_code == 409 and "not available" in claim.json()["detail"]
        squat = b.post(
            "/api/v1/admin/channels", json={"name": "s", "addresses": ["info@shop.example"]}
        )
        assert squat.status_code == 409


def test_only_the_operator_grants_and_never_a_domain_another_app_holds(installation):
    gw, world = installation, installation.world
    with world.http.client(world.admin_a) as a:
        # An app admin cannot claim B's granted domain, even as a pending proof.
        claim = a.post("/api/v1/admin/domains", json={"domain": "b.example"})
        assert claim.status_code == 409 and "other" not in claim.text.lower()
        # Nor grant: there is no such route for an app admin.
        assert a.post("/api/v1/admin/domains/shop.example/grant").status_code in (404, 405)
    refused = gw.gateway("--app", "demo", "domains", "grant", "b.example")
    assert refused.returncode != 0 and len(refused.stderr.strip().splitlines()) == 1
    assert "b.example is proven for app other" in refused.stderr
    granted = gw.gateway("--app", "demo", "domains", "grant", "shop.example")
    assert granted.returncode == 0, granted.stderr
    listed = gw.gateway("--app", "demo", "domains", "list", "--json")
    assert '"shop.example"' in listed.stdout


def test_a_domain_granted_to_two_apps_is_a_config_error(tmp_path):
    path = tmp_path / "gateway.toml"
    path.write_text(
        '[[apps]]\nname = "a"\nbrand = "A"\ndomains = ["shared.example"]\n'
        '[[apps]]\nname = "b"\nbrand = "B"\ndomains = ["Shared.Example"]\n'
    )
    proc = subprocess.run(
        [sys.executable, "-m", "gateway", "--config", str(path), "config", "check"],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"gateway: config: {path}: domain shared.example is granted to two apps (a, b)"
    ]


# --- a squatted address (made before this rule) receives and sends nothing --------------------


def _squat(gw: Installation, address: str) -> int:
    """App A's channel with an address on B's domain, written straight into the database as an
    installation from before the rule may hold it."""
    runtime = gw.services.runtime
    with runtime.unit_of_work() as s:
        app = services.get_app(s, "demo")
        channel = Channel(app_id=app.id, name="squat", created_at=runtime.clock())
        channel.settings = {"source": "api"}
        channel.addresses.append(ChannelAddress(address=address))
        s.add(channel)
        s.flush()
        return channel.id


def test_an_outbox_email_from_an_unproven_domain_is_held_not_sent(installation, tmp_path):
    gw, world = installation, installation.world
    _squat(gw, "billing@b.example")
    code, text = wait_for(lambda: (r := gw.rcpt("billing@b.example"))[1] != UNKNOWN and r)
    assert code == 550 and "not verified" in text
    with world.http.client(world.admin_a) as a:
        support = next(c for c in a.get("/api/v1/admin/channels").json() if c["name"] == "support")
        a.post(f"/api/v1/admin/channels/{support['id']}/disable")  # the squat is all A has
    with world.http.client(world.agent_a) as c:
        converted = c.post(f"/api/v1/conversations/{world.conv_a}/convert", json={}).json()
        check = converted["ticket"]["email_check"]
        assert check["ok"] is False and "not proven" in check["reason"]
        assert c.post(
            f"/api/v1/conversations/{world.conv_a}/replies", json={"text": "Your invoice"}
        ).status_code in (200, 201)

    def held() -> list[Outbox]:
        with gw.services.runtime.unit_of_work() as s:
            rows = s.scalars(select(Outbox).where(Outbox.mail_from == "billing@b.example"))
            return [r for r in rows if r.state == OutboxState.HELD and r.kind == "customer"]

    [row] = wait_for(held)
    assert row.last_error is not None and "b.example is not proven" in row.last_error
    time.sleep(1)
    with gw.services.runtime.unit_of_work() as s:
        states = set(s.scalars(select(Outbox.state).where(Outbox.mail_from == "billing@b.example")))
    assert states == {OutboxState.HELD}  # notifications from it are held too
    sent = [p.read_bytes() for p in (tmp_path / "sent").glob("*.eml")]
    assert not [raw for raw in sent if b"billing@b.example" in raw]


# --- the database decides a race ---------------------------------------------------------------


def test_the_database_holds_one_app_per_proven_domain_and_address(session, now):
    a = services.ensure_app(session, "a", "A", now)
    b = services.ensure_app(session, "b", "B", now)
    pending_a = domains.start_proof(session, a, "race.example", now)
    pending_b = domains.start_proof(session, b, "race.example", now)  # both may try
    pending_a.proof, pending_a.proven_at = domains.DNS, now
    session.flush()
    with pytest.raises(IntegrityError), session.begin_nested():
        pending_b.proof, pending_b.proven_at = domains.DNS, now  # as a concurrent check would
        session.flush()
    with pytest.raises(NotAllowed):  # the service answers 409 rather than a 500
        domains.record_check(session, pending_b, True, "found", now)
    for app in (a, b):
        channel = Channel(app_id=app.id, name="c", created_at=now, settings={"source": "api"})
        session.add(channel)
        session.flush()
        if app is b:
            with pytest.raises(IntegrityError), session.begin_nested():
                session.add(ChannelAddress(channel_id=channel.id, address="same@race.example"))
                session.flush()
        else:
            session.add(ChannelAddress(channel_id=channel.id, address="same@race.example"))
            session.flush()
