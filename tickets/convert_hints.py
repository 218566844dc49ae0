"""When to convert: the product's field guide, as hints on a conversation that has no ticket.

A conversation that needs follow-up should become a ticket, so that somebody owns it and the
SLA clock runs. This module reads what happened in a conversation and names the signs that it
needs one: an agent promised something for another day, the customer keeps writing about the
same problem, a second agent joined in, it was snoozed into next week or later, or the
customer used an escalation word (refund, chargeback, lawyer, ...). Each reason is one short
sentence for the team. It is a hint, never a rule: nothing is converted automatically.

Pure: it takes plain values (`Said`, `Snooze`) or already loaded models, asks nothing of the
database or the clock, and knows English, German, French and Spanish.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from tickets.models import AuthorType, Conversation, Event

MANY_MESSAGES = 5
QUOTE_CHARS = 70


@dataclass(frozen=True)
class Said:
    """One public message or internal note: who wrote it and what."""

    author: Literal["customer", "agent", "system"]
    text: str
    who: str | None = None  # the author's name as the team knows it
    agent_id: int | None = None
    note: bool = False
    auto_reply: bool = False


@dataclass(frozen=True)
class Snooze:
    """A snooze, set at `at`, until `until`."""

    at: dt.datetime
    until: dt.datetime


# --- promises that cross a day boundary -----------------------------------------------------

_WEEKDAYS = (
    r"monday|tuesday|wednesday|thursday|friday|saturday|sunday"
    r"|montag|dienstag|mittwoch|donnerstag|freitag|samstag|sonntag"
    r"|lundi|mardi|mercredi|jeudi|vendredi|samedi|dimanche"
    r"|lunes|martes|miércoles|miercoles|jueves|viernes|sábado|sabado|domingo"
)

# Words that put the day after today on their own.
_LATER_DAY = re.compile(
    r"\b(?:"
    # English
    r"tomorrow|tmrw|(?:early |later |end of |the end of )?next (?:week|month|monday|tuesday|"
    r"wednesday|thursday|friday|business day|working day)|after the weekend|over the weekend"
    r"|end of (?:the|this) week|later this week|within (?:a|one|two|three|\d+) (?:days|weeks)"
    r"|in (?:a couple of|a few|two|three|four|five|several|\d+) (?:days|weeks)"
    r"|in a week"
    # German ("Morgen" alone is also the greeting and the morning: see _NOT_A_DAY)
    r"|übermorgen|morgen|nächste[nr]? woche|kommende[nr]? woche|anfang nächster woche"
    r"|ende der woche|nach dem wochenende|in (?:zwei|drei|ein paar|wenigen|\d+) tagen"
    r"|in einer woche|(?:nächsten?|kommenden?) (?:" + _WEEKDAYS + r")"
    # French
    r"|après-demain|demain|la semaine prochaine|semaine prochaine|d'ici (?:la )?fin de semaine"
    r"|d'ici (?:" + _WEEKDAYS + r")|dans (?:deux|trois|quelques|\d+) jours|dans une semaine"
    r"|après le week-end|lundi prochain|mardi prochain|mercredi prochain|jeudi prochain"
    r"|vendredi prochain"
    # Spanish ("mañana" is also the morning: see _NOT_A_DAY)
    r"|pasado mañana|mañana|la (?:próxima|proxima) semana|la semana que viene"
    r"|(?:el )?(?:próximo|proximo) (?:" + _WEEKDAYS + r")"
    r"|en (?:dos|tres|unos|unos pocos|\d+) días|en una semana|después del fin de semana"
    r")\b",
    re.IGNORECASE,
)

# The same words meaning the morning, or a greeting: not another day.
_NOT_A_DAY = re.compile(
    r"\b(?:guten morgen|morgens|heute morgen|am morgen|jeden morgen"
    r"|(?:esta|la|por la|de la|cada|toda la) mañana|buenos días)\b",
    re.IGNORECASE,
)

_WEEKDAY = re.compile(r"\b(?:" + _WEEKDAYS + r")\b", re.IGNORECASE)

# A weekday alone is a promise only in a sentence that looks ahead ("I'll get back to you
# Tuesday"), not in one that tells what happened ("it left our warehouse on Tuesday").
_LOOKS_AHEAD = re.compile(
    r"\b(?:i'll|i will|we'll|we will|i'm going to|we're going to|i am going to|let me|"
    r"get back|follow up|update you|let you know|expect|should (?:be|have|arrive)|until|"
    r"ich melde|melde mich|melden uns|werde|werden|wird|bis|spätestens|bescheid|"
    r"je reviens|nous revenons|reviendrai|reviendrons|je vous tiens|vous tiendrai|je vais|"
    r"nous allons|d'ici|recontacte|recontacterai|avant|"
    r"te escribo|le escribo|le contacto|te contacto|vuelvo|volveré|volvemos|te aviso|le aviso|"
    r"le informo|te informo|voy a|vamos a|para el|antes del)\b",
    re.IGNORECASE,
)

_SENTENCE = re.compile(r"(?<=[.!?¡¿\n])\s+")


def _later_day(text: str) -> str | None:
    """The sentence of `text` that promises something for another day, if any."""
    for sentence in _SENTENCE.split(text):
        cleaned = _NOT_A_DAY.sub(" ", sentence)
        if _LATER_DAY.search(cleaned):
            return sentence.strip()
        if _WEEKDAY.search(cleaned) and _LOOKS_AHEAD.search(cleaned):
            return sentence.strip()
    return None


# --- escalation words -----------------------------------------------------------------------

_ESCALATION = re.compile(
    r"\b(?:"
    # English
    r"refunds?|refunded|money back|charge ?backs?|charged back|dispute the charge|"
    r"lawyers?|attorneys?|legal action|small claims|sue you|suing|court|"
    r"merge (?:my |our |the |these |both |two )?accounts?|account merge|merging (?:my )?accounts?|"
    r"bugs?|crash(?:es|ed|ing)?|data breach|gdpr|fraud|scam|cancel my (?:account|subscription)|"
    r"formal complaint|ombudsman|consumer protection"
    # German
    r"|rückerstattung|erstattung|geld zurück|rückbuchung|lastschrift zurück|anwalt|anwältin|"
    r"rechtliche schritte|gericht|verbraucherzentrale|konten zusammenführen|"
    r"konto zusammenführen|zusammenlegen|betrug|datenschutzverletzung|beschwerde|"
    r"kündigen|fehler"
    # French
    r"|remboursement|rembourser|remboursez|rétrofacturation|opposition bancaire|avocat|avocate|"
    r"action en justice|tribunal|fusionner (?:mes |nos |les )?comptes|fusion de comptes|bogue|"
    r"plainte|litige|arnaque|fraude|rgpd|résilier"
    # Spanish
    r"|reembolso|reembolsar|devolución del dinero|devolver el dinero|contracargo|abogado|abogada|"
    r"demanda|denuncia|tribunales|fusionar (?:mis |las )?cuentas|unir (?:mis |las )?cuentas|"
    r"reclamación|queja formal|estafa|fraude|fallo|cancelar mi (?:cuenta|suscripción)"
    r")\b",
    re.IGNORECASE,
)


def _escalation(text: str) -> str | None:
    found = _ESCALATION.search(text)
    return found.group(0) if found else None


# --- snooze ---------------------------------------------------------------------------------


def _next_week_or_later(snooze: Snooze) -> bool:
    """The snooze ends in a later calendar week (from Monday) than the one it was set in."""
    set_on = snooze.at.astimezone(dt.UTC).date()
    next_monday = set_on + dt.timedelta(days=7 - set_on.weekday())
    return snooze.until.astimezone(dt.UTC).date() >= next_monday


# --- the hints ------------------------------------------------------------------------------


def _quote(sentence: str) -> str:
    line = " ".join(sentence.split())
    if len(line) > QUOTE_CHARS:
        line = line[:QUOTE_CHARS].rsplit(" ", 1)[0] + "…"
    return f"“{line}”"


def hints(
    said: Sequence[Said], snoozes: Iterable[Snooze] = (), customer: str | None = None
) -> list[str]:
    """The reasons to suggest converting, one short sentence each, in a fixed order."""
    reasons: list[str] = []
    someone = customer or "The customer"
    public_agents = [s for s in said if s.author == "agent" and not s.note]
    promise = next(
        ((s, found) for s in public_agents if (found := _later_day(s.text)) is not None), None
    )
    if promise is not None:
        who = promise[0].who or "An agent"
        reasons.append(
            f"{who} promised something for another day ({_quote(promise[1])}): "
            "a ticket keeps the promise from being forgotten."
        )
    from_customer = [s for s in said if s.author == "customer" and not s.auto_reply]
    if len(from_customer) >= MANY_MESSAGES:
        reasons.append(
            f"{someone} has written {len(from_customer)} messages about this: it needs an owner."
        )
    agents: dict[int, str] = {}
    for s in said:
        if s.author == "agent" and s.agent_id is not None:
            agents.setdefault(s.agent_id, s.who or f"agent {s.agent_id}")
    if len(agents) >= 2:
        names = list(agents.values())
        joined = ", ".join(names[:-1]) + " and " + names[-1]
        reasons.append(f"{len(agents)} agents are on it ({joined}): a ticket says who owns it.")
    if any(_next_week_or_later(z) for z in snoozes):
        reasons.append(
            "It was snoozed until next week or later: a ticket keeps it on the team's list."
        )
    word = next((w for s in from_customer if (w := _escalation(s.text)) is not None), None)
    if word is not None:
        reasons.append(f"{someone} wrote “{word}”: that usually needs follow-up.")
    return reasons


def said_in(conversation: Conversation) -> list[Said]:
    """The messages and notes of a loaded conversation, as `hints` reads them."""
    out = [
        Said(
            author=m.author_type.value,
            text=m.text,
            who=m.agent.name if m.agent is not None else None,
            agent_id=m.agent_id if m.author_type == AuthorType.AGENT else None,
            auto_reply=m.is_auto_reply,
        )
        for m in conversation.messages
    ]
    out += [
        Said(
            author="agent" if n.agent_id is not None else "system",
            text=n.text,
            who=n.agent.name if n.agent is not None else None,
            agent_id=n.agent_id,
            note=True,
        )
        for n in conversation.notes
    ]
    return out


def snoozes_of(conversation: Conversation, events: Iterable[Event] | None) -> list[Snooze]:
    """Every snooze of the conversation the events record; without events, the current one
    (set when the conversation last changed)."""
    if events is None:
        if conversation.snoozed_until is None:
            return []
        return [Snooze(conversation.updated_at, conversation.snoozed_until)]
    out = []
    for event in events:
        until = event.data.get("until") if event.kind == "conversation.snoozed" else None
        if isinstance(until, str):
            try:
                out.append(Snooze(event.created_at, dt.datetime.fromisoformat(until)))
            except ValueError:
                continue
    return out


def for_conversation(
    conversation: Conversation, events: Iterable[Event] | None = None
) -> list[str] | None:
    """The hints of a loaded conversation; None once it is converted (it has a ticket)."""
    if conversation.ticket is not None:
        return None
    return hints(
        said_in(conversation),
        snoozes_of(conversation, events),
        customer=conversation.customer.name,
    )
