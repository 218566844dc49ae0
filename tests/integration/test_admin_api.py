"""The admin API over the running server: roles, agents, tokens, channels, SLA; secrets stay in."""

from __future__ import annotations

import pytest

from gateway.api_tokens import token_digest
from tests.support.certs import make_rsa_key
from tests.support.console import signed_in
from tickets import domains, services
from tickets.models import ApiToken, Channel


def test_agents_cannot_use_the_admin_api(world):
    with world.http.client(world.agent_a) as c:
        r = c.get("/api/v1/admin/agents")
        assert r.status_code == 403
        assert r.json()["detail"] == "this needs the admin role"
        assert c.post("/api/v1/admin/channels", json={}).status_code in (403, 422)


def test_create_agent_set_role_and_addresses(world):
    with world.http.client(world.admin_a) as c:
        r = c.post("/api/v1/admin/agents", json={"email": "Cy@A.example", "name": "Cy"})
        assert r.status_code == 201, r.text
        cy = r.json()
        assert cy["email"] == "cy@a.example" and cy["role"] == "agent"
        dup = c.post("/api/v1/admin/agents", json={"email": "cy@a.example", "name": "Cy"})
        assert dup.status_code == 400 and "exists already" in dup.json()["detail"]
        bad = c.post("/api/v1/admin/agents", json={"email": "not an address", "name": "X"})
        assert bad.status_code == 400 and "not a valid email address" in bad.json()["detail"]
        promoted = c.put(f"/api/v1/admin/agents/{cy['id']}/role", json={"role": "admin"})
        assert promoted.json()["role"] == "admin"
        added = c.post(
            f"/api/v1/admin/agents/{cy['id']}/addresses",
            json={"address": "cy@home.example", "verified": False},
        ).json()
        assert {"address": "cy@home.example", "verified": False} in added["addresses"]
        taken = c.post(
            f"/api/v1/admin/agents/{cy['id']}/addresses", json={"address": "bob@a.example"}
        )
        assert taken.status_code == 400
        removed = c.delete(f"/api/v1/admin/agents/{cy['id']}/addresses/cy@home.example").json()
        assert [a["address"] for a in removed["addresses"]] == ["cy@a.example"]
        emails = [a["email"] for a in c.get("/api/v1/admin/agents").json()]
        assert emails == ["alice@a.example", "bob@a.example", "cy@a.example"]


def test_an_admin_cannot_change_their_own_role(world):
    with world.http.client(world.admin_a) as c:
        me = c.get("/api/v1/me").json()
        r = c.put(f"/api/v1/admin/agents/{me['id']}/role", json={"role": "agent"})
        assert r.status_code == 409 and "your own role" in r.json()["detail"]
        assert c.get("/api/v1/me").json()["role"] == "admin"


def test_tokens_are_shown_once_stored_hashed_and_revocable(world):
    with world.http.client(world.admin_a) as c:
        bob = next(a for a in c.get("/api/v1/admin/agents").json() if a["role"] == "agent")
        created = c.post(f"/api/v1/admin/agents/{bob['id']}/tokens", json={"label": "cli"})
        assert created.status_code == 201
        secret = created.json()["token"]
        listed = c.get(f"/api/v1/admin/agents/{bob['id']}/tokens").json()
        assert "cli" in [t["label"] for t in listed]
        assert secret not in str(listed) and all("token" not in t for t in listed)
    with world.http.runtime.unit_of_work() as s:
        stored = s.query(ApiToken).filter_by(id=created.json()["id"]).one()
        assert stored.token_hash == token_digest(secret) and secret not in stored.token_hash
    with world.http.client(secret) as bob_client:
        assert bob_client.get("/api/v1/me").json()["email"] == "bob@a.example"
        with world.http.client(world.admin_a) as c:
            url = f"/api/v1/admin/agents/{bob['id']}/tokens/{created.json()['id']}"
            assert c.delete(url).status_code == 204
        assert bob_client.get("/api/v1/me").status_code == 401


CHANNEL = {
    "name": "sales",
    "addresses": ["sales@a.example"],
    "imap": {
        "host": "imap.a.example",
        "port": 993,
        "username": "sales@a.example",
        "password": "imap-secret-123",
    },
    "smtp": {"host": "smtp.a.example", "username": "sales", "password": "smtp-secret-456"},
}


