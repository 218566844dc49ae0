"""Read a forwarded message out of the mail that forwards it.

Mail clients forward inline, as a block of quoted headers below the forwarder's own words:

- Gmail and Thunderbird: a dashed "---------- Forwarded message ---------" line, then From:,
  Date:, Subject:, To: lines;
- Outlook: a rule or "-----Original Message-----", then From:, Sent:, To:, Subject: lines, with
  the names in the user's language (Von/Gesendet/An/Betreff, De/Envoyé/À/Objet,
  De/Enviado/Para/Asunto, ...);
- Apple Mail: "Begin forwarded message:", then the header lines, often all quoted with `>`;

or as an attached message (message/rfc822), which `channels.email.parse` keeps as an `.eml`
attachment and which is read like any mail. The markers and field names are the quote
stripper's (channels.email.strip): what it keeps whole as a forward is what is read here.

Pure functions: text in, `Forwarded` out; nothing here decides whom to trust (see
channels/email/agent_forward.py).
"""

from __future__ import annotations

import datetime as dt
import email.utils
import re
from dataclasses import dataclass, field

from channels.email.strip import (
    header_field,
    is_forward_marker,
    is_forward_subject,
    is_original_message_marker,
)

# The header block of a forward is short; a longer run of "Key: value" lines is content.
_MAX_HEADER_LINES = 12
# A header value wrapped by the client goes on in the next line (Gmail wraps long subjects).
_WRAPPED_AT = 60
_ADDRESS = re.compile(r"[^\s<>\"'\[\](),;:]+@[^\s<>\"'\[\](),;:]+\.[^\s<>\"'\[\](),;:]+")
_MAILTO = re.compile(r"[<\[]\s*mailto:([^\s<>\[\]]+)\s*[>\]]", re.IGNORECASE)


@dataclass(frozen=True)
class Forwarded:
    """A forwarded message as the forward shows it."""

    style: str  # "gmail", "outlook", "apple" or "attachment"
    note: str  # the forwarder's own words above the forward ('' if none)
    text: str  # the forwarded message's text
    from_name: str = ""
    from_address: str = ""  # '' when the block names no readable address
    subject: str = ""
    date_text: str = ""
    date: dt.datetime | None = None
    cc: tuple[str, ...] = ()
    headers: dict[str, str] = field(default_factory=dict)


def _unquote(line: str) -> str:
    """One level of `>` quoting removed (Apple Mail quotes the whole forward)."""
    stripped = line.lstrip(" \t")
    if stripped.startswith(">"):
        return stripped[1:].removeprefix(" ")
    return line


def _is_quoted(line: str) -> bool:
    return line.lstrip(" \t").startswith(">")


def _header_lines(lines: list[str], start: int) -> tuple[dict[str, str], int]:
    """Read the header block from `start`: its fields and the index of the first body line.

    Blank lines between fields are skipped (some clients put them there); a line that is no
    field continues the one above when that one is long or a field follows (a wrapped subject).
    """
    fields: dict[str, str] = {}
    last: str | None = None
    i = start
    count = 0
    while i < len(lines) and count < _MAX_HEADER_LINES:
        line = _unquote(lines[i]).strip()
        if not line:
            following = next(
                (j for j in range(i + 1, min(i + 4, len(lines))) if _unquote(lines[j]).strip()),
                None,
            )
            if fields and following is not None and header_field(_unquote(lines[following])):
                i = following
                continue
            break
        parsed = header_field(line)
        if parsed is not None:
            name, value = parsed
            fields.setdefault(name, value)
            last = name
        elif last is not None and (
            len(_unquote(lines[i - 1]).strip()) >= _WRAPPED_AT
            or (i + 1 < len(lines) and header_field(_unquote(lines[i + 1])) is not None)
        ):
            fields[last] = f"{fields[last]} {line}"
            last = None
        else:
            break
        count += 1
        i += 1
    return fields, i


def _body(lines: list[str], start: int, quoted: bool) -> str:
    """The forwarded text: the rest, or only the quoted run when the forward was quoted (what
    follows it is the forwarder's again)."""
    out: list[str] = []
    for line in lines[start:]:
        if quoted:
            if line.strip() and not _is_quoted(line):
                break
            out.append(_unquote(line))
        else:
            out.append(line)
    return "\n".join(out).strip("\n").strip()


