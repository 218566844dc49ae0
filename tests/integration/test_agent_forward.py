"""An agent forwards a customer's mail to the support address, through the real servers: the
gateway (`gateway.server.start`: its aiosmtpd inbound server, workers, scheduler), an aiosmtpd
relay for outbound mail and a DNS server on loopback publishing the agents' DKIM keys; mail is
sent with smtplib, DKIM-signed by dkimpy as the agents' mail server would.

Forwarded by Gmail, Outlook (English, German, French, Spanish), Apple Mail or as an attached
message, the customer's mail opens the customer's own conversation with their subject, date and
text, and the agent's words are a note. Nothing is mailed to the customer for it; the team's
answer goes to the customer. A forward with an agent's From that nothing authenticates, an
unknown sender's forward and a forward without a readable original sender stay the sender's
own mail, and `gateway explain` says why.
"""

from __future__ import annotations

import datetime as dt
import email.policy
import os
import smtplib
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from email.message import EmailMessage
from pathlib import Path

import pytest
from sqlalchemy import func, select

from gateway.config import AppConfig, ChannelConfig, GatewayConfig, embedded_default
from gateway.server import Services, start
from tests.support.agent_mail import DkimKeys
from tests.support.dns_server import TxtServer
from tests.support.forwards import STYLES, WRITTEN_AT, Original, forward
from tests.support.smtp_sink import SmtpSink, free_port
from tests.support.waiting import wait_for
from tickets import services
from tickets.customer_view import customer_view
from tickets.models import (
    AuthorType,
    Conversation,
    Customer,
    CustomerAddress,
    InboundMail,
    InboundState,
    Outbox,
)

SUPPORT = "support@acme.test"
ANA = "Ana Lopez <ana@agents.test>"

# The customer's mail in the language of the client that forwards it.
ORIGINALS = {
    "en": ("Parcel never arrived", "Hello,\nmy parcel 4711 never arrived.\nKind regards, Sam"),
    "de": ("Paket nicht angekommen", "Hallo,\nmein Paket 4711 ist nie angekommen.\nGruß, Sam"),
    "fr": ("Colis jamais arrivé", "Bonjour,\nmon colis 4711 n'est jamais arrivé.\nSam"),
    "es": ("Paquete no llegó", "Hola,\nmi paquete 4711 nunca llegó.\nSaludos, Sam"),
}
NOTE = {
    "en": "Sam called about this too, please refund.",
    "de": "Sam hat deswegen auch angerufen, bitte erstatten.",
    "fr": "Sam a aussi appelé, merci de rembourser.",
    "es": "Sam también llamó, por favor reembolsar.",
}


def make_config(tmp_path: Path, relay: SmtpSink, dns: TxtServer) -> GatewayConfig:
    base = embedded_default()
    return base.model_copy(
        update={
            "database_url": f"sqlite:///{tmp_path / 'gw.db'}",
            "data_dir": str(tmp_path),
            "dkim_resolver": f"127.0.0.1:{dns.port}",
            "smtp": base.smtp.model_copy(update={"listen": f"127.0.0.1:{free_port()}"}),
            "http": base.http.model_copy(update={"listen": "127.0.0.1:0"}),
            "outbound": base.outbound.model_copy(
                update={"transport": "smtp", "host": relay.host, "port": relay.port}
            ),
            "delivery": base.delivery.model_copy(update={"email_grace_seconds": 1}),
            "sweep_seconds": 0.3,
            "worker_threads": 2,
            "apps": [
                AppConfig(
                    name="acme",
                    brand="Acme",
                    channels=[ChannelConfig(name="support", addresses=[SUPPORT])],
                )
            ],
        }
    )


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> DkimKeys:
    keys = DkimKeys(tmp_path_factory.mktemp("dkim"))
    keys.add("agents.test")
    keys.add("evil.test")
    return keys


@contextmanager
def forward_world(
    tmp_path: Path, keys: DkimKeys, other_apps: Sequence[AppConfig] = ()
) -> Iterator[tuple[Services, SmtpSink]]:
    """The gateway with agent Ana of app acme (and `other_apps`), its relay and its DNS."""
    dns = TxtServer(keys.txt_records()).start()
    relay = SmtpSink().start()
    mp = pytest.MonkeyPatch()
    mp.delenv("GATEWAY_SECRET_KEY", raising=False)
    config = make_config(tmp_path, relay, dns)
    running = start(config.model_copy(update={"apps": [*config.apps, *other_apps]}), "all")
    rt = running.runtime
    with rt.unit_of_work() as s:
        services.add_agent(
            s, services.get_app(s, "acme"), "ana@agents.test", "Ana Lopez", rt.clock()
        )
    try:
        yield running, relay
    finally:
        running.stop()
        relay.stop()
        dns.stop()
        mp.undo()


