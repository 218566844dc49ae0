"""The convert-time email check's decisions (the CLI tests show it as a user meets it)."""

from __future__ import annotations

import pytest
from sqlalchemy.orm import Session

from tickets import domains, email_check, services
from tickets.models import App, Channel, ChannelAddress, Ticket

URL = "https://help.example"


@pytest.fixture
def ticket(session: Session, app: App, now) -> Ticket:
    channel = Channel(app_id=app.id, name="support", created_at=now, verified_at=now)
    channel.addresses.append(ChannelAddress(address="support@acme.example"))
    session.add(channel)
    domains.grant(session, app, "acme.example", now)  # the operator's grant
    agent = services.add_agent(session, app, "ana@acme.example", "Ana", now)
    customer = services.customer_by_address(session, app, "chris@example.com", now)
    conversation, _ = services.start_conversation(session, app, customer, "chat", "Hi", now)
    return services.convert(session, conversation, agent, now)


def test_ok_and_stored_once(session, ticket, now):
    result = email_check.run(session, ticket.id, now, public_url=URL)
    assert result is not None and result["ok"] is True
    assert ticket.email_check == result
    assert email_check.run(session, ticket.id, now, public_url=URL) is None  # done already


def test_a_channel_on_an_unproven_domain_warns_how_to_prove_it(session, app, ticket, now):
    domains.revoke(session, app, "acme.example")
    result = email_check.check(session, ticket, now, public_url=URL)
    assert result["problems"] == ["domain_not_proven"]
    assert "acme.example" in result["reason"] and "_gateway-challenge" in result["reason"]


def test_no_mail_server_warns_and_an_unanswered_lookup_does_not(session, ticket, now):
    asked: list[str] = []

    def no_mx(domain: str) -> bool | None:
        asked.append(domain)
        return False

    result = email_check.check(session, ticket, now, public_url=URL, mx_lookup=no_mx)
    assert asked == ["example.com"]
    assert result["problems"] == ["no_mail_server"]
    assert result["setup_url"] == URL + "/admin/channels/email/setup"
    timed_out = email_check.check(session, ticket, now, public_url=URL, mx_lookup=lambda d: None)
    assert timed_out["ok"] is True


def test_reserved_domain_and_missing_address_warn(session, app, ticket, now):
    customer = ticket.conversation.customer
    customer.addresses[0].address = "chris@shop.test"
    result = email_check.check(session, ticket, now, public_url=URL)
    assert result["problems"] == ["invalid_address"]
    assert "chris@shop.test cannot receive mail" in result["reason"]
    customer.addresses.clear()
    result = email_check.check(session, ticket, now, public_url=URL)
    assert result["problems"] == ["no_address"]


def test_a_good_second_address_is_enough(session, ticket, now):
    customer = ticket.conversation.customer
    customer.addresses[0].bounced_at = now
    services.add_customer_address(session, customer, "chris@work.example.org", now)
    session.flush()
    result = email_check.check(session, ticket, now, public_url=URL)
    assert result["ok"] is True
    assert result["address"] == "chris@work.example.org"


def test_back_office_tickets_are_not_checked(session, app, now):
    agent = services.add_agent(session, app, "bo@acme.example", "Bo", now)
    customer = services.customer_by_address(session, app, "dee@example.com", now)
    conversation, _ = services.start_conversation(session, app, customer, "chat", "Hi", now)
    ticket = services.convert(session, conversation, agent, now, type="back_office")
    assert ticket.email_check_due_at is None
    assert email_check.run(session, ticket.id, now, public_url=URL) is None
