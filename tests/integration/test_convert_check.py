"""The convert-time email check as a user meets it: `gateway convert` prints the warning with the
setup link, and `conversations show --json` carries `ticket.email_check` and `ticket.sla`."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from sqlalchemy import create_engine, update
from sqlalchemy.orm import Session

from tests.integration.test_cli import gw  # noqa: F401 - the fixture
from tickets import services
from tickets.models import Channel, CustomerAddress

PUBLIC = "https://help.acme.example"
SETUP = f"{PUBLIC}/admin/channels/email/setup"


def write_config(tmp_path: Path, *, channel: bool) -> Path:
    config = tmp_path / "gateway.toml"
    channels = (
        '[[apps.channels]]\nname = "support"\naddresses = ["support@acme.example"]\n'
        if channel
        else ""
    )
    config.write_text(
        f'data_dir = "{tmp_path / "data"}"\n'
        f'[http]\npublic_url = "{PUBLIC}"\n'
        '[[apps]]\nname = "acme"\nbrand = "Acme"\n'
        f"{channels}"
        '[[apps.sla_policies]]\nname = "default"\nfirst_response = "1h"\nresolution = "3d"\n'
    )
    return config


def chat(gw, config: Path, tmp_path: Path, customer: str) -> int:  # noqa: F811
    """An agent and a chat with `customer` (`demo seed` only knows the embedded default)."""
    gw("agents", "add", "ana@acme.example", "--name", "Ana", config=config)
    engine = db(tmp_path)
    now = dt.datetime.now(dt.UTC)
    with Session(engine) as session, session.begin():
        app = services.get_app(session, "acme")
        person = services.customer_by_address(session, app, customer, now, name="Chris")
        conversation, _ = services.start_conversation(
            session, app, person, "chat", "My parcel never arrived. Order 4411, sent May 2.", now
        )
        conversation_id = conversation.id
    engine.dispose()
    return conversation_id


def db(tmp_path: Path):
    return create_engine(f"sqlite:///{tmp_path / 'data' / 'gateway.db'}")


def shown_ticket(gw, config: Path, conversation_id: int) -> dict:  # noqa: F811
    out = gw("conversations", "show", str(conversation_id), "--json", config=config).stdout
    return json.loads(out)["ticket"]


def test_convert_without_an_email_channel_warns_with_the_setup_link(gw, tmp_path):  # noqa: F811
    config = write_config(tmp_path, channel=False)
    conversation_id = chat(gw, config, tmp_path, "chris@example.com")

    out = gw("convert", str(conversation_id), "--by", "ana@acme.example", config=config).stdout
    assert "converted" in out
    assert "warning: No email channel is set up" in out
    assert SETUP in out

    ticket = shown_ticket(gw, config, conversation_id)
    check = ticket["email_check"]
    assert check["ok"] is False
    assert check["setup_url"] == SETUP
    assert "no email channel" in check["reason"].lower()
    assert ticket["status"] == "open"  # converting went ahead
    sla = {t["kind"]: t for t in ticket["sla"]}
    assert set(sla) == {"first_response", "resolution"}
    assert all(t["state"] == "running" and not t["warned"] for t in sla.values())
    first_due = dt.datetime.fromisoformat(sla["first_response"]["due_at"])
    assert dt.timedelta(minutes=59) < first_due - dt.datetime.now(dt.UTC) <= dt.timedelta(hours=1)


def test_verified_channel_and_good_address_is_ok(gw, tmp_path):  # noqa: F811
    config = write_config(tmp_path, channel=True)
    conversation_id = chat(gw, config, tmp_path, "chris@example.com")
    engine = db(tmp_path)
    with engine.begin() as conn:  # what a passing `channels test` records
        conn.execute(update(Channel).values(verified_at=dt.datetime.now(dt.UTC)))
    engine.dispose()

    out = gw("convert", str(conversation_id), "--by", "ana@acme.example", config=config).stdout
    assert "warning" not in out
    check = shown_ticket(gw, config, conversation_id)["email_check"]
    assert check["ok"] is True
    assert check["reason"] is None
    assert check["address"] == "chris@example.com"


def test_unverified_channel_warns(gw, tmp_path):  # noqa: F811
    config = write_config(tmp_path, channel=True)
    conversation_id = chat(gw, config, tmp_path, "chris@example.com")
    out = gw("convert", str(conversation_id), "--by", "ana@acme.example", config=config).stdout
    assert "has not passed a test yet" in out
    assert SETUP in out


def test_hard_bounced_address_warns_that_it_bounced(gw, tmp_path):  # noqa: F811
    config = write_config(tmp_path, channel=True)
    conversation_id = chat(gw, config, tmp_path, "chris@example.com")
    engine = db(tmp_path)
    with engine.begin() as conn:
        conn.execute(update(Channel).values(verified_at=dt.datetime.now(dt.UTC)))
        conn.execute(
            update(CustomerAddress).values(
                bounced_at=dt.datetime(2026, 11, 20, tzinfo=dt.UTC),
                bounce_reason="550 5.1.1 user unknown",
            )
        )
    engine.dispose()

    out = gw("convert", str(conversation_id), "--by", "ana@acme.example", config=config).stdout
    assert "warning: Mail to chris@example.com bounced permanently on 2026-11-20" in out
    check = shown_ticket(gw, config, conversation_id)["email_check"]
    assert check["ok"] is False
    assert check["problems"] == ["hard_bounced"]
    assert "550 5.1.1 user unknown" in check["reason"]
