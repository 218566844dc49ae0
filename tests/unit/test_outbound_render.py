"""Customer mail templates: every template in every locale with hostile data, the guard, the
header safety of what people typed, and the choice of language."""

from __future__ import annotations

import datetime as dt
import re
import shutil
from email import policy
from email.parser import BytesParser

import pytest

from channels.email.compose import compose, header_safe, trim_references
from channels.email.render import (
    EMAIL_TEMPLATE_NAMES,
    TEMPLATE_NAMES,
    EmailContent,
    EmailTemplates,
    default_root,
    render_checked,
)
from tickets.customer_view import CustomerMessage, CustomerView
from tickets.locale import choose_locale, detect_locale
from tickets.vocabulary import InternalWordsFound, find_internal_words

T = dt.datetime(2026, 11, 24, 10, 0, tzinfo=dt.UTC)
LONG = ("word " * 2000)[:-1] + "!"  # 10,000 characters
HOSTILE_NAME = "Eve\r\nBcc: x@evil.example =?utf-8?q?=0D=0ABcc:_y@evil.example?="
CUSTOMER_SUBJECT = "My concert ticket #4411 never arrived"
TEMPLATES = EmailTemplates()
LOCALES = TEMPLATES.locales()


def hostile_view(new: int = 1) -> CustomerView:
    older = [
        CustomerMessage("customer", HOSTILE_NAME, CUSTOMER_SUBJECT + "\n" + LONG, T, "chat"),
        CustomerMessage("team", "Ana", "<script>alert(1)</script> & more", T, "chat"),
    ]
    fresh = [
        CustomerMessage("team", HOSTILE_NAME, LONG + f" {i}", T, "email", new=True)
        for i in range(new)
    ]
    return CustomerView(
        brand="Brand\r\nX-Evil: 1",
        subject=CUSTOMER_SUBJECT,
        customer_name=HOSTILE_NAME,
        messages=(*older, *fresh),
    )


def test_the_required_templates_and_locales_exist():
    assert {"en", "de", "fr", "es"} <= set(LOCALES)
    for locale in LOCALES:
        for name in TEMPLATE_NAMES + EMAIL_TEMPLATE_NAMES:
            for part in ("subject.txt", "body.txt", "body.html"):
                assert (default_root() / locale / name / part).is_file()
        assert (default_root() / locale / "wrote.txt").is_file()


@pytest.mark.parametrize("locale", LOCALES)
@pytest.mark.parametrize("name", TEMPLATE_NAMES)
def test_every_template_renders_hostile_data_safely(locale, name):
    new = 1 if name == "reply" else 2
    content = EmailContent(hostile_view(new), "https://help.example/widget/demo", HOSTILE_NAME)
    rendered = render_checked(TEMPLATES, name, locale, content, ticket_refs=[4411, 7])
    # The customer's own subject, "ticket" and all, is kept as written.
    assert rendered.subject == f"Re: {CUSTOMER_SUBJECT}"
    # Every new message is there in full, in both parts; HTML is escaped.
    for i in range(new):
        assert LONG + f" {i}" in rendered.text
        assert LONG + f" {i}" in rendered.html
    assert "<script>" not in rendered.html and "&lt;script&gt;" in rendered.html
    # The recap is short, the link is there.
    assert len(rendered.text) < 2 * new * len(LONG) + 5000
    assert "https://help.example/widget/demo" in rendered.text
    assert 'href="https://help.example/widget/demo"' in rendered.html
    assert "<img" not in rendered.html and "<link" not in rendered.html
    # What the system wrote around the data has no internal word.
    system_text = rendered.text.replace(LONG, "").replace(CUSTOMER_SUBJECT, "")
    system_text = system_text.replace("<script>alert(1)</script> & more", "")
    assert find_internal_words(system_text.replace(HOSTILE_NAME, "")) == []
    raw = compose(
        from_name=rendered.from_name,
        from_address="support@help.example",
        to=["chris@example.com"],
        subject=rendered.subject,
        text=rendered.text,
        html=rendered.html,
        message_id="<abc@help.example>",
        date=T,
    )
    parsed = BytesParser(policy=policy.default).parsebytes(raw)
    assert parsed["Bcc"] is None and parsed["X-Evil"] is None
    assert parsed["To"] == "chris@example.com"
    for value in (str(parsed["From"]), str(parsed["Subject"])):
        assert "\n" not in value and "\r" not in value
    assert parsed.get_body(("plain",)).get_content().count(LONG) == new


