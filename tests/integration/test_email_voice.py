"""The voice of a conversation the customer began by email, through real servers in every
locale: the customer writes to the gateway's SMTP server, an agent answers, and the answer that
reaches the relay (aiosmtpd) reads like an ordinary email reply: a greeting by first name (none
when the address is all we have), no word of a chat, and the earlier messages quoted below as
mail clients quote them, in plain text and HTML. When the customer answers on top of it, our
own stripping cuts that quoted recap off again."""

from __future__ import annotations

import re
import smtplib
from email.message import EmailMessage

import pytest
from sqlalchemy import select

from gateway.server import Services
from tests.integration.test_scenario import gateway  # noqa: F401 - the fixture
from tests.support.smtp_sink import Received, SmtpSink
from tests.support.waiting import wait_for
from tickets import services
from tickets.models import AuthorType, Conversation, CustomerAddress, Message
from tickets.vocabulary import find_internal_words

# What each customer writes, in their language (the gateway guesses it from these words).
FIRST = {
    "en": "Hello, my order never arrived. Can you please check where it is? Thanks",
    "de": "Hallo, meine Bestellung ist noch nicht angekommen. Können Sie bitte nachsehen?",
    "fr": "Bonjour, ma commande n'est pas arrivée. Pouvez-vous vérifier où elle est, merci",
    "es": "Hola, mi pedido no ha llegado. ¿Pueden comprobar dónde está? Muchas gracias",
}
GREETING = {
    "en": ("Hi María,", "Hi,"),
    "de": ("Hallo María,", "Hallo,"),
    "fr": ("Bonjour María,", "Bonjour,"),
    "es": ("Hola María,", "Hola,"),
}
# The attribution line of the quoted recap, as each language's mail clients write it.
WROTE = {
    "en": r"On \S+ \d+ \S+ \d{4} at \d\d:\d\d UTC, {name} wrote:",
    "de": r"Am \S+ \d+\. \S+ \d{4} um \d\d:\d\d UTC schrieb {name}:",
    "fr": r"Le \S+ \d+ \S+ \d{4} à \d\d:\d\d UTC, {name} a écrit :",
    "es": r"El \S+ \d+ \S+ \d{4} a las \d\d:\d\d UTC, {name} escribió:",
}
ANSWER = "Your parcel left our warehouse this morning.\nIt should arrive on Friday."


def smtp_port(running: Services) -> int:
    return int(running.runtime.config.smtp.listen.rpartition(":")[2])


def send(running: Services, msg: EmailMessage, to: str = "support@localhost") -> None:
    with smtplib.SMTP("127.0.0.1", smtp_port(running), timeout=30) as smtp:
        smtp.send_message(msg, to_addrs=[to])


def customer_messages(running: Services, address: str) -> list[tuple[int, str, str | None]]:
    """(conversation id, text, quoted text) of each message of the customer at `address`."""
    with running.runtime.unit_of_work() as s:
        return [
            (row[0], row[1], row[2])
            for row in s.execute(
                select(Message.conversation_id, Message.text, Message.quoted_text)
                .join(Conversation, Message.conversation_id == Conversation.id)
                .join(CustomerAddress, CustomerAddress.customer_id == Conversation.customer_id)
                .where(
                    CustomerAddress.address == address,
                    Message.author_type == AuthorType.CUSTOMER,
                )
                .order_by(Message.id)
            )
        ]


def answer(running: Services, address: str, text: str) -> None:
    """Ana answers the conversation of `address` (as the API or the console would)."""
    [(conversation_id, _, _), *_] = customer_messages(running, address)
    rt = running.runtime
    with rt.unit_of_work() as s:
        app = services.get_app(s, "demo")
        try:
            ana = services.find_agent(s, app, "ana@help.example")
        except services.NotFound:
            ana = services.add_agent(s, app, "ana@help.example", "Ana", rt.clock())
        conversation = services.get_conversation(s, app, conversation_id)
        services.add_agent_message(s, conversation, ana, text, rt.clock())


