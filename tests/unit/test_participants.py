"""Who can be a participant of a conversation (tickets/participants.py): never one of the
gateway's own addresses in any form, never an agent, never the customer; at most the limit."""

from __future__ import annotations

import pytest

from tickets import participants, services
from tickets.errors import InvalidValue, NotAllowed, NotFound
from tickets.participants import Excluded

EXCLUDED = Excluded(
    ours=frozenset({"support@acme.test", "help@acme.test"}),
    our_domains=frozenset({"acme.test"}),
    agents=frozenset({"ana@agents.test"}),
)


@pytest.mark.parametrize(
    "address",
    [
        "support@acme.test",
        "help@acme.test",
        "support+abcdef234@acme.test",  # a reply token
        "bounces+abcdef234@acme.test",  # a return path
        "bounces@acme.test",
        "ana@agents.test",
    ],
)
def test_our_own_addresses_and_agents_are_refused(address):
    assert EXCLUDED.reason(address) is not None


@pytest.mark.parametrize(
    "address", ["pat@example.org", "bounces+x@example.org", "sales@acme.test", "ana@other.test"]
)
def test_people_are_allowed(address):
    assert EXCLUDED.reason(address) is None


def test_the_customers_copies_are_added_once_up_to_the_limit(session, app, now):
    customer = services.create_customer(session, app, now, name="Sam", email="sam@example.com")
    conversation, _ = services.start_conversation(
        session, app, customer, "email", "Hello", now, subject="Order"
    )
    services.add_agent(session, app, "ana@agents.test", "Ana", now)
    by = services.Actor.customer(customer)
    copied = [
        (None, "sam@example.com"),  # the customer themself
        ("Ana", "ANA@agents.test"),  # an agent, in another case
        (None, "not an address"),
        ("Pat", "Pat@Example.org"),
        (None, "pat@example.org"),  # twice
        (None, "kim@example.org"),
        (None, "lee@example.org"),
    ]
    added = participants.add_copied(session, conversation, copied, by, now, limit=2)
    assert added == ["pat@example.org", "kim@example.org"]
    assert [(p.address, p.name, p.added_by) for p in conversation.participants] == [
        ("pat@example.org", "Pat", "customer"),
        ("kim@example.org", None, "customer"),
    ]
    assert participants.add_copied(session, conversation, copied, by, now, limit=2) == []
    with pytest.raises(NotAllowed):
        participants.add(session, conversation, "lee@example.org", services.SYSTEM, now, limit=2)
    with pytest.raises(InvalidValue, match="customer's own"):
        participants.add(session, conversation, "sam@example.com", services.SYSTEM, now)
    participants.remove(session, conversation, "PAT@example.org", services.SYSTEM, now)
    with pytest.raises(NotFound):
        participants.remove(session, conversation, "pat@example.org", services.SYSTEM, now)
    assert participants.copied_to(conversation) == ["kim@example.org"]
