"""What a bounce returns of the original message: the Message-IDs that tie it to our email."""

from __future__ import annotations

from email.message import Message
from email.parser import HeaderParser

from channels.email.bounce.dsn import dsn_blocks, report_parts
from channels.email.bounce.text import (
    MAX_RETURNED_IDS,
    MESSAGE_ID_RE,
    content_type,
    normalise_message_id,
    part_text,
    raw_payload,
    walk_outer,
)
from channels.email.headers import header_text


def original_message_id(msg: Message, returned: tuple[str, ...]) -> str | None:
    if returned:
        return returned[0]
    # Last resort, once the message is known to be a bounce: Gmail, Exchange and Exim thread
    # the notice onto the original.
    for name in ("In-Reply-To", "References"):
        mid = normalise_message_id(header_text(msg, name))
        if mid:
            return mid
    return None


def returned_message_ids(msg: Message, text: str) -> tuple[str, ...]:
    """Most telling first: the attached original or its headers, then the original quoted
    in a text part (non-MIME bounces quote it below a separator; the bounce's own Message-ID
    is a header, not body text), then Gmail's X-Original-Message-ID in the report."""
    found: list[str | None] = []
    for part in walk_outer(msg):
        ctype = content_type(part)
        if ctype in ("message/rfc822", "message/global"):
            payload = raw_payload(part)
            if isinstance(payload, list) and payload and isinstance(payload[0], Message):
                found.append(normalise_message_id(header_text(payload[0], "Message-ID")))
            elif isinstance(payload, str):
                inner = HeaderParser().parsestr(part_text(part))
                found.append(normalise_message_id(header_text(inner, "Message-ID")))
        elif ctype in ("text/rfc822-headers", "message/rfc822-headers", "message/global-headers"):
            headers = HeaderParser().parsestr(part_text(part).lstrip())
            found.append(normalise_message_id(header_text(headers, "Message-ID")))
    for part in walk_outer(msg):
        if content_type(part).startswith("text/"):
            found += map(normalise_message_id, MESSAGE_ID_RE.findall(part_text(part)))
    found += map(normalise_message_id, MESSAGE_ID_RE.findall(text))
    for report in report_parts(msg):
        for block in dsn_blocks(report)[:1]:
            found.append(normalise_message_id(header_text(block, "X-Original-Message-ID")))
    return tuple(dict.fromkeys(mid for mid in found if mid))[:MAX_RETURNED_IDS]
