"""Auto-reply detection against the fixture corpus in tests/fixtures/autoreplies.

Each ``<case>.eml`` has a ``<case>.json`` sidecar: ``{"auto": bool}``, optionally the expected
``reason`` and the SMTP ``envelope_from`` to pass along.
"""

from __future__ import annotations

import email
import email.policy
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from email.message import Message
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from channels.email.autoreply import auto_reply_reason

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "autoreplies"
CASES = sorted(FIXTURES.glob("*.eml"))


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextmanager
def _no_internal_errors() -> Iterator[None]:
    """The public function swallows internal errors; the fuzz tests must still see them."""
    handler = _Collect()
    logger = logging.getLogger("channels.email.autoreply")
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
    assert not handler.records, handler.records[0].exc_info


def _parse(raw: bytes) -> Message:
    return email.message_from_bytes(raw, policy=email.policy.compat32)


def _case_id(path: Path) -> str:
    return f"autoreplies/{path.stem}"


@pytest.mark.parametrize("path", CASES, ids=_case_id)
def test_fixture(path: Path) -> None:
    expected = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
    reason = auto_reply_reason(_parse(path.read_bytes()), expected.get("envelope_from"))

    if not expected["auto"]:
        assert reason is None
        return
    assert reason is not None
    if "reason" in expected:
        assert reason == expected["reason"]


def test_every_language_is_covered() -> None:
    languages = {p.stem.split("_")[1] for p in CASES if p.stem.startswith("oof_")}
    assert {"en", "de", "fr", "es", "it", "nl", "pt", "pl", "sv", "da", "no", "ru"} <= languages


def _msg(headers: str) -> Message:
    return _parse(f"From: a@example.com\r\n{headers}\r\n\r\nbody\r\n".encode())


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ("Auto-Submitted: AUTO-REPLIED (vacation)", "Auto-Submitted: auto-replied (vacation)"),
        ("Auto-Submitted: No", None),
        ("Precedence: first-class", None),
        ("Precedence: BULK", "Precedence: bulk"),
        # Exchange stamps it on people's ordinary mail: it asks others not to respond.
        ("X-Auto-Response-Suppress: DR,OOF", None),
        ("X-Auto-Response-Suppress: All", None),
        (
            "X-Auto-Response-Suppress: All\r\nX-MS-Exchange-Inbox-Rules-Loop: a@example.com",
            "X-Auto-Response-Suppress",
        ),
        ("Return-Path: < >", None),
    ],
)
def test_header_values(headers: str, expected: str | None) -> None:
    assert auto_reply_reason(_msg(headers)) == expected


def test_envelope_none_means_unknown_not_empty() -> None:
    assert auto_reply_reason(_msg("Subject: hi"), None) is None
    assert auto_reply_reason(_msg("Subject: hi"), "") == "empty return path"
    assert auto_reply_reason(_msg("Subject: hi"), "<>") == "empty return path"


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2000))
def test_never_raises_on_random_bytes(raw: bytes) -> None:
    with _no_internal_errors():
        result = auto_reply_reason(_parse(raw), None)
    assert result is None or isinstance(result, str)


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from([p.read_bytes() for p in CASES]),
    st.integers(min_value=0, max_value=400),
    st.binary(min_size=1, max_size=30),
    st.one_of(st.none(), st.text(max_size=40)),
)
def test_never_raises_on_mutated_fixtures(
    raw: bytes, pos: int, junk: bytes, envelope: str | None
) -> None:
    mutated = raw[:pos] + junk + raw[pos:]
    with _no_internal_errors():
        result = auto_reply_reason(_parse(mutated), envelope)
    assert result is None or isinstance(result, str)


def _mail(subject: str, body: str, quote: str = "") -> Message:
    """A reply to one of our emails as a responder or a person would send it: no RFC 3834
    header, so only the subject and the first lines can tell."""
    head = (
        "From: Sam Example <sam@customer.example>\r\nTo: support@shop.example\r\n"
        f"Subject: {subject}\r\nIn-Reply-To: <reply-1@shop.example>\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 8bit\r\n\r\n"
    )
    return _parse(head.encode() + body.encode() + b"\r\n" + quote.encode())


