"""The grammar of an agent's mail: their answer above the quoted notification, and the
commands on its first lines (`/note`, `/assign NAME|me`, `/snooze 2d`, `/priority high`,
`/status waiting`, `/resolve`, `/tag refund`, `/category billing`, `/cc add|remove ADDRESS`).

Reading only: channels/email/agent_actions.py applies the commands, agent_reply.py posts the text.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from tickets.business_time import DurationTooLong, parse_duration

# Every notification carries this line above its content; an answer is what is written above it.
REPLY_MARKER = "Reply above this line"

COMMANDS = ("note", "assign", "snooze", "priority", "status", "resolve", "tag", "category", "cc")
_COMMAND_LINE = re.compile(r"^/([A-Za-z]+)(?:[ \t]+(.*?))?[ \t]*$")
_WEEKDAYS = {
    name: i
    for i, names in enumerate(
        (
            ("monday", "mon"),
            ("tuesday", "tue"),
            ("wednesday", "wed"),
            ("thursday", "thu"),
            ("friday", "fri"),
            ("saturday", "sat"),
            ("sunday", "sun"),
        )
    )
    for name in names
}
_CLOCK = re.compile(r"^(\d{1,2})(?::(\d{2}))?$")


@dataclass(frozen=True)
class Command:
    name: str
    argument: str = ""


@dataclass(frozen=True)
class Reply:
    """An agent's mail read as commands plus the text to post."""

    commands: tuple[Command, ...]
    text: str

    @property
    def as_note(self) -> bool:
        return any(c.name == "note" for c in self.commands)


class CommandError(ValueError):
    """A command that cannot be applied; the message is what the agent is told."""


def read_reply(text: str) -> Reply:
    """Split the commands on the first lines from the text below them.

    A line like `/word ...` at the top is a command; an unknown word there is an error rather
    than text, so a typo never mails `/prioirty high` to a customer. A path such as `/etc/hosts`
    is text: the word must end at a space or the line's end.
    """
    lines = text.replace("\r\n", "\n").split("\n")
    commands: list[Command] = []
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        if not line and not commands:
            i += 1
            continue
        match = _COMMAND_LINE.match(line)
        if match is None:
            break
        name = match.group(1).lower()
        if name not in COMMANDS:
            raise CommandError(f"unknown command /{name} (known: /{', /'.join(COMMANDS)})")
        argument = (match.group(2) or "").strip()
        if (
            name in ("assign", "snooze", "priority", "status", "tag", "category", "cc")
            and not argument
        ):
            raise CommandError(f"/{name} needs a value, for example {EXAMPLES[name]}")
        if name == "resolve" and argument:
            raise CommandError("/resolve takes no value")
        commands.append(Command(name, argument))
        i += 1
    rest = "\n".join(lines[i:]).strip()
    note = next((c for c in commands if c.name == "note" and c.argument), None)
    if note is not None:  # "/note the refund is approved" carries text on its own line
        rest = f"{note.argument}\n{rest}".strip()
    return Reply(tuple(commands), rest)


EXAMPLES = {
    "assign": "/assign me",
    "snooze": "/snooze 2d or /snooze monday 9:00",
    "priority": "/priority high",
    "status": "/status waiting",
    "tag": "/tag refund",
    "category": "/category billing",
    "cc": "/cc add pat@example.com or /cc remove pat@example.com",
}


def parse_when(text: str, now: dt.datetime, timezone: str = "UTC") -> dt.datetime:
    """`2d`, `4h30m`, `monday 9:00`, `tomorrow`, `friday`, or an ISO 8601 time; in the future."""
    value = text.strip().lower()
    try:
        return now + parse_duration(value)
    except DurationTooLong as exc:
        raise CommandError(str(exc)) from None
    except ValueError:
        pass
    try:
        parsed = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        parsed = None
    zone = ZoneInfo(timezone)
    if parsed is not None:
        return (parsed if parsed.tzinfo else parsed.replace(tzinfo=zone)).astimezone(dt.UTC)
    words = value.split()
    if not words or len(words) > 2:
        raise CommandError(f"cannot read {text!r} as a time (try 2d, 4h or monday 9:00)")
    hour, minute = 9, 0
    if len(words) == 2:
        clock = _CLOCK.match(words[1])
        if clock is None or int(clock.group(1)) > 23 or int(clock.group(2) or 0) > 59:
            raise CommandError(f"cannot read {words[1]!r} as a time of day (try 9:00)")
        hour, minute = int(clock.group(1)), int(clock.group(2) or 0)
    local_now = now.astimezone(zone)
    day = words[0]
    if day == "today":
        ahead = 0
    elif day == "tomorrow":
        ahead = 1
    elif day in _WEEKDAYS:
        ahead = (_WEEKDAYS[day] - local_now.weekday()) % 7 or 7
    else:
        raise CommandError(f"cannot read {text!r} as a time (try 2d, 4h or monday 9:00)")
    date = local_now.date() + dt.timedelta(days=ahead)
    when = dt.datetime.combine(date, dt.time(hour, minute), tzinfo=zone).astimezone(dt.UTC)
    if when <= now:
        raise CommandError(f"{text!r} is in the past")
    return when


def new_text(stripped: str) -> str:
    """The agent's own words: what the quote stripper kept, cut again at any quoted line.

    The stripper keeps a whole mail when it finds nothing above the quote (customers answer
    below it, too). For an agent that would post the quoted notification, with its ticket
    details and notes, to the customer; so here any `>` line or our marker ends the answer,
    together with the attribution line just above it.
    """
    lines = stripped.splitlines()
    for i, line in enumerate(lines):
        if line.lstrip().startswith(">") or REPLY_MARKER.lower() in line.lower():
            kept = lines[:i]
            while kept and not kept[-1].strip():
                kept.pop()
            if kept and kept[-1].rstrip().endswith(":"):
                kept.pop()  # "On Sun, 29 Nov 2026, Acme Support <...> wrote:"
            return "\n".join(kept).strip()
    return stripped.strip()
