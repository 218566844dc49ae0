"""The vocabulary guard finds internal words however they are disguised, and lets plain
customer-facing text through."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from channels.email.render import (
    EMAIL_TEMPLATE_NAMES,
    TEMPLATE_NAMES,
    EmailContent,
    EmailTemplates,
    render_checked,
)
from tickets.customer_view import CustomerMessage, CustomerView
from tickets.vocabulary import InternalWordsFound, check, find_internal_words

LEAKS = [
    "Your ticket has been updated",
    "TICKET #123",
    "Re: [Ticket 55] help",
    "We opened a tic\u200bket for you",  # zero-width space
    "ＴＩＣＫＥＴ",  # fullwidth
    "Тicket",  # Cyrillic T
    "t1cket",
    "t-i-c-k-e-t",
    "t i c k e t",
    "T.I.C.K.E.T",
    "tíckét",
    "Your e-tickets",
    "status: waiting_on_customer",
    "Status: in progress",
    "This is a high priority request",
    "Priorität: hoch",
    "Priorité haute",
    "Our SLA is 4 hours",
    "s.l.a. breached",
    "first response time",
    "This was breached",
    "Reference: #4411",
    "[ID: 9]",
    "Case 1234",
    "T-881",
    "assignee: Ana",
    "an internal note",
    "linked to a tracker",
]

CLEAN = [
    "Ana from Acme",
    "Thanks for your message! We'll get back to you soon.",
    "You can continue the chat here: https://acme.test/chat",
    "Hola, gracias por escribirnos.",
    "Vielen Dank für Ihre Nachricht.",
    "Merci pour votre message.",
    "The sticky note on the package",  # 'sticky' is not 'ticket'
    "Open the link below",
    "Your messages are waiting for you",
]


@pytest.mark.parametrize("text", LEAKS)
def test_finds_internal_words(text):
    assert find_internal_words(text), text


@pytest.mark.parametrize("text", CLEAN)
def test_plain_text_passes(text):
    assert find_internal_words(text) == []


def test_known_ticket_numbers_are_found_as_plain_numbers():
    assert find_internal_words("reference 7731 for you", ticket_refs=[7731])
    assert not find_internal_words("reference 77310 for you", ticket_refs=[7731])


def test_check_raises_with_where_and_words():
    with pytest.raises(InternalWordsFound) as info:
        check("subject", "Ticket updated")
    assert info.value.where == "subject"
    assert "ticket" in str(info.value)


LETTERS = st.sampled_from(["t", "i", "c", "k", "e"])
NOISE = st.sampled_from(["\u200b", "\u00ad", "\u2060", "\ufeff", "", ""])


@given(st.lists(NOISE, min_size=6, max_size=6), st.booleans())
def test_invisible_characters_anywhere_in_ticket_are_found(noise, upper):
    word = "ticket".upper() if upper else "ticket"
    disguised = "".join(n + ch for n, ch in zip(noise, word, strict=True))
    assert find_internal_words(f"About your {disguised}."), repr(disguised)


@given(st.text(max_size=300))
def test_never_raises(text):
    find_internal_words(text)


# Every customer mail template in every locale, in both voices, with and without a first name:
# what the system writes around the people's words has no internal word, and the voice of a
# conversation begun by email never mentions a chat.
TEMPLATES = EmailTemplates()
PEOPLES_WORDS = ("Maria Lopez", "Maria", "Ana", "Acme", "Where is my order?", "It left today.")


def _view(first_name: str, by_email: bool) -> CustomerView:
    at = dt.datetime(2026, 11, 24, 10, 0, tzinfo=dt.UTC)
    return CustomerView(
        brand="Acme",
        subject="Where is my order?",
        customer_name="Maria Lopez",
        messages=(
            CustomerMessage("customer", "Maria Lopez", "Where is my order?", at, "email"),
            CustomerMessage("team", "Ana", "It left today.", at, "email", new=True),
        ),
        customer_first_name=first_name,
        started_by_email=by_email,
    )


@pytest.mark.parametrize("locale", TEMPLATES.locales())
@pytest.mark.parametrize("name", TEMPLATE_NAMES + EMAIL_TEMPLATE_NAMES)
@pytest.mark.parametrize("first_name", ["Maria", ""])
def test_every_customer_template_is_free_of_internal_words(locale, name, first_name):
    by_email = name in EMAIL_TEMPLATE_NAMES
    content = EmailContent(_view(first_name, by_email), "https://acme.test/c", "Ana")
    rendered = render_checked(TEMPLATES, name, locale, content, ticket_refs=[4411, 7])
    visible = re.sub(r"<[^>]*>", " ", rendered.html)
    for text in (rendered.from_name, rendered.subject, rendered.text, visible):
        for words in PEOPLES_WORDS:
            text = text.replace(words, "")
        assert find_internal_words(text, ticket_refs=[4411, 7]) == [], text
        if by_email:
            assert "chat" not in text.lower(), text