def mail_to(relay: SmtpSink, address: str) -> Received:
    return wait_for(lambda: [m for m in relay.messages if m.rcpt_tos == [address]])[-1]


def parts(got: Received) -> tuple[str, str]:
    msg = got.message
    text = msg.get_body(("plain",)).get_content().replace("\r\n", "\n")
    return text, msg.get_body(("html",)).get_content()


@pytest.mark.parametrize("locale", sorted(FIRST))
def test_a_conversation_begun_by_email_is_answered_like_an_email(gateway, relay, locale):  # noqa: F811
    named, bare = f"maria.{locale}@example.org", f"kim.{locale}@example.net"
    for sender in (f"María López <{named}>", bare):
        first = EmailMessage()
        first["From"] = sender
        first["To"] = "support@localhost"
        first["Subject"] = "Order missing"
        first.set_content(FIRST[locale])
        send(gateway, first)
    for address in (named, bare):
        wait_for(lambda a=address: customer_messages(gateway, a))
        answer(gateway, address, ANSWER)

    for address, greeting, name in (
        (named, GREETING[locale][0], "María López"),
        (bare, GREETING[locale][1], f"kim.{locale}"),
    ):
        got = mail_to(relay, address)
        assert got.message["From"].addresses[0].display_name.startswith("Ana ")
        text, html = parts(got)
        lines = text.splitlines()
        # A greeting by first name, or none, then the agent's words and name.
        assert lines[0] == greeting, text
        assert ANSWER in text and "Ana" in lines
        # No chat: not in the words, not as a link.
        for body in (text, html):
            assert "chat" not in body.lower(), body
            assert "/widget/" not in body
        # The customer's first mail quoted below, as mail clients quote it.
        wrote = WROTE[locale].replace("{name}", re.escape(name))
        at = next(i for i, line in enumerate(lines) if re.fullmatch(wrote, line))
        assert at > lines.index("Ana")
        assert lines[at + 1 :] == [f"> {FIRST[locale]}"]
        quote = re.search(
            r'<div class="gmail_quote">\s*<div dir="ltr" class="gmail_attr">(.*?)<br></div>\s*'
            r'<blockquote class="gmail_quote" type="cite"[^>]*>\s*<div[^>]*>(.*?)</div>',
            html,
            re.S,
        )
        assert quote, html
        assert re.fullmatch(wrote, quote.group(1)) and quote.group(2) == FIRST[locale].replace(
            "'", "&#39;"
        )
        system_text = text.replace(ANSWER, "").replace(FIRST[locale], "")
        assert find_internal_words(system_text) == []

    # The customer answers on top of the mail. María's client (plain text) leaves our mail
    # unquoted below her words; Kim's (HTML only) keeps our HTML below hers.
    for address, new_text in ((named, "Perfect, thank you!"), (bare, "Great, thanks a lot.")):
        got = mail_to(relay, address)
        text, html = parts(got)
        reply = EmailMessage()
        reply["From"] = address
        reply["To"] = str(got.message["Reply-To"])
        reply["Subject"] = f"Re: {got.message['Subject']}"
        reply["In-Reply-To"] = got.message["Message-ID"]
        if address == named:
            reply.set_content(f"{new_text}\n\n{text}")
        else:
            body = html.split("<body>", 1)[1]
            reply.set_content(f"<html><body><div>{new_text}</div><br>{body}", subtype="html")
        send(gateway, reply, got.message["Reply-To"].addresses[0].addr_spec)

    for address, new_text in ((named, "Perfect, thank you!"), (bare, "Great, thanks a lot.")):
        messages = wait_for(lambda a=address: (m := customer_messages(gateway, a))[1:] and m)
        assert len({cid for cid, _, _ in messages}) == 1  # the same conversation
        _, stored, cut = messages[1]
        assert stored.startswith(new_text)
        # Our recap is cut off (and kept aside), not shown to the agents as new text.
        assert FIRST[locale] not in stored
        assert not re.search(WROTE[locale].replace("{name}", ".*"), stored)
        assert FIRST[locale] in (cut or "")