def _style(marker: str, quoted_block: bool) -> str:
    lowered = marker.lower()
    if lowered.strip(" >").endswith(":") or quoted_block:
        return "apple"
    if "-" in lowered and not is_original_message_marker(marker):
        return "gmail"
    return "outlook"


def _find_block(lines: list[str]) -> tuple[int, int, str] | None:
    """(first line of the forward, first header line, style), or None if there is none."""
    for i, raw in enumerate(lines):
        line = _unquote(raw).strip()
        if not line:
            continue
        if is_forward_marker(line) or is_original_message_marker(line):
            start = next((j for j in range(i + 1, len(lines)) if _unquote(lines[j]).strip()), i + 1)
            quoted = start < len(lines) and _is_quoted(lines[start])
            return i, start, _style(line, quoted)
        parsed = header_field(line)
        if parsed is not None and parsed[0] == "from":
            fields, _ = _header_lines(lines, i)
            if len(fields) >= 3 or (len(fields) >= 2 and "subject" in fields):
                first = i
                # Outlook's rule above the block belongs to the forward, not to the note.
                if i > 0 and set(lines[i - 1].strip()) <= {"_", "-"} and lines[i - 1].strip():
                    first = i - 1
                return first, i, "apple" if _is_quoted(raw) else "outlook"
    return None


def parse_forwarded(text: str, reference: dt.datetime | None = None) -> Forwarded | None:
    """The forwarded message in this text, or None when there is no forward in it.

    `reference` is the forwarding mail's own date: a forwarded date without a zone is taken in
    its zone (the forwarder's client wrote both), and a date after it is not believed.
    """
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    found = _find_block(lines)
    if found is None:
        return None
    first, start, style = found
    fields, body_start = _header_lines(lines, start)
    quoted = start < len(lines) and _is_quoted(lines[start])
    while body_start < len(lines) and not _unquote(lines[body_start]).strip():
        if quoted and not _is_quoted(lines[body_start]) and lines[body_start].strip():
            break
        body_start += 1
    name, address = read_address(fields.get("from", ""))
    date_text, cc = fields.get("date", ""), fields.get("cc", "")
    return Forwarded(
        style=style,
        note="\n".join(lines[:first]).strip(),
        text=_body(lines, body_start, quoted) if fields else _body(lines, start, quoted),
        from_name=name,
        from_address=address,
        subject=" ".join(fields.get("subject", "").split()),
        date_text=date_text,
        date=parse_date(date_text, reference),
        cc=tuple(filter(None, (read_address(part)[1] for part in _split_addresses(cc)))),
        headers=fields,
    )


def _split_addresses(value: str) -> list[str]:
    return [part for part in re.split(r"[;,](?=(?:[^\"]*\"[^\"]*\")*[^\"]*$)", value) if part]


def read_address(value: str) -> tuple[str, str]:
    """(display name, address) of a forwarded From value, as clients write it: `Name <a@b>`,
    `Name [mailto:a@b]`, `Name <a@b<mailto:a@b>>`, `"Name" <a@b>`, `a@b`. The address is ''
    when there is none (Exchange shows only a name for colleagues)."""
    cleaned = _MAILTO.sub(lambda m: f"<{m.group(1)}>", value.strip())
    cleaned = re.sub(r"<([^<>\s]+)<([^<>\s]+)>>", r"<\1>", cleaned)
    name, address = email.utils.parseaddr(cleaned)
    if not _ADDRESS.fullmatch(address or ""):
        match = _ADDRESS.search(cleaned)
        address = match.group(0) if match else ""
        name = cleaned[: match.start()] if match else cleaned
    name = name.strip(" \"'<>[]*").strip()
    if name.lower() == address.lower():
        name = ""
    return name, address.lower()


# --- dates as clients write them ------------------------------------------------------------

_MONTHS: dict[str, int] = {}
for _number, _names in enumerate(
    (
        "jan january januar janvier janv enero ene januari gennaio jänner",
        "feb february februar février févr febrero februari febbraio",
        "mar march märz mär mars marzo maart mrt",
        "apr april avril abril aprile",
        "may mai mayo mei maggio",
        "jun june juni juin junio giugno",
        "jul july juli juillet juil julio luglio",
        "aug august août agosto augustus",
        "sep sept september septembre septiembre settembre",
        "oct october oktober okt octobre octubre ottobre",
        "nov november novembre noviembre",
        "dec december dezember dez décembre déc diciembre dic dicembre",
    ),
    start=1,
):
    _MONTHS.update(dict.fromkeys(_names.split(), _number))

