"""The voice of a conversation begun by email: who is greeted by which name, when the voice
applies, and that the quoted recap is quoted the way mail clients quote, survives hostile names
and texts, and is cut off again by our own stripping in every locale."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import replace

import pytest

from channels.email.compose import compose
from channels.email.render import (
    QUOTED_CHARS,
    EmailContent,
    EmailTemplates,
    render_checked,
    template_name,
)
from channels.email.strip import strip_reply
from tickets import services
from tickets.customer_view import (
    CustomerMessage,
    CustomerView,
    customer_view,
    first_name,
    started_by_email,
)
from tickets.models import Via

T = dt.datetime(2026, 11, 24, 10, 0, tzinfo=dt.UTC)
TEMPLATES = EmailTemplates()
HOSTILE = "Eve\r\nBcc: x@evil.example <script>alert(1)</script>"
LONG = ("word " * 2000)[:-1]


@pytest.mark.parametrize(
    ("name", "greeted"),
    [
        ("Maria Lopez", "Maria"),
        ("Lopez, Maria", "Maria"),  # Outlook's "Last, First"
        ("MARIA LOPEZ", "Maria"),
        ("jean-pierre dupont", "Jean-Pierre"),
        ('"María López"', "María"),
        ("Dr. Lopez", ""),  # a title and a surname: no first name to greet by
        ("maria@example.org", ""),  # the address as the name
        ("", ""),
        (None, ""),
        ("R2-D2 Support 24/7", ""),
    ],
)
def test_first_name(name, greeted):
    assert first_name(name) == greeted


def view(by_email: bool = True, new: int = 1, name: str = "Maria Lopez") -> CustomerView:
    older = [
        CustomerMessage("customer", name, "Where is my order?\nIt was due Monday.", T, "email"),
        CustomerMessage("team", "Ana", "Checking.", T + dt.timedelta(hours=1), "email"),
        CustomerMessage("customer", name, "Any news?", T + dt.timedelta(hours=2), "email"),
    ]
    fresh = [
        CustomerMessage("team", "Ana", f"It left today {i}.", T, "email", new=True)
        for i in range(new)
    ]
    return CustomerView(
        brand="Acme",
        subject="Order missing",
        customer_name=name,
        messages=(*older, *fresh),
        customer_first_name=first_name(name),
        started_by_email=by_email,
    )


def test_the_voice_follows_how_the_customer_began(session, app, now):
    customer = services.create_customer(session, app, now, email="maria@example.org")
    by_mail, _ = services.start_conversation(session, app, customer, Via.EMAIL, "Hi", now)
    by_chat, _ = services.start_conversation(session, app, customer, Via.CHAT, "Hi", now)
    assert started_by_email(by_mail) and customer_view(app, by_mail).started_by_email
    assert not started_by_email(by_chat)
    assert template_name(customer_view(app, by_mail), 1) == "email_reply"
    assert template_name(customer_view(app, by_mail), 3) == "email_reply"
    assert template_name(customer_view(app, by_chat), 1) == "reply"
    assert template_name(customer_view(app, by_chat), 2) == "messages_waiting"
    # Once the customer chats in it, it is a chat.
    services.add_customer_message(session, by_mail, "Still there?", Via.CHAT, now)
    assert not started_by_email(by_mail)


@pytest.mark.parametrize("locale", TEMPLATES.locales())
def test_the_recap_is_quoted_newest_first_one_level_deeper_each(locale):
    rendered = render_checked(TEMPLATES, "email_reply", locale, EmailContent(view(), "x", "Ana"))
    lines = rendered.text.splitlines()
    first_quote = next(i for i, line in enumerate(lines) if line.startswith(">"))
    recap = lines[first_quote - 1 :]
    assert "Maria Lopez" in recap[0] and "2026" in recap[0] and "12:00" in recap[0]
    assert recap[1:4] == ["> Any news?", ">", recap[3]]
    assert recap[3].startswith("> ") and "Ana" in recap[3] and "11:00" in recap[3]
    assert recap[4:6] == ["> > Checking.", "> >"]
    assert recap[7:] == ["> > > Where is my order?", "> > > It was due Monday."]
    # HTML: one gmail_quote / blockquote type="cite" per message, nested.
    assert rendered.html.count('<blockquote class="gmail_quote" type="cite"') == 3
    assert rendered.html.count("</blockquote>") == 3
    assert rendered.html.index("Any news?") < rendered.html.index("Where is my order?")


@pytest.mark.parametrize("locale", TEMPLATES.locales())
def test_hostile_names_and_long_texts_stay_in_their_place(locale):
    hostile = view(name=HOSTILE)
    first = replace(hostile.messages[0], text=LONG)
    content = EmailContent(replace(hostile, messages=(first, *hostile.messages[1:])), "x", HOSTILE)
    rendered = render_checked(TEMPLATES, "email_reply", locale, content, ticket_refs=[7])
    # Names stay on their lines (attribution, signature); the quote is clipped; HTML escaped.
    named = [line for line in rendered.text.splitlines() if "Bcc:" in line]
    assert len(named) == 3 and all(not line.startswith("Bcc") for line in named)
    lines = rendered.text.splitlines()
    quoted = lines[next(i for i, line in enumerate(lines) if line.startswith(">")) :]
    assert all(line.startswith(">") for line in quoted) and quoted[-1].startswith("> > > word")
    assert LONG not in rendered.text and LONG[: QUOTED_CHARS - 10] in rendered.text
    assert "<script>" not in rendered.html and "&lt;script&gt;" in rendered.html
    raw = compose(
        from_name=rendered.from_name,
        from_address="support@acme.test",
        to=["maria@example.org"],
        subject=rendered.subject,
        text=rendered.text,
        html=rendered.html,
        message_id="<abc@acme.test>",
        date=T,
    )
    assert b"\nBcc:" not in raw.split(b"\r\n\r\n", 1)[0]


@pytest.mark.parametrize("locale", TEMPLATES.locales())
def test_our_strip_cuts_our_recap_off_the_customers_answer(locale):
    rendered = render_checked(TEMPLATES, "email_reply", locale, EmailContent(view(), "x", "Ana"))
    # On top of our mail left unquoted (plain), on top of our HTML (HTML only), and the usual
    # reply of a client that quotes all of it under its own attribution line.
    body = rendered.html.split("<body>", 1)[1]
    gmail = (
        "Thanks!\n\nOn Tue, Nov 24, 2026 at 3:00 PM Ana from Acme <support@acme.test> wrote:\n"
        + "\n".join(("> " + line).rstrip() for line in rendered.text.splitlines())
    )
    for stripped in (
        strip_reply(f"Thanks!\n\n{rendered.text}"),
        strip_reply(None, f"<html><body><div>Thanks!</div><br>{body}"),
        strip_reply(gmail),
    ):
        assert stripped.reply_text.startswith("Thanks!")
        assert "Where is my order?" not in stripped.reply_text
        assert "Any news?" not in stripped.reply_text
        assert not re.search(r"\d\d:\d\d UTC", stripped.reply_text)
        assert "Where is my order?" in stripped.quoted