@pytest.mark.parametrize(
    "subject",
    [
        "Automaattinen vastaus: Re: Your order 1042",
        "Automatická odpověď: Re: Your order 1042",
        "Automatikus válasz: Re: Your order 1042",
        "Αυτόματη απάντηση: Re: Your order 1042",
        "Автоматична відповідь: Re: Your order 1042",
        "Otomatik yanıt: Re: Your order 1042",
        "Răspuns automat: Re: Your order 1042",
        "Automātiskā atbilde: Re: Your order 1042",
        "自動応答: Re: Your order 1042",
        "自动回复: Re: Your order 1042",
        "자동 회신: Re: Your order 1042",
        "Re: Your order 1042 (Automatic Response)",
        "[Automatyczna odpowiedź] Re: Your order 1042",
        "AUTO: Jean Dupont est absent(e) (retour le 12/06/2024)",
        "Abwesend: Re: Your order 1042",
    ],
)
def test_localised_responder_subjects_are_flagged(subject: str) -> None:
    assert auto_reply_reason(_mail(subject, "Back soon.")) == "out-of-office subject"


@pytest.mark.parametrize(
    "body",
    [
        "Hello,\r\n\r\nI am currently out of the office until 24 June, limited access to email.",
        "Thanks for your email. I'm on annual leave and will be back on Monday 3 June.",
        "I will be out of the office from 3 June to 7 June and will not be checking email.",
        "Ich bin nicht im Büro. Ab dem 14.06. bin ich wieder erreichbar.",
        "Je serai absent du 5 au 12 août. Pour toute urgence, contactez le 01 23 45 67 89.",
        "Estaré de vacaciones del 1 al 15 de agosto.",
        "Sarò fuori ufficio dal 1 al 15 agosto. Per urgenze scrivere a info@shop.example.",
        "Ik ben op vakantie van 1 tot 15 augustus.",
        "I am away on vacation, May 25 through May 29. I will be back in the office on June 1.",
        "Vielen Dank für Ihre Nachricht. Ich bin bis einschließlich 14.06. nicht im Büro. "
        "In dringenden Fällen wenden Sie sich bitte an info@shop.example.",
        "Bonjour,\r\n\r\nJe suis absente du bureau jusqu'au 3 juin inclus.",
        "Estoy fuera de la oficina hasta el 5 de julio.",
        "Sono in ferie fino al 20 agosto.",
        "Ik ben tot en met 12 juli met vakantie.",
        "Estou de férias até o dia 15 de julho.",
        "Jestem na urlopie do 12 lipca.",
        "Jag är på semester till och med 5 augusti.",
        "Jeg er på ferie til og med 28. juli.",
        "Я в отпуске до 15 июля.",
        "ただいま休暇中のため、6月10日まで不在にしております。",
        "您好，我目前休假，将于6月10日返回。",
        "This is an automatic reply. Your message has been received.",
        "Thank you for contacting Acme. We have received your message and will respond "
        "within 24 hours.",
        "Bonjour, nous avons bien reçu votre message et vous répondrons dans les plus brefs "
        "délais.",
        "Hello,\r\n\r\nI'm out of office, please contact Joan Doe instead.\r\nBest regards",
    ],
)
def test_out_of_office_text_without_headers_is_flagged(body: str) -> None:
    assert auto_reply_reason(_mail("Re: Your order 1042", body)) is not None