@pytest.fixture(scope="module")
def world(tmp_path_factory, keys: DkimKeys) -> Iterator[tuple[Services, SmtpSink]]:
    with forward_world(tmp_path_factory.mktemp("gw"), keys) as world:
        yield world


def send(gateway: Services, raw: bytes, sender: str) -> None:
    port = int(gateway.runtime.config.smtp.listen.rpartition(":")[2])
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.sendmail(sender, [SUPPORT], raw)


def wire(msg: EmailMessage) -> bytes:
    return msg.as_bytes(policy=email.policy.SMTP)


def signed(keys: DkimKeys, msg: EmailMessage, domain: str = "agents.test") -> bytes:
    """Signed as the sender's mail server signs what it sends: the bytes on the wire."""
    return keys.sign(wire(msg), domain)


def all_processed(gateway: Services) -> None:
    def done() -> bool:
        with gateway.runtime.unit_of_work() as s:
            pending = s.scalar(
                select(func.count())
                .select_from(InboundMail)
                .where(InboundMail.state == InboundState.PENDING)
            )
            return pending == 0

    wait_for(done)


def conversations_of(gateway: Services, address: str) -> list[Conversation]:
    with gateway.runtime.unit_of_work() as s:
        conversations = s.scalars(
            select(Conversation)
            .join(Customer, Customer.id == Conversation.customer_id)
            .join(CustomerAddress, CustomerAddress.customer_id == Customer.id)
            .where(CustomerAddress.address == address)
            .order_by(Conversation.id)
        ).all()
        for conversation in conversations:  # loaded while the session is open
            _ = [(m.text, m.flags, m.agent) for m in conversation.messages]
            _ = [(n.text, n.agent) for n in conversation.notes]
            _ = conversation.customer.name
        return list(conversations)


def seen_by_customer(gateway: Services, conversation_id: int) -> str:
    with gateway.runtime.unit_of_work() as s:
        app = services.get_app(s, "acme")
        view = customer_view(app, services.get_conversation(s, app, conversation_id))
        return "\n".join(m.text for m in view.messages)


def mails_to(relay: SmtpSink, address: str) -> list:
    return [m for m in list(relay.messages) if address in m.rcpt_tos]


@pytest.mark.parametrize("style", list(STYLES))
def test_an_agents_forward_opens_the_customers_conversation(world, keys, style):
    gateway, relay = world
    locale = STYLES[style]
    subject, text = ORIGINALS[locale]
    customer = f"sam.{style}@customer.test"
    msg = forward(
        style,
        from_addr=ANA,
        to_addr=SUPPORT,
        note=NOTE[locale],
        original=Original("Sam Customer", customer, subject, text),
    )
    send(gateway, signed(keys, msg), "ana@agents.test")

    [conversation] = wait_for(lambda: conversations_of(gateway, customer))
    assert conversation.subject == subject
    [message] = conversation.messages
    assert message.author_type == AuthorType.CUSTOMER
    assert message.text == text
    assert message.from_address == customer
    assert message.created_at.replace(tzinfo=dt.UTC) == WRITTEN_AT  # the customer's date
    assert message.flags["forwarded_by"]["agent"] == "ana@agents.test"
    [note] = conversation.notes
    assert note.text == NOTE[locale] and note.agent.email == "ana@agents.test"
    assert conversation.customer.name == "Sam Customer"
    # The customer sees their own message, nothing of the note or of the forward around it.
    assert seen_by_customer(gateway, conversation.id) == text
    assert conversations_of(gateway, "ana@agents.test") == []

    # No acknowledgement: the gateway mails a customer only what the team answers.
    time.sleep(2)  # past the grace period and a few sweeps
    assert mails_to(relay, customer) == []
    with gateway.runtime.unit_of_work() as s:
        kinds = s.scalars(
            select(Outbox.kind).where(Outbox.conversation_id == conversation.id)
        ).all()
        assert set(kinds) <= {"agent_notification"}  # the team is told, the customer is not

    # The team's answer goes to the customer, not to the agent who forwarded.
    rt = gateway.runtime
    with rt.unit_of_work() as s:
        app = services.get_app(s, "acme")
        ana = services.find_agent(s, app, "ana@agents.test")
        services.add_agent_message(
            s, services.get_conversation(s, app, conversation.id), ana, "Refund sent.", rt.clock()
        )
    [answer] = wait_for(lambda: mails_to(relay, customer))
    body = answer.message.get_body(("plain",)).get_content()
    assert "Refund sent." in body
    assert NOTE[locale] not in body and "ana@agents.test" not in body
    assert answer.rcpt_tos == [customer]