def _allow(world, *hosts):
    """The operator lets app A (demo) use these IMAP/SMTP hosts (`allowed_hosts`)."""
    runtime = world.http.runtime
    apps = [a.model_copy(update={"allowed_hosts": list(hosts)}) for a in runtime.config.apps]
    runtime.config = runtime.config.model_copy(update={"apps": apps})


def test_channel_create_update_disable_and_passwords_are_write_only(world):
    _allow(world, "imap.a.example", "smtp.a.example")
    with world.http.client(world.admin_a) as c:
        r = c.post("/api/v1/admin/channels", json=CHANNEL)
        assert r.status_code == 201, r.text
        channel = r.json()
        assert channel["imap"]["has_password"] and channel["smtp"]["has_password"]
        assert channel["verified_at"] is None and channel["source"] == "api"
        cid = channel["id"]
        patched = c.patch(
            f"/api/v1/admin/channels/{cid}",
            json={"addresses": ["sales@a.example", "deals@a.example"], "clear": ["smtp"]},
        ).json()
        assert patched["addresses"] == ["sales@a.example", "deals@a.example"]
        assert patched["smtp"] is None and patched["imap"]["has_password"]
        disabled = c.post(f"/api/v1/admin/channels/{cid}/disable").json()
        assert disabled["enabled"] is False
        assert c.post(f"/api/v1/admin/channels/{cid}/enable").json()["enabled"] is True
        every_answer = str(c.get("/api/v1/admin/channels").json()) + str(
            c.get(f"/api/v1/admin/channels/{cid}").json()
        )
        assert "imap-secret-123" not in every_answer and "smtp-secret-456" not in every_answer
        spec = c.get("/openapi.json").text
        assert "has_password" in spec
    with world.http.runtime.unit_of_work() as s:
        row = s.get(Channel, cid)
        assert row is not None and "imap-secret-123" not in str(row.settings)  # sealed
        assert world.http.runtime.secret_box.open(row.settings["secrets"]["imap"]) == (
            "imap-secret-123"
        )


def test_channel_addresses_must_be_unique_and_config_channels_read_only(world):
    with world.http.client(world.admin_a) as c:
        taken = c.post(
            "/api/v1/admin/channels", json={"name": "x", "addresses": ["support@localhost"]}
        )
        assert taken.status_code == 409
        assert taken.json()["detail"] == "support@localhost is already in use"
        plus = c.post("/api/v1/admin/channels", json={"name": "x", "addresses": ["a+b@a.example"]})
        assert plus.status_code == 400
        config_channel = c.get("/api/v1/admin/channels").json()[0]
        assert config_channel["source"] == "config"
        r = c.patch(
            f"/api/v1/admin/channels/{config_channel['id']}", json={"addresses": ["z@a.example"]}
        )
        assert r.status_code == 409 and "config file" in r.json()["detail"]


def test_channel_test_without_a_relay_says_so(world):
    with world.http.client(world.admin_a) as c:
        cid = c.get("/api/v1/admin/channels").json()[0]["id"]
        r = c.post(f"/api/v1/admin/channels/{cid}/test", json={"timeout": 1})
        assert r.status_code == 200
        result = r.json()
        assert result["ok"] is False
        # Mail is written to files (the embedded default): the test goes through the gateway's
        # own SMTP server, which this HTTP-only test does not run.
        assert result["steps"][0]["name"] == "outbound"
        assert "refused the connection" in result["message"]
        assert "start `gateway serve`" in result["hint"] and 'transport = "smtp"' in result["hint"]
        shown = c.get(f"/api/v1/admin/channels/{cid}").json()
        assert shown["last_test"]["message"] == result["message"]