@pytest.mark.parametrize(
    ("subject", "body"),
    [
        ("Absence de livraison", "Bonjour, ma commande 1042 n'est jamais arrivée."),
        ("Item is absent from my order", "The charger was not in the box."),
        ("Out of office hours delivery", "Can you deliver after 6 pm?"),
        ("Auto reply you sent is in English", "Please write to me in German."),
        ("On vacation next week", "Please hold my parcel at the depot."),
        ("Away from home in June", "Please deliver to my office address instead."),
        ("Booking change (vacation rental)", "Please move my booking to 3 June."),
        ("Automatic renewal", "Please cancel the automatic renewal of my plan."),
        ("Re: Your order 1042", "I'm on vacation next week, could you hold the parcel until then?"),
        ("Re: Your order 1042", "I was out of the office until Monday, so I only saw this now."),
        ("Re: Your order 1042", "Ich bin ab Montag im Urlaub. Können Sie bis dahin liefern?"),
        ("Re: Your order 1042", "Thanks! The replacement arrived, all good now."),
        ("Re: Ihre Bestellung", "Ich bin sehr zufrieden, vielen Dank."),
        ("Auto: claim 8812", "Here are the photos of the car you asked for."),
        ("Re: Your order 1042", "Ich bin bis Freitag im Urlaub, bitte liefern Sie danach."),
        ("Re: Your order 1042", "We have received your email, thanks. The serial is 1234."),
        ("Re: Your order 1042", "I'm not available until Friday, please deliver on Saturday."),
        ("Re: Su pedido", "Estoy de acuerdo, pero el paquete no llegó hasta el lunes."),
        ("I received your message but the link is broken", "It says 404."),
    ],
)
def test_people_mentioning_absence_are_not_flagged(subject: str, body: str) -> None:
    msg = (
        _mail(subject, body)
        if not subject.startswith("Auto:")
        else _parse(f"From: a@example.com\r\nSubject: {subject}\r\n\r\n{body}\r\n".encode())
    )
    assert auto_reply_reason(msg) is None


def test_a_person_who_quotes_our_email_is_not_flagged() -> None:
    quote = (
        "\r\nOn Mon, 3 Jun 2024 at 10:00, Shop Support <support@shop.example> wrote:\r\n"
        "> Your parcel is on its way and should arrive on Thursday.\r\n"
    )
    body = "I am out of the office until Friday, please leave the parcel with my neighbour."
    assert auto_reply_reason(_mail("Re: Your order 1042", body, quote)) is None
    assert auto_reply_reason(_mail("Re: Your order 1042", body)) == "out-of-office text"


def test_a_person_away_until_friday_is_not_flagged() -> None:
    body = "I'm away until Friday, please leave the parcel with my neighbour."
    assert auto_reply_reason(_mail("Re: Your order 1042", body)) is None


def test_a_person_replying_through_office_365_is_not_flagged() -> None:
    # Thunderbird's reply relayed by Office 365 carries the header Exchange adds to all mail.
    msg = _parse(
        b"From: Jamie Rivera <jamie.rivera@example.com>\r\n"
        b"Subject: Re: Your order 1042\r\n"
        b"In-Reply-To: <order-1042@shop.example>\r\n"
        b"X-Auto-Response-Suppress: DR, RN, NRN, OOF, AutoReply\r\n"
        b"X-MS-Exchange-Organization-AuthAs: Anonymous\r\n"
        b"\r\nThe parcel has not arrived yet, could you check?\r\n"
    )
    assert auto_reply_reason(msg) is None


@pytest.mark.parametrize(
    "subject",
    [
        "[AUTO GENERATED] Some subject",
        "[Auto-Generated] Nightly export finished",
        "[automatically generated] Password changed",
    ],
)
def test_an_auto_generated_marker_in_the_subject_is_flagged(subject: str) -> None:
    assert auto_reply_reason(_mail(subject, "Done.")) == "auto-generated subject"


@pytest.mark.parametrize(
    "subject",
    ["Re: [AUTO GENERATED] Some subject", "Is this auto generated?", "Auto-generated invoice"],
)
def test_people_writing_of_generated_mail_are_not_flagged(subject: str) -> None:
    assert auto_reply_reason(_mail(subject, "Why did I get this?")) is None