_RFC5322_DATE = re.compile(r"^(?:[A-Za-z]{3},\s*)?\d{1,2}\s+[A-Za-z]{3}\s+\d{4}\s+\d{1,2}:\d{2}")
_TIME = re.compile(
    r"(?<!\d)(\d{1,2})[:.](\d{2})(?:[:.](\d{2}))?(?!\d)\s*(?:(a|p)\.?\s?m\.?(?![a-z]))?",
    re.IGNORECASE,
)
_ZONE = re.compile(r"(?:\b(?:gmt|utc)\s*|(?<=\s))([+-])(\d{1,2})(?::?(\d{2}))?\b", re.IGNORECASE)
_ISO_DATE = re.compile(r"\b(\d{4})-(\d{1,2})-(\d{1,2})\b")
_DOTTED_DATE = re.compile(r"\b(\d{1,2})[./](\d{1,2})[./](\d{4})\b")
_YEAR = re.compile(r"\b(19\d{2}|2\d{3})\b")
_WORD = re.compile(r"[^\W\d_]+\.?")


def parse_date(text: str, reference: dt.datetime | None = None) -> dt.datetime | None:
    """A forwarded Date/Sent value as an aware datetime, or None when it cannot be read.

    RFC 5322 dates first; then the long forms of Gmail, Outlook and Apple Mail in the
    languages above ("Fri, Apr 26, 2013 at 8:13 PM", "Montag, 30. November 2026 09:15",
    "lundi 30 novembre 2026 09:15", "30 de noviembre de 2026, 9:15", "1. August 2011
    23:28:15 GMT-07:00"). A date without a zone is in the zone of `reference`.
    """
    text = " ".join(text.split())
    if not text:
        return None
    zone = reference.tzinfo if reference is not None and reference.tzinfo else dt.UTC
    when = None
    if _RFC5322_DATE.match(text):
        # Only then: the stdlib reads anything with a number in it, and ignores "PM".
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            when = None
        if when is not None and when.tzinfo is None:
            when = when.replace(tzinfo=zone)
    if when is None:
        when = _long_date(text, zone)
    if when is None or when.year < 1990:
        return None
    if reference is not None and when > reference + dt.timedelta(days=1):
        return None
    return when


def _long_date(text: str, zone: dt.tzinfo) -> dt.datetime | None:
    rest = text
    hour = minute = second = 0
    time = _TIME.search(rest)
    if time is not None:
        hour, minute, second = int(time.group(1)), int(time.group(2)), int(time.group(3) or 0)
        if time.group(4):
            hour = hour % 12 + (12 if time.group(4).lower() == "p" else 0)
        rest = rest[: time.start()] + " " + rest[time.end() :]
    offset = _ZONE.search(rest)
    if offset is not None:
        sign = 1 if offset.group(1) == "+" else -1
        delta = dt.timedelta(hours=int(offset.group(2)), minutes=int(offset.group(3) or 0))
        zone = dt.timezone(sign * delta)
        rest = rest[: offset.start()] + " " + rest[offset.end() :]
    day = month = year = None
    if match := _ISO_DATE.search(rest):
        year, month, day = (int(g) for g in match.groups())
    elif match := _DOTTED_DATE.search(rest):
        day, month, year = (int(g) for g in match.groups())
    else:
        year_match = _YEAR.search(rest)
        if year_match is None:
            return None
        year = int(year_match.group(1))
        rest = rest[: year_match.start()] + " " + rest[year_match.end() :]
        month = next(
            (
                _MONTHS[w.lower().rstrip(".")]
                for w in _WORD.findall(rest)
                if w.lower().rstrip(".") in _MONTHS
            ),
            None,
        )
        days = [int(n) for n in re.findall(r"(?<!\d)(\d{1,2})(?!\d)", rest) if 1 <= int(n) <= 31]
        day = days[0] if days else None
    if day is None or month is None:
        return None
    try:
        return dt.datetime(year, month, day, hour, minute, second, tzinfo=zone)
    except ValueError:
        return None


def subject_without_forward_prefix(subject: str) -> str:
    """The subject of a forward without its "Fwd:"/"WG:"/"TR:" prefix."""
    while is_forward_subject(subject):
        subject = subject.split(":", 1)[1].strip()
    return subject
