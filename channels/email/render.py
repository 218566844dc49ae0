"""Render customer mail from a `CustomerView`, and guard what the system writes around it.

Templates live in `templates/email/<locale>/<name>/{subject.txt, body.txt, body.html}` and get
plain values taken from a `CustomerView` only, so they cannot reach a ticket field or a note.

The vocabulary guard checks the system's own words: every template is rendered a second time
with each person-written value (names, subject, message text) and every value that may hold
digits (times, links) replaced by a neutral placeholder, and that rendering must contain no
internal word and no ticket reference. What the customer or an agent wrote is thereby never
judged (a customer may ask about a concert ticket), and a template that says "ticket" or shows
a number is always caught, whatever the data.

Two voices: a conversation the customer began in the chat is written as the chat going on
(`reply`, `messages_waiting`: the agent "answered in your chat", a link back to it); one they
began by email and never chatted in is written as an ordinary email reply (`email_reply`): a
greeting by first name, the agent's words, their name, and the earlier messages quoted below
as mail clients quote them, so the customer's client folds them away, and our own stripping
cuts them off the customer's answer.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup, escape

from tickets.customer_view import CustomerMessage, CustomerView
from tickets.locale import mail_date
from tickets.vocabulary import check

TEMPLATE_NAMES = ("reply", "messages_waiting")  # the chat's voice
EMAIL_TEMPLATE_NAMES = ("email_reply",)  # the voice of a conversation begun by email
RECAP_MESSAGES = 6
RECAP_CHARS = 280
# Mail clients quote whole messages; ours are already stripped of their own quotes, and a very
# long one is clipped so that the thread does not grow without bound.
QUOTED_MESSAGES = 10
QUOTED_CHARS = 4000
PLACEHOLDER = "Placeholder"
PLACEHOLDER_AT = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
PLACEHOLDER_TIME = "2000-01-01 00:00 UTC"
_TAG = re.compile(r"<[^>]*>")
_STYLE = re.compile(r"\sstyle=\"[^\"]*\"")


def default_root() -> Path:
    return Path(str(resources.files("templates") / "email"))


def nl2br(value: str) -> Markup:
    return Markup("<br>\n").join(escape(line) for line in str(value).split("\n"))


def quote(value: str, depth: int = 1) -> str:
    """Plain text quoted `depth` levels deep, as mail clients do ("> > text", ">" alone on an
    empty line)."""
    prefix = "> " * depth
    return "\n".join((prefix + line).rstrip() for line in str(value).split("\n"))


@dataclass(frozen=True)
class RenderedEmail:
    locale: str
    from_name: str
    subject: str
    text: str
    html: str


@dataclass(frozen=True)
class EmailContent:
    """What one customer email says: which of the view's messages are new, and where to link."""

    view: CustomerView  # built with `new_ids`: the messages flagged `new` are the mail's news
    chat_url: str
    sender_name: str | None  # the agent the mail comes from; None for system mail
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def new(self) -> tuple[int, ...]:
        return tuple(i for i, m in enumerate(self.view.messages) if m.new)


class EmailTemplates:
    def __init__(self, root: Path | None = None) -> None:
        self.root = root or default_root()
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(self.root)),
            autoescape=jinja2.select_autoescape(enabled_extensions=("html",), default=False),
            undefined=jinja2.StrictUndefined,
            keep_trailing_newline=False,
            auto_reload=False,
        )
        self.env.filters["nl2br"] = nl2br
        self.env.filters["quote"] = quote
        self._locales: list[str] | None = None
        # Shapes of placeholder renderings that passed the guard. The placeholder rendering
        # depends only on the template and the shape of the data (how many messages, whose),
        # never on what people wrote, so a shape that passed once passes again.
        self.guard_passed: set[str] = set()

    def locales(self) -> list[str]:
        if self._locales is None:
            self._locales = sorted(
                p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("_")
            )
        return self._locales

    def render(self, name: str, locale: str, context: dict[str, Any]) -> RenderedEmail:
        def one(path: str) -> str:
            return self.env.get_template(f"{locale}/{path}").render(context)

        # System mail (no agent) comes from the brand alone.
        from_name = one("from.txt").strip() if context.get("agent_name") else str(context["brand"])
        if name in EMAIL_TEMPLATE_NAMES:
            # Each quoted message is introduced by its attribution line, in the locale's words.
            wrote = self.env.get_template(f"{locale}/wrote.txt")
            quoted = [
                {**m, "attribution": " ".join(wrote.render(m).split())} for m in context["quoted"]
            ]
            context = {**context, "quoted": quoted}
        return RenderedEmail(
            locale=locale,
            from_name=from_name,
            subject=" ".join(one(f"{name}/subject.txt").split()),
            text=one(f"{name}/body.txt").strip() + "\n",
            html=one(f"{name}/body.html"),
        )


