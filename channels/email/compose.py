"""Build outbound messages whose headers cannot be bent by what people typed.

Display names and subjects come from people (an agent's name, the customer's own subject). They
are made header-safe before they reach the `email` package: control characters and line breaks
become spaces, bidi controls and invisible format characters are removed, and RFC 2047
encoded-word openers (`=?`) are broken up, because Python before the CVE-2024-6923 fix re-emits
a decoded `=0D=0A` inside a display name as a real line break, which is a header injection. As
a last check the finished bytes are parsed again and must carry exactly the headers that were
set.

Message-IDs are another matter: `Message-ID`, `In-Reply-To` and `References` are written
verbatim, never RFC 2047-encoded (the `email` package encodes any unstructured value longer
than a line, and an encoded id matches nothing in the customer's client, so our reply starts a
new thread there). They are folded only at the whitespace between two ids. An id that cannot be
written verbatim (a line break, a space, a non-ASCII character) is left out, never encoded.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import secrets
import string
from collections.abc import Iterable, Sequence
from email import policy
from email.headerregistry import Address, HeaderRegistry
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import EmailPolicy
from email.utils import format_datetime
from typing import Any

from tickets.text import clipped

log = logging.getLogger(__name__)

_CONTROL = re.compile(r"[\x00-\x1f\x7f\x80-\x9f\u2028\u2029]")
# Bidi embeddings, overrides, isolates and marks, and invisible format characters: in a From
# name or a subject they reorder or hide what the reader sees ("Ana" + U+202E makes the brand
# after it read backwards; "Invoice " + U+202E + "fdp.exe" shows as "exe.pdf").
_INVISIBLE = re.compile("[\u061c\u200b\u200e\u200f\u202a-\u202e\u2060-\u2069\ufeff\ufff9-\ufffb]")
_SPACES = re.compile(r"\s+")
MAX_REFERENCES = 10
# One msg-id as we write it: printable ASCII without space, "<" or ">", in angle brackets.
_MSG_ID = re.compile(r"<[\x21-\x3b\x3d\x3f-\x7e]+>")
_ID_HEADERS = frozenset({"message-id", "in-reply-to", "references"})
LINE = 78  # RFC 5322 2.1.1: lines SHOULD be at most 78 characters ...
MAX_LINE = 998  # ... and MUST be at most 998


class UnsafeHeader(ValueError):
    """The composed message does not have the headers it was given: it is never sent."""


def header_safe(text: str, limit: int = 200) -> str:
    """One line of text fit for a header value, at most `limit` characters."""
    text = _INVISIBLE.sub("", _CONTROL.sub(" ", text))
    text = text.replace("=?", "= ?").replace("?=", "? =")
    return clipped(_SPACES.sub(" ", text).strip(), limit)


def message_id_ok(value: str) -> bool:
    """Whether `value` is one msg-id we can write verbatim on a header line."""
    return len(value) <= MAX_LINE - len("In-Reply-To: ") and bool(_MSG_ID.fullmatch(value))


def writable_ids(ids: Iterable[str]) -> list[str]:
    """The ids fit to be written; the others are logged and left out."""
    ok = []
    for mid in ids:
        if message_id_ok(mid):
            ok.append(mid)
        else:
            log.warning("a Message-ID that cannot be written verbatim is left out: %r", mid[:200])
    return ok


def fold_ids(name: str, ids: Sequence[str]) -> str:
    """`name: id id ...` folded (CRLF and a space) only between ids, lines kept to 78
    characters where the ids allow it; an id longer than that stands alone on its line."""
    lines = [f"{name}:"]
    for mid in ids:
        if len(lines[-1]) > len(name) + 1 and len(lines[-1]) + 1 + len(mid) > LINE:
            lines.append("")
        lines[-1] += f" {mid}"
    return "\r\n".join(lines)


class _VerbatimIds(EmailPolicy):
    """policy.SMTP, but the Message-ID headers are folded by `fold_ids`, never encoded."""

    def fold(self, name: str, value: str) -> str:
        if name.lower() in _ID_HEADERS:
            return fold_ids(name, str(value).split()) + self.linesep
        return super().fold(name, value)

    def fold_binary(self, name: str, value: str) -> bytes:
        if name.lower() in _ID_HEADERS:
            return self.fold(name, value).encode("ascii")
        return super().fold_binary(name, value)


class _HeaderClasses(HeaderRegistry):
    """The email package's header factory, remembering the class it makes per header name:
    the stock one builds a new class with `type()` for every header of every message, which
    was a tenth of the cost of composing an email."""

    def __init__(self) -> None:
        super().__init__()
        self._made: dict[str, Any] = {}

    def __getitem__(self, name: str) -> Any:
        key = name.lower()
        made = self._made.get(key)
        if made is None:
            made = self._made[key] = super().__getitem__(name)
        return made


_POLICY = _VerbatimIds(linesep="\r\n", header_factory=_HeaderClasses())


def new_message_id(domain: str) -> str:
    """A Message-ID on the channel's domain; letters only, so it can never look like an id."""
    local = "".join(secrets.choice(string.ascii_lowercase) for _ in range(26))
    return f"<{local}@{domain}>"