def test_a_template_with_an_internal_word_is_refused(tmp_path):
    root = tmp_path / "email"
    shutil.copytree(default_root(), root)
    subject = root / "de" / "reply" / "subject.txt"
    subject.write_text("[Ticket] {{ subject }}")
    content = EmailContent(hostile_view(), "https://x.example/", "Ana")
    with pytest.raises(InternalWordsFound):
        render_checked(EmailTemplates(root), "reply", "de", content)


def test_a_template_that_shows_a_number_is_refused(tmp_path):
    root = tmp_path / "email"
    shutil.copytree(default_root(), root)
    body = root / "en" / "messages_waiting" / "body.txt"
    body.write_text(body.read_text().replace("{% block intro %}", "{% block intro %}Case 7: "))
    content = EmailContent(hostile_view(2), "https://x.example/", "Ana")
    with pytest.raises(InternalWordsFound):
        render_checked(EmailTemplates(root), "messages_waiting", "en", content, ticket_refs=[7])


def test_header_safe_defuses_line_breaks_and_encoded_words():
    assert header_safe("a\r\nb\tc\x00d\u2028e") == "a b c d e"
    assert "=?" not in header_safe("=?utf-8?q?=0D=0ABcc:_x@y?=")
    assert len(header_safe("x" * 1000, 200)) == 200


def test_trimmed_references_keep_the_first_and_the_latest():
    ids = [f"<{i}@x>" for i in range(30)]
    trimmed = trim_references([*ids, "<5@x>"])
    assert trimmed[0] == "<0@x>" and trimmed[-1] == "<29@x>" and len(trimmed) == 10


@pytest.mark.parametrize(
    ("texts", "expected"),
    [
        (["Hallo, meine Bestellung ist nicht angekommen. Können Sie bitte helfen?"], "de"),
        (["Bonjour, ma commande n'est pas arrivée, pouvez-vous m'aider svp ?"], "fr"),
        (["Hola, mi pedido no ha llegado, ¿me pueden ayudar por favor?"], "es"),
        (["Hi, my order did not arrive. Can you help me please?"], "en"),
        (["ok"], None),
    ],
)
def test_language_is_guessed_from_the_customers_words(texts, expected):
    assert detect_locale(texts, ["en", "de", "fr", "es"]) == expected


def test_widget_locale_wins_then_the_text_then_the_app_default():
    supported = ["de", "en", "es", "fr"]
    assert choose_locale("fr-CA", ["Hallo, meine Bestellung ist nicht da"], "en", supported) == "fr"
    assert choose_locale(None, ["Hallo, meine Bestellung ist nicht da"], "en", supported) == "de"
    assert choose_locale("pt-BR", ["ok"], "es", supported) == "es"
    assert choose_locale(None, [], "pt", supported) == "en"


def test_no_placeholder_leaks_and_times_are_shown():
    content = EmailContent(hostile_view(), "https://x.example/", "Ana")
    rendered = render_checked(TEMPLATES, "reply", "en", content)
    assert "Placeholder" not in rendered.text + rendered.html
    assert re.search(r"2026-11-24 10:00 UTC", rendered.text)


def test_a_passed_shape_does_not_let_another_shape_through(tmp_path):
    root = tmp_path / "email"
    shutil.copytree(default_root(), root)
    body = root / "en" / "messages_waiting" / "body.txt"
    body.write_text(
        body.read_text().replace(
            "{% block intro %}",
            "{% block intro %}{% if new_messages|length > 2 %}Tickets {% endif %}",
        )
    )
    templates = EmailTemplates(root)
    two = EmailContent(hostile_view(2), "https://x.example/", "Ana")
    render_checked(templates, "messages_waiting", "en", two)
    render_checked(templates, "messages_waiting", "en", two)  # the same shape, from the cache
    with pytest.raises(InternalWordsFound):
        render_checked(
            templates, "messages_waiting", "en", EmailContent(hostile_view(3), "x", "Ana")
        )