def _when(at: dt.datetime) -> str:
    return at.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def _message(m: CustomerMessage, limit: int | None = None) -> dict[str, Any]:
    text = m.text
    if limit is not None and len(text) > limit:
        text = text[: limit - 1].rstrip() + "…"
    return {
        "author_name": m.author_name,
        "from_team": m.author == "team",
        "text": text,
        "when": _when(m.created_at),
    }


def template_name(view: CustomerView, new_messages: int) -> str:
    """Which template writes a mail about `new_messages` new messages of this conversation."""
    if view.started_by_email:
        return "email_reply"
    return "reply" if new_messages == 1 else "messages_waiting"


def _quoted(m: CustomerMessage, locale: str) -> dict[str, Any]:
    return {
        # One line: the name goes into the attribution line ("On <date>, <name> wrote:").
        "author_name": " ".join(m.author_name.split()),
        "text": _message(m, QUOTED_CHARS)["text"],
        "date": mail_date(m.created_at, locale),
    }


def template_context(content: EmailContent, locale: str) -> dict[str, Any]:
    view = content.view
    new = [view.messages[i] for i in content.new]
    first_new = min(content.new) if content.new else len(view.messages)
    earlier = view.messages[max(0, first_new - RECAP_MESSAGES) : first_new]
    quoted = view.messages[max(0, first_new - QUOTED_MESSAGES) : first_new]
    return {
        "locale": locale,
        "brand": view.brand,
        "subject": view.subject,
        "customer_name": view.customer_name,
        "first_name": view.customer_first_name,
        "agent_name": content.sender_name,
        "new_messages": [_message(m) for m in new],
        "recap": [_message(m, RECAP_CHARS) for m in earlier],
        # Newest first: each message quotes the ones before it, one level deeper.
        "quoted": [_quoted(m, locale) for m in reversed(quoted)],
        "chat_url": content.chat_url,
        **content.extra,
    }


def placeholder_content(content: EmailContent) -> EmailContent:
    """The same email with every value a person wrote, or that holds digits, neutralised."""
    view = content.view
    messages = tuple(
        replace(m, author_name=PLACEHOLDER, text=PLACEHOLDER, created_at=PLACEHOLDER_AT)
        for m in view.messages
    )
    neutral = replace(
        view,
        brand=PLACEHOLDER,
        subject=PLACEHOLDER,
        customer_name=PLACEHOLDER,
        customer_first_name=PLACEHOLDER if view.customer_first_name else "",
        messages=messages,
    )
    return replace(
        content,
        view=neutral,
        chat_url="https://placeholder.invalid/",
        sender_name=PLACEHOLDER if content.sender_name else None,
        extra={k: PLACEHOLDER for k in content.extra},
    )


def guard(rendered: RenderedEmail, ticket_refs: Iterable[str | int]) -> None:
    """Raise `InternalWordsFound` if the system-written text shows the ticket layer.

    HTML is checked twice: its visible text for words and ticket numbers, and its markup (with
    the inline CSS taken out, whose colours and pixel sizes are digits by nature) for words.
    """
    refs = list(ticket_refs)
    # The placeholder time is the only number the data put there: take it out first.
    times = (PLACEHOLDER_TIME, mail_date(PLACEHOLDER_AT, rendered.locale))
    markup = _STYLE.sub("", rendered.html)
    visible = html.unescape(_TAG.sub(" ", markup))
    for where, text, where_refs in (
        ("From name", rendered.from_name, refs),
        ("subject", rendered.subject, refs),
        ("text body", rendered.text, refs),
        ("HTML body", visible, refs),
        ("HTML markup", markup, []),
    ):
        for time in times:
            text = text.replace(time, PLACEHOLDER)
        check(where, text, ticket_refs=where_refs)


def render_checked(
    templates: EmailTemplates,
    name: str,
    locale: str,
    content: EmailContent,
    ticket_refs: Sequence[str | int] = (),
) -> RenderedEmail:
    """Render for sending after the guard passed on the system-written text."""
    neutral = template_context(placeholder_content(content), locale)
    shape = json.dumps([name, locale, neutral, [str(r) for r in ticket_refs]], sort_keys=True)
    if shape not in templates.guard_passed:
        guard(templates.render(name, locale, neutral), ticket_refs)
        if len(templates.guard_passed) > 10_000:
            templates.guard_passed.clear()
        templates.guard_passed.add(shape)
    return templates.render(name, locale, template_context(content, locale))
