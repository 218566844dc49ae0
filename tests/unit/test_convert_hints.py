"""When to convert (tickets/convert_hints.py): the hints read real-looking conversations in
English, German, French and Spanish, and stay quiet where nothing calls for a ticket."""

from __future__ import annotations

import datetime as dt

import pytest

from tickets.convert_hints import Said, Snooze, hints


def customer(text: str, *, auto_reply: bool = False) -> Said:
    return Said("customer", text, auto_reply=auto_reply)


def agent(text: str, who: str = "Bob", agent_id: int = 2, *, note: bool = False) -> Said:
    return Said("agent", text, who=who, agent_id=agent_id, note=note)


QUESTION = customer("Hi, my order #4411 has not arrived yet. Can you check where it is?")


@pytest.mark.parametrize(
    "reply",
    [
        "Thanks Dana, I've asked the warehouse. I'll get back to you Tuesday.",
        "I'll check with the courier and let you know tomorrow.",
        "We are looking into it and expect an answer from the supplier next week.",
        "Sorry for the wait! I will follow up on Friday once the stock count is done.",
        "Give me a couple of days: we should know more in a few days.",
        "Danke für Ihre Geduld. Ich melde mich morgen bei Ihnen.",
        "Ich kläre das mit dem Lager und melde mich am Dienstag.",
        "Wir prüfen das und geben Ihnen nächste Woche Bescheid.",
        "Merci, je reviens vers vous demain avec une réponse.",
        "Je vous tiens au courant la semaine prochaine.",
        "Je vous recontacterai mardi, dès que j'ai des nouvelles.",
        "Gracias, le escribo mañana con la respuesta del almacén.",
        "Lo reviso y te aviso el jueves.",
        "Tendremos noticias la próxima semana.",
    ],
)
def test_a_promise_for_another_day(reply: str) -> None:
    [reason] = hints([QUESTION, agent(reply)])
    assert reason.startswith("Bob promised something for another day")
    assert "“" in reason


@pytest.mark.parametrize(
    "reply",
    [
        "I'll check today and come back to you.",
        "I'll get back to you this afternoon.",
        "Give me an hour, I'm on it.",
        "Your parcel left our warehouse on Tuesday and is with the courier.",
        "Guten Morgen! Ich schaue heute noch nach.",
        "Das Paket wurde am Montag verschickt.",
        "Je regarde ça ce soir et je vous réponds.",
        "Buenos días, esta mañana lo he revisado: ya está enviado.",
        "Lo miro hoy mismo.",
    ],
)
def test_no_promise_for_another_day(reply: str) -> None:
    assert hints([QUESTION, agent(reply)]) == []


def test_a_customers_promise_is_not_the_teams() -> None:
    assert hints([customer("I'll call you tomorrow about it, thanks.")]) == []


def test_a_note_promising_tomorrow_is_not_a_promise_to_the_customer() -> None:
    said = [QUESTION, agent("Check with finance tomorrow", note=True)]
    assert hints(said) == []


def test_the_fifth_message_on_one_problem() -> None:
    lines = [
        "My invoice shows the wrong VAT number.",
        "Hello? Any news about the VAT number?",
        "I need this for my accountant by Friday.",
        "Still wrong in the new invoice you sent.",
    ]
    four = [customer(t) for t in lines]
    assert hints(four, customer="Dana") == []
    five = [*four, customer("This is the fifth time I write about this.")]
    assert hints(five, customer="Dana") == [
        "Dana has written 5 messages about this: it needs an owner."
    ]


def test_auto_replies_do_not_count_as_messages() -> None:
    said = [customer("Where is my parcel?")] * 4 + [
        customer("I am out of the office until Monday.", auto_reply=True)
    ]
    assert hints(said) == []


def test_a_second_agent_joins() -> None:
    said = [
        QUESTION,
        agent("Let me look.", "Bob", 2),
        agent("Bob asked me to check the courier's scan.", "Alice", 1, note=True),
    ]
    assert hints(said) == ["2 agents are on it (Bob and Alice): a ticket says who owns it."]


def test_one_agent_writing_twice_is_not_a_second_agent() -> None:
    said = [QUESTION, agent("Let me look."), agent("It is on its way.")]
    assert hints(said) == []


MONDAY = dt.datetime(2026, 11, 30, 10, 0, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("at", "until", "hint"),
    [
        (MONDAY, MONDAY + dt.timedelta(days=7), True),  # next Monday
        (MONDAY + dt.timedelta(days=4), MONDAY + dt.timedelta(days=7, hours=-1), True),  # Fri
        (MONDAY, MONDAY + dt.timedelta(days=30), True),
        (MONDAY, MONDAY + dt.timedelta(days=1), False),  # tomorrow 9:00
        (MONDAY, MONDAY + dt.timedelta(days=4), False),  # Friday of the same week
        (MONDAY, MONDAY + dt.timedelta(hours=2), False),
    ],
)
def test_a_snooze_for_next_week(at: dt.datetime, until: dt.datetime, hint: bool) -> None:
    reasons = hints([QUESTION], [Snooze(at, until)])
    expected = ["It was snoozed until next week or later: a ticket keeps it on the team's list."]
    assert reasons == (expected if hint else [])


@pytest.mark.parametrize(
    ("text", "word"),
    [
        ("I want a refund for the broken blender, now.", "refund"),
        ("If this isn't fixed I'll file a chargeback with my bank.", "chargeback"),
        ("Can you merge my accounts? I have two logins by mistake.", "merge my accounts"),
        ("The export button does nothing, looks like a bug.", "bug"),
        ("My lawyer will contact you.", "lawyer"),
        ("Ich möchte eine Rückerstattung für die Bestellung.", "Rückerstattung"),
        ("Sonst schalte ich meinen Anwalt ein.", "Anwalt"),
        ("Je demande le remboursement de ma commande.", "remboursement"),
        ("Pouvez-vous fusionner mes comptes ?", "fusionner mes comptes"),
        ("Quiero un reembolso, el producto llegó roto.", "reembolso"),
        ("Voy a hablar con mi abogado.", "abogado"),
    ],
)
def test_an_escalation_word(text: str, word: str) -> None:
    assert hints([customer(text)], customer="Dana") == [
        f"Dana wrote “{word}”: that usually needs follow-up."
    ]


@pytest.mark.parametrize(
    "text",
    [
        "Thanks, the debugger works now, great support!",
        "Of course, I'll wait for the parcel.",
        "Is the issue with the courier resolved?",
        "Danke, alles bestens.",
        "Merci beaucoup, tout fonctionne.",
        "Muchas gracias, todo bien.",
    ],
)
def test_no_escalation_word(text: str) -> None:
    assert hints([customer(text)]) == []


def test_an_agent_saying_refund_is_no_escalation() -> None:
    assert hints([QUESTION, agent("The refund went out this morning.")]) == []


def test_several_reasons_in_a_fixed_order() -> None:
    said = [
        customer("I was charged twice, I want a refund."),
        agent("I'll ask finance and get back to you on Monday.", "Bob", 2),
        agent("Finance here: looking at it.", "Alice", 1),
    ]
    reasons = hints(said, [Snooze(MONDAY, MONDAY + dt.timedelta(days=7))], customer="Dana")
    assert [r.split(" ")[0] for r in reasons] == ["Bob", "2", "It", "Dana"]


def test_a_long_promise_is_quoted_short() -> None:
    reply = (
        "Thank you so much for your patience with this, we have escalated the whole matter "
        "to our logistics partner and I will personally get back to you tomorrow morning."
    )
    [reason] = hints([QUESTION, agent(reply)])
    assert "…" in reason
    assert len(reason) < 200