def trim_references(ids: Iterable[str], limit: int = MAX_REFERENCES) -> list[str]:
    """The thread's first Message-ID and the latest ones, without repeats (RFC 5322 3.6.4)."""
    unique: list[str] = []
    for mid in ids:
        if mid and mid not in unique:
            unique.append(mid)
    if len(unique) <= limit:
        return unique
    return [unique[0], *unique[-(limit - 1) :]]


def compose(
    *,
    from_name: str,
    from_address: str,
    to: Sequence[str],
    subject: str,
    text: str,
    html: str | None,
    message_id: str,
    date: dt.datetime,
    reply_to: str | None = None,
    in_reply_to: str | None = None,
    references: Sequence[str] = (),
    auto_submitted: bool = False,
    extra_headers: Sequence[tuple[str, str]] = (),
    attachments: Sequence[tuple[str, str, bytes]] = (),  # (filename, content type, content)
    cc: Sequence[str] = (),
) -> bytes:
    """The message as bytes with CRLF line ends, ready for the outbox."""
    if not message_id_ok(message_id):
        raise UnsafeHeader(f"our own Message-ID cannot be written verbatim: {message_id!r}")
    msg = EmailMessage(policy=_POLICY)
    local, _, domain = from_address.rpartition("@")
    msg["From"] = Address(display_name=header_safe(from_name), username=local, domain=domain)
    msg["To"] = ", ".join(to)
    if cc:
        msg["Cc"] = ", ".join(cc)
    if reply_to:
        msg["Reply-To"] = reply_to
    msg["Subject"] = header_safe(subject, 250)
    msg["Date"] = format_datetime(date.astimezone(dt.UTC))
    msg["Message-ID"] = message_id
    for name, ids in (
        ("In-Reply-To", [in_reply_to] if in_reply_to else []),
        ("References", references),
    ):
        fit = writable_ids(ids)
        if fit:
            msg[name] = " ".join(fit)
    if auto_submitted:
        msg["Auto-Submitted"] = "auto-generated"
    for name, value in extra_headers:
        msg[name] = header_safe(value, 500)
    msg.set_content(text, cte="quoted-printable")
    if html is not None:
        msg.add_alternative(html, subtype="html", cte="quoted-printable")
    for filename, content_type, content in attachments:
        maintype, _, subtype = content_type.partition("/")
        msg.add_attachment(
            content,
            maintype=maintype or "application",
            subtype=subtype or "octet-stream",
            filename=header_safe(filename),
        )
    for part in msg.walk():
        if part.is_multipart():
            # Ours, so the generator need not search the whole message for a boundary it made
            # up (a regular expression compiled per email): "=_" appears neither in
            # quoted-printable (which writes "=" as "=3D") nor in base64.
            part.set_boundary(f"=_{secrets.token_hex(16)}")
    raw = msg.as_bytes()
    _verify_headers(msg, raw)
    return raw


def _verify_headers(msg: EmailMessage, raw: bytes) -> None:
    wanted = sorted(k.lower() for k in msg if k.lower() not in ("content-type", "mime-version"))
    head = raw.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n"
    parsed = BytesParser(policy=policy.compat32).parsebytes(head, headersonly=True)
    got = sorted(
        k.lower()
        for k in parsed
        if k.lower() not in ("content-type", "mime-version", "content-transfer-encoding")
    )
    wanted = [k for k in wanted if k != "content-transfer-encoding"]
    if got != wanted:
        raise UnsafeHeader(f"headers changed in composing: {got} != {wanted}")