def test_a_forged_agent_from_opens_nothing_for_the_customer(world, keys):
    gateway, _ = world
    victim = "victim@customer.test"
    original = Original("Victim", victim, "Your account", "Please reset my password.")
    unsigned = forward("gmail", from_addr=ANA, to_addr=SUPPORT, note="do it", original=original)
    wrong_key = forward("outlook", from_addr=ANA, to_addr=SUPPORT, note="now", original=original)
    forged_results = forward(
        "apple",
        from_addr=ANA,
        to_addr=SUPPORT,
        note="asap",
        original=original,
        # Only the channel's own edge (none is configured here) is believed.
        headers=(("Authentication-Results", "mx.acme.test; dkim=pass header.d=agents.test"),),
    )
    send(gateway, wire(unsigned), "ana@agents.test")
    send(gateway, signed(keys, wrong_key, "evil.test"), "ana@agents.test")
    send(gateway, wire(forged_results), "ana@agents.test")
    all_processed(gateway)

    assert conversations_of(gateway, victim) == []
    # The mail is kept as the sender's own (as any mail to the support address), with the
    # reason it was not followed; nothing is posted as a note.
    conversations = conversations_of(gateway, "ana@agents.test")
    messages = [m for c in conversations for m in c.messages]
    assert len(messages) == 3
    for message in messages:
        assert "nothing proves it came from them" in message.flags["forward_not_followed"]
        assert "forwarded_by" not in message.flags
    assert [n for c in conversations for n in c.notes] == []


def test_an_unknown_senders_forward_stays_their_own(world, keys):
    gateway, _ = world
    original = Original("Sam", "sam.unknown@customer.test", "Invoice", "Where is my invoice?")
    msg = forward(
        "gmail",
        from_addr="Kim <kim@partner.test>",
        to_addr=SUPPORT,
        note="FYI, from our shared customer",
        original=original,
    )
    send(gateway, wire(msg), "kim@partner.test")
    [conversation] = wait_for(lambda: conversations_of(gateway, "kim@partner.test"))
    [message] = conversation.messages
    assert "FYI, from our shared customer" in message.text
    assert "Where is my invoice?" in message.text  # the whole forward, kept as it came
    assert "forwarded_by" not in message.flags and "forward_not_followed" not in message.flags
    assert conversations_of(gateway, "sam.unknown@customer.test") == []


def test_a_forward_without_a_readable_sender_stays_the_agents_and_says_why(world, keys):
    gateway, _ = world
    # Exchange shows a colleague's name only, without an address.
    msg = forward(
        "outlook",
        from_addr=ANA,
        to_addr=SUPPORT,
        note="Can someone take this?",
        original=Original("Sam Customer", "", "Broken lid", "The lid is broken."),
    )
    body = msg.get_content().replace("Sam Customer <>", "Sam Customer")
    msg.set_content(body)
    send(gateway, signed(keys, msg), "ana@agents.test")
    all_processed(gateway)
    messages = [
        m
        for c in conversations_of(gateway, "ana@agents.test")
        for m in c.messages
        if "Broken lid" in c.subject
    ]
    [message] = messages
    assert "names no sender address" in message.flags["forward_not_followed"]
    assert "The lid is broken." in message.text


def test_explain_prints_who_forwarded_and_why_a_forward_was_not_followed(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env["GATEWAY_DATA_DIR"] = str(tmp_path / "data")

    def gateway(*args: str) -> str:
        proc = subprocess.run(
            [sys.executable, "-m", "gateway", *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    gateway("agents", "add", "ana@agents.test", "--name", "Ana Lopez")
    original = Original("Sam", "sam@customer.test", "Parcel", "It never came.")
    # The embedded default knows no DKIM key of agents.test: nothing proves this is Ana's.
    msg = forward("gmail", from_addr=ANA, to_addr="support@localhost", note="hi", original=original)
    path = tmp_path / "forward.eml"
    path.write_bytes(msg.as_bytes())
    out = gateway("explain", str(path))
    assert "threading rule: new conversation" in out
    assert "flag: forward_not_followed" in out and "nothing proves it came from them" in out
