"""Parse one raw message into what the gateway needs: addresses, threading headers, text, HTML,
attachments, the new text of a reply, and whether it is automatic or a bounce.

mail-parser does the MIME work; the stdlib `email` package is the fallback when it raises, so a
broken message still yields what can be read, with its defects recorded. Limits are checked
before any decoding work, so a MIME bomb is refused cheaply.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import email
import email.policy
import email.utils
import re
from dataclasses import dataclass, field
from email.message import Message
from typing import TYPE_CHECKING, Any

import mailparser
import nh3

from channels.email.addresses import NoSender, header_addresses, sender
from channels.email.autoreply import auto_reply_reason
from channels.email.bounce import Bounce, detect_bounce
from channels.email.headers import decode_words
from channels.email.strip import Stripped, html_to_text, strip_reply
from tickets.text import clipped, storable

if TYPE_CHECKING:
    from tickets.models import Attachment

# At most 998 characters (a header line's limit, and the columns'): a longer one is no id.
_MSGID = re.compile(r"<[^<>\s]{1,996}>")
# The lengths of the columns a display name and a subject are stored in (tickets.models).
_NAME_LENGTH, _SUBJECT_LENGTH = 200, 998
# `cid:` keeps inline images pointing at their attachment; everything else is nh3's default.
_HTML_URL_SCHEMES = nh3.ALLOWED_URL_SCHEMES | {"cid"}


class MessageRejected(Exception):
    """The message breaks a limit or cannot be parsed at all; the reason goes to quarantine."""


@dataclass(frozen=True)
class ParseLimits:
    max_message_bytes: int = 26_214_400
    max_header_bytes: int = 102_400
    max_mime_depth: int = 50
    max_mime_parts: int = 1000
    max_attachment_bytes: int = 26_214_400
    # CPU time one message may take to parse (0: no limit, parse in the calling process), and
    # how many worker processes enforce it (channels.email.isolate).
    cpu_seconds: float = 2.0
    parse_processes: int = 2


@dataclass(frozen=True)
class ParsedAttachment:
    filename: str
    content_type: str
    content: bytes
    content_id: str | None
    inline: bool

    @property
    def size(self) -> int:
        return len(self.content)


@dataclass(frozen=True)
class ParsedMail:
    message_id: str | None
    in_reply_to: str | None
    references: tuple[str, ...]
    from_name: str
    from_address: str
    to: tuple[str, ...]
    cc: tuple[str, ...]
    subject: str
    date: dt.datetime | None
    text: str
    html: str | None
    stripped: Stripped
    auto_reply: str | None
    bounce: Bounce | None
    spam: bool
    attachments: tuple[ParsedAttachment, ...]
    defects: tuple[str, ...]
    headers: dict[str, str] = field(default_factory=dict)
    # The Message-ID the sender's client gave it, when a provider rewrote it on the way (the
    # customer's own later mail refers to that one).
    original_message_ids: tuple[str, ...] = ()
    # Why there is no from_address (no From, an unreadable one, several addresses in it).
    sender_problem: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "message_id": self.message_id,
            "in_reply_to": self.in_reply_to,
            "references": list(self.references),
            "from": {"name": self.from_name, "address": self.from_address},
            "to": list(self.to),
            "cc": list(self.cc),
            "subject": self.subject,
            "date": self.date.isoformat() if self.date else None,
            "text": self.text,
            "html": self.html,
            "reply_text": self.stripped.reply_text,
            "quoted": self.stripped.quoted,
            "signature": self.stripped.signature,
            "forwarded": self.stripped.forwarded,
            "is_auto_reply": self.auto_reply is not None,
            "auto_reply_reason": self.auto_reply,
            "is_bounce": self.bounce is not None,
            "bounce": None
            if self.bounce is None
            else {
                "permanent": self.bounce.permanent,
                "recipients": list(self.bounce.recipients),
                "original_message_id": self.bounce.original_message_id,
                "diagnostic": self.bounce.diagnostic,
            },
            "is_spam": self.spam,
            "attachments": [
                {"filename": a.filename, "content_type": a.content_type, "size": a.size}
                for a in self.attachments
            ],
            "defects": list(self.defects),
            "original_message_ids": list(self.original_message_ids),
        }


def message_ids(value: str | None) -> tuple[str, ...]:
    return tuple(_MSGID.findall(value or ""))


_MESSAGE_ID_HEADER = re.compile(rb"^message-id:\s*(<[^<>\s]+>)", re.IGNORECASE | re.MULTILINE)


def header_message_ids(head: bytes) -> tuple[str, ...]:
    """The Message-ID of a raw header block, without parsing the message (cheap, for scans)."""
    end = _header_end(head)
    return tuple(
        m.decode("ascii", "replace") for m in _MESSAGE_ID_HEADER.findall(head[: end or len(head)])
    )


def _plain(msg: Message, name: str) -> str:
    """A structured header as text: compat32 returns a `Header` object, not a str, when the
    value holds raw 8-bit bytes, and such a value must not crash what reads it."""
    value = msg.get(name)
    return "" if value is None else str(value)


def _header_end(raw: bytes) -> int:
    positions = [p for p in (raw.find(b"\r\n\r\n"), raw.find(b"\n\n")) if p != -1]
    return min(positions) if positions else len(raw)


def _check_structure(msg: Message, limits: ParseLimits) -> None:
    parts = 0
    stack: list[tuple[Message, int]] = [(msg, 1)]
    while stack:
        part, depth = stack.pop()
        parts += 1
        if depth > limits.max_mime_depth:
            raise MessageRejected(f"MIME nesting deeper than {limits.max_mime_depth}")
        if parts > limits.max_mime_parts:
            raise MessageRejected(f"more than {limits.max_mime_parts} MIME parts")
        payload = part.get_payload()
        if isinstance(payload, list):
            stack.extend((p, depth + 1) for p in payload if isinstance(p, Message))


def _safe_filename(name: str | None, index: int) -> str:
    name = storable(decode_words(name)) if name else ""
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = re.sub(r"[\x00-\x1f\x7f<>:\"|?*]", "_", name).strip(" .")
    return name[:200] or f"attachment-{index}"


# 7-bit charsets that shift state with escape sequences: mail-parser returns such a 7bit body
# as it is on the wire (ISO-2022-JP and UTF-7 text would reach the customer view as escapes).
_STATEFUL_CHARSET = re.compile(r"^(iso-2022-|utf-7|hz-gb-2312)", re.IGNORECASE)
# Where providers that rewrite Message-IDs keep the one the sender's client wrote.
_ORIGINAL_ID_HEADERS = (
    "X-Microsoft-Original-Message-ID",
    "X-Original-Message-ID",
    "X-Google-Original-Message-ID",
)
_ATTACHED_MESSAGE = frozenset({"message/rfc822", "message/global"})
_BODY_TYPES = frozenset({"text/plain", "text/html"})


def _leaves(msg: Message) -> list[tuple[int, Message]]:
    """The leaf parts in order, numbered like `walk()`. An attached message is one leaf: its
    parts are its own (a forward-as-attachment's text is not this message's text)."""
    out: list[tuple[int, Message]] = []
    stack: list[Message] = [msg]
    index = 0
    while stack:
        part = stack.pop()
        payload = part.get_payload()
        if isinstance(payload, list) and part.get_content_type() not in _ATTACHED_MESSAGE:
            stack.extend(reversed([p for p in payload if isinstance(p, Message)]))
        else:
            out.append((index, part))
        index += 1
    return out


def _mailparser_gap(leaves: list[tuple[int, Message]]) -> bool:
    """Whether this message hits one of mail-parser's known gaps (see the fixtures in
    tests/fixtures/parse): then the stdlib walk reads the bodies instead."""
    for _, part in leaves:
        ctype = part.get_content_type()
        if ctype in _ATTACHED_MESSAGE or part.get_content_maintype() == "multipart":
            return True  # an attached message, or a multipart without a usable boundary
        if ctype in _BODY_TYPES and _STATEFUL_CHARSET.match(part.get_content_charset() or ""):
            return True
    return False


def _bodies(
    raw: bytes, msg: Message, limits: ParseLimits
) -> tuple[str, str | None, list[ParsedAttachment], list[str]]:
    defects: list[str] = []
    attachments: list[ParsedAttachment] = []
    leaves = _leaves(msg)
    try:
        # The message is parsed once, by the stdlib, and mail-parser works on that tree.
        parsed = mailparser.MailParser(msg)
        text = "\n".join(parsed.text_plain)
        html = "\n".join(parsed.text_html) or None
        defects.extend(str(d) for d in parsed.defects_categories or ())
        if _mailparser_gap(leaves) or not (text or html):
            text, html = _stdlib_bodies(leaves, defects)
    except Exception as exc:  # noqa: BLE001 - any parser failure falls back to the stdlib
        defects.append(f"mail-parser failed: {type(exc).__name__}")
        text, html = _stdlib_bodies(leaves, defects)
    for index, part in leaves:
        disposition = (part.get_content_disposition() or "").lower()
        filename = part.get_filename()
        cid = part.get("Content-ID")
        ctype = part.get_content_type()
        # An inline image often has only a Content-ID (no file name): the HTML shows it by
        # `cid:`, so it is kept with the message like any attachment. An attached message is
        # kept whole, as an .eml an agent can open.
        attached_message = ctype in _ATTACHED_MESSAGE
        is_body = ctype in _BODY_TYPES
        if (
            disposition != "attachment"
            and not filename
            and not (cid and not is_body)
            and not attached_message
        ):
            continue
        content = _message_bytes(part) if attached_message else _decoded_payload(part)
        if content is None:
            defects.append(f"undecodable attachment part {index}")
            content = b""
        if len(content) > limits.max_attachment_bytes:
            defects.append(
                f"attachment {filename!r} over {limits.max_attachment_bytes} bytes dropped"
            )
            continue
        if attached_message and not filename:
            filename = f"{_attached_subject(part) or 'message'}.eml"
        attachments.append(
            ParsedAttachment(
                filename=_safe_filename(filename, index),
                content_type=ctype,
                content=content,
                content_id=clipped(storable(str(cid).strip()), 998) if cid else None,
                inline=disposition == "inline" or (bool(cid) and disposition != "attachment"),
            )
        )
    return text, html, attachments, defects


def _message_bytes(part: Message) -> bytes | None:
    inner = part.get_payload()
    if not isinstance(inner, list) or not inner or not isinstance(inner[0], Message):
        return _decoded_payload(part)
    try:
        return inner[0].as_bytes()
    except (UnicodeError, LookupError, ValueError, TypeError):
        return None


def _attached_subject(part: Message) -> str:
    inner = part.get_payload()
    if isinstance(inner, list) and inner and isinstance(inner[0], Message):
        return " ".join(decode_words(inner[0].get("Subject")).split())[:100]
    return ""


def _decoded_payload(part: Message) -> bytes | None:
    try:
        payload = part.get_payload(decode=True)
    except (ValueError, TypeError):
        return None
    return payload if isinstance(payload, bytes) else None


def _decode_text(part: Message, defects: list[str]) -> str:
    """A body part as text with its declared charset; undecodable bytes become U+FFFD and a
    recorded defect (the same category mail-parser records), never an exception."""
    payload = _decoded_payload(part) or b""
    charset = part.get_content_charset()
    try:
        return payload.decode(charset or "utf-8")
    except LookupError:
        defects.append("CharsetDecodeDefect")
        defects.append(f"unknown charset {charset!r}")
    except UnicodeError:
        defects.append("CharsetDecodeDefect")
        return payload.decode(charset or "utf-8", "replace")
    return payload.decode("utf-8", "replace")


def _stdlib_bodies(leaves: list[tuple[int, Message]], defects: list[str]) -> tuple[str, str | None]:
    texts: list[str] = []
    htmls: list[str] = []
    for _, part in leaves:
        if part.get_content_disposition() == "attachment" or part.get_filename():
            continue
        ctype = part.get_content_type()
        if ctype == "text/html":
            htmls.append(_decode_text(part, defects))
        elif ctype == "text/plain" or part.get_content_maintype() == "multipart":
            # A multipart whose boundary is missing or unused is one undivided body.
            texts.append(_decode_text(part, defects))
    return "\n".join(texts), "\n".join(htmls) or None


def _storable_bounce(bounce: Bounce | None) -> Bounce | None:
    if bounce is None:
        return None
    return dataclasses.replace(bounce, diagnostic=storable(bounce.diagnostic))


def parse_message(
    raw: bytes, limits: ParseLimits | None = None, envelope_from: str | None = None
) -> ParsedMail:
    limits = limits or ParseLimits()
    if len(raw) > limits.max_message_bytes:
        raise MessageRejected(f"message larger than {limits.max_message_bytes} bytes")
    if _header_end(raw) > limits.max_header_bytes:
        raise MessageRejected(f"header section larger than {limits.max_header_bytes} bytes")
    msg = email.message_from_bytes(raw, policy=email.policy.compat32)
    _check_structure(msg, limits)
    text, html, attachments, defects = _bodies(raw, msg, limits)
    defects.extend(type(d).__name__ for d in msg.defects)
    # NUL and lone surrogates (a utf-7 part can decode to them) are neither storable nor
    # printable: they become U+FFFD here, before nh3 or the stripper see the text.
    text = storable(text.replace("\r\n", "\n"))
    html = storable(html) if html else None
    clean_html = nh3.clean(html, url_schemes=_HTML_URL_SCHEMES) if html else None
    if not text.strip() and html:
        text = html_to_text(html)
    try:
        author = sender(msg)
        from_name, from_address, sender_problem = author.name, author.address, None
    except NoSender as exc:
        from_name, from_address, sender_problem = "", "", str(exc)
        defects.append(sender_problem)
    date = None
    if msg.get("Date"):
        try:
            date = email.utils.parsedate_to_datetime(_plain(msg, "Date"))
            if date.tzinfo is None:
                date = date.replace(tzinfo=dt.UTC)
        except (TypeError, ValueError, IndexError):
            defects.append("unparseable Date header")
    subject = storable(" ".join(decode_words(msg.get("Subject")).split()))
    for name, value in (("Subject", subject), ("From", from_name)):
        if "\ufffd" in value:
            defects.append(f"undecodable characters in {name}")
    ids = message_ids(storable(_plain(msg, "Message-ID")))
    originals = tuple(
        dict.fromkeys(
            mid
            for name in _ORIGINAL_ID_HEADERS
            for mid in message_ids(_plain(msg, name))
            if mid not in ids
        )
    )
    in_reply_to = message_ids(_plain(msg, "In-Reply-To"))
    spam_flag = _plain(msg, "X-Spam-Flag").strip().lower() == "yes" or (
        _plain(msg, "X-Spam-Status").strip().lower().startswith("yes")
    )
    return ParsedMail(
        message_id=ids[0] if ids else None,
        in_reply_to=in_reply_to[0] if in_reply_to else None,
        references=message_ids(_plain(msg, "References")),
        from_name=clipped(from_name.strip(), _NAME_LENGTH),
        from_address=from_address.strip().lower(),
        to=header_addresses(msg, "To").addresses,
        cc=header_addresses(msg, "Cc").addresses,
        subject=clipped(subject, _SUBJECT_LENGTH),
        date=date,
        text=text,
        html=clean_html,
        stripped=strip_reply(text, html, subject),
        auto_reply=auto_reply_reason(msg, envelope_from),
        bounce=_storable_bounce(detect_bounce(msg)),
        spam=spam_flag,
        attachments=tuple(attachments),
        defects=tuple(dict.fromkeys(map(storable, defects))),
        original_message_ids=originals,
        sender_problem=sender_problem,
    )


def attachment_rows(parsed: ParsedMail) -> list[Attachment]:
    """The mail's attachments as rows to hang on its message."""
    # Imported here: the parser processes import this module and need no ORM (it would cost
    # each of them most of its start-up time).
    from tickets.models import Attachment

    return [
        Attachment(
            filename=a.filename,
            content_type=a.content_type,
            size=a.size,
            content_id=a.content_id,
            inline=a.inline,
            content=a.content,
        )
        for a in parsed.attachments
    ]