def test_sla_policies_and_calendars(world):
    with world.http.client(world.admin_a) as c:
        policies = c.get("/api/v1/admin/sla/policies").json()
        assert policies[0]["name"] == "default" and policies[0]["first_response"] == "1h"
        assert c.get("/api/v1/admin/sla/calendars").json() == []


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/channels/{channel}"),
        ("PATCH", "/channels/{channel}"),
        ("POST", "/channels/{channel}/disable"),
        ("POST", "/channels/{channel}/test"),
        ("PUT", "/agents/{agent}/role"),
        ("POST", "/agents/{agent}/addresses"),
        ("GET", "/agents/{agent}/tokens"),
        ("POST", "/agents/{agent}/tokens"),
    ],
)
def test_an_admin_of_app_b_reaches_nothing_of_app_a(world, method, path):
    with world.http.client(world.admin_a) as a:
        channel = a.get("/api/v1/admin/channels").json()[0]["id"]
        agent = a.get("/api/v1/admin/agents").json()[0]["id"]
    bodies = {
        "PATCH": {"addresses": ["x@b.example"]},
        "PUT": {"role": "agent"},
        "POST": {"address": "x@b.example"} if "addresses" in path else {},
    }
    with world.http.client(world.agent_b) as b:  # eve is an admin of app B
        url = "/api/v1/admin" + path.format(channel=channel, agent=agent)
        r = b.request(method, url, json=bodies.get(method))
        assert r.status_code == 404, r.text
        assert b.get("/api/v1/admin/channels").json() == []
        assert [x["email"] for x in b.get("/api/v1/admin/agents").json()] == ["eve@b.example"]


def test_setup_page_shows_the_steps_and_the_callers_channels(world):
    """The old setup path leads to the console's channel pages (tests/console/test_admin.py)."""
    runtime = world.http.runtime
    with runtime.unit_of_work() as s:  # the operator lets app A use the domain
        domains.grant(s, services.get_app(s, "demo"), "shop.example", runtime.clock())
    with world.http.client(world.admin_a) as c:
        created = c.post(
            "/api/v1/admin/channels",
            json={"name": "<b>sales</b>", "addresses": ["sales@shop.example"]},
        ).json()
        c.post(f"/api/v1/admin/channels/{created['id']}/test", json={"timeout": 1})
    with signed_in(world.http, "alice@a.example") as c:
        page = c.get("/admin/channels").text
        for words in ("MX record", "orwarding", "IMAP", "relay", "DKIM", "Test the channel"):
            assert words in page
        detail = c.get(f"/admin/channels/{created['id']}").text
    assert "support@localhost" in page and "sales@shop.example" in page
    assert "Not verified" in page and "Failed:" in page
    assert "shop.example.  IN MX 10 localhost." in detail
    assert "&lt;b&gt;sales&lt;/b&gt;" in page and "<b>sales</b>" not in page
    with signed_in(world.http, "eve@b.example") as b:
        other = b.get("/admin/channels").text
    assert "sales@shop.example" not in other and "has no email channel yet" in other


def test_the_convert_warning_links_to_the_setup_page_which_exists(world):
    with world.http.client(world.agent_a) as c:
        body = c.post(f"/api/v1/conversations/{world.conv_a}/convert", json={}).json()
        link = body["ticket"]["email_check"]["setup_url"]
        path = "/" + link.split("/", 3)[3]
        # The link is a console page: a browser signs in first and comes back to it.
        anonymous = c.get(path)
    assert anonymous.status_code == 303
    assert anonymous.headers["location"] == "/signin?next=/admin/channels/email/setup"
    with signed_in(world.http, "alice@a.example") as admin:
        answer = admin.get(path)
    assert answer.status_code == 303 and answer.headers["location"] == "/admin/channels#setup"


def test_setup_page_shows_the_dkim_record_of_a_signing_channel(world, tmp_path):
    key = make_rsa_key(tmp_path / "dkim.pem")
    with world.http.runtime.unit_of_work() as s:
        channel = s.query(Channel).filter_by(name="support").one()
        dkim = {"selector": "s1", "domain": "shop.example", "private_key_file": str(key)}
        channel.settings = {**channel.settings, "dkim": dkim}
        channel_id = channel.id
    with signed_in(world.http, "alice@a.example") as c:
        page = c.get(f"/admin/channels/{channel_id}").text
    assert "s1._domainkey.shop.example.  IN TXT &#34;v=DKIM1; k=rsa; p=MIIBIjAN" in page
    key.write_text("garbage")
    with signed_in(world.http, "alice@a.example") as c:
        page = c.get(f"/admin/channels/{channel_id}").text
    assert "its key cannot be used: not a PEM RSA private key" in page
