"""Header decoding that never gives up: RFC 2047 words to text, whatever the charset says;
and where a raw message's header section ends."""

from __future__ import annotations

from email.errors import MessageError
from email.header import Header, decode_header
from email.message import Message


def decode_words(raw: str | Header | None) -> str:
    """A header value as text, RFC 2047-decoded as far as possible; '' if absent.

    Unknown charsets and raw 8-bit bytes (which compat32 returns as a Header object) are
    decoded as UTF-8 with replacement rather than given up on, so patterns still match.
    """
    if raw is None:
        return ""
    try:
        chunks = decode_header(raw)
    except (MessageError, LookupError, UnicodeError, ValueError, TypeError, AssertionError):
        return str(raw)
    out: list[str] = []
    for data, charset in chunks:
        if isinstance(data, str):
            out.append(data)
            continue
        try:
            out.append(data.decode(charset or "ascii", errors="replace"))
        except (LookupError, UnicodeError, ValueError, TypeError):
            out.append(data.decode("utf-8", errors="replace"))
    return "".join(out)


def header_text(msg: Message, name: str) -> str:
    return decode_words(msg.get(name))


def header_section(raw: bytes) -> bytes:
    """The raw header section of a message: up to its first empty line, CRLF or LF."""
    ends = [i for i in (raw.find(b"\r\n\r\n"), raw.find(b"\n\n")) if i >= 0]
    return raw[: min(ends)] if ends else raw
