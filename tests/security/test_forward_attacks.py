"""Attacks on agent forwards, replayed through the real gateway (its aiosmtpd server, workers),
an aiosmtpd relay and a DNS server on loopback publishing the agents' DKIM keys.

A followed forward opens a conversation for the address its forwarded block names, and the
team's answers go there. So an authenticated agent's forward is followed only to a person: never
to one of the gateway's own addresses in any form (a reply-token or return-path address, another
app's support address), which would make the gateway mail itself or mail another app's inbox.
A forward of a forward is the customer's mail that the agent got: it opens the conversation of
whoever sent it to the agent, not of the person that customer had forwarded. (A customer's own
forward stays theirs: tests/integration/test_agent_forward.py.)
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from gateway.config import AppConfig, ChannelConfig
from gateway.server import Services
from tests.integration.test_agent_forward import (
    ANA,
    SUPPORT,
    all_processed,
    conversations_of,
    forward_world,
    send,
    signed,
)
from tests.support.agent_mail import DkimKeys
from tests.support.forwards import Original, forward
from tests.support.smtp_sink import SmtpSink
from tests.support.waiting import wait_for

OTHER_APP = "help@globex.test"  # the support address of another app on the same gateway


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> DkimKeys:
    keys = DkimKeys(tmp_path_factory.mktemp("dkim"))
    keys.add("agents.test")
    return keys


@pytest.fixture(scope="module")
def world(tmp_path_factory, keys: DkimKeys) -> Iterator[tuple[Services, SmtpSink]]:
    """Acme (agent Ana) and Globex, another app, on one gateway."""
    globex = AppConfig(
        name="globex", brand="Globex", channels=[ChannelConfig(name="help", addresses=[OTHER_APP])]
    )
    with forward_world(tmp_path_factory.mktemp("gw"), keys, [globex]) as world:
        yield world


@pytest.mark.parametrize(
    "address",
    ["support+7hq2kd@acme.test", "bounces+a5b6c7@acme.test", "SUPPORT@Acme.test", OTHER_APP],
)
def test_a_forward_naming_one_of_our_own_addresses_is_not_followed(world, keys, address):
    gateway, _ = world
    text = f"Please send me everything about my account ({address})."
    msg = forward(
        "gmail",
        from_addr=ANA,
        to_addr=SUPPORT,
        note="Can someone answer this?",
        original=Original("Support", address, "My account", text),
    )
    send(gateway, signed(keys, msg), "ana@agents.test")
    all_processed(gateway)
    assert conversations_of(gateway, address.lower()) == []
    [message] = [
        m
        for c in conversations_of(gateway, "ana@agents.test")
        for m in c.messages
        if text in m.text
    ]
    assert "our own" in message.flags["forward_not_followed"]
    assert "forwarded_by" not in message.flags


def test_a_forward_of_a_forward_opens_the_conversation_of_who_sent_it(world, keys):
    gateway, _ = world
    # Carol forwarded Dave's mail to Ana; Ana forwards Carol's mail to support.
    inner = forward(
        "gmail",
        from_addr="Carol <carol@customer.test>",
        to_addr="ana@agents.test",
        note="Dave from our shipping team says this, can you help?",
        original=Original("Dave", "dave@customer.test", "Broken pallet", "The pallet broke."),
    )
    msg = forward(
        "gmail",
        from_addr=ANA,
        to_addr=SUPPORT,
        note="Carol's question, see below.",
        original=Original(
            "Carol",
            "carol@customer.test",
            str(inner["Subject"]),
            inner.get_body(("plain",)).get_content(),
        ),
    )
    send(gateway, signed(keys, msg), "ana@agents.test")
    [conversation] = wait_for(lambda: conversations_of(gateway, "carol@customer.test"))
    [message] = conversation.messages
    assert "Dave from our shipping team says this" in message.text
    assert message.flags["forwarded_by"]["agent"] == "ana@agents.test"
    all_processed(gateway)
    assert conversations_of(gateway, "dave@customer.test") == []
