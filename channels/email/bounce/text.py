"""Tolerant reading of a bounce: its MIME parts, the notification text, addresses, sender.

Bounces are frequently malformed (broken charsets, missing boundaries, headers in the body);
every helper here degrades to an empty answer instead of raising.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable, Iterator
from email.message import Message
from email.utils import parseaddr

from channels.email.addresses import header_addresses, raw_values
from channels.email.headers import header_text

MAX_DIAGNOSTIC = 200
MAX_RETURNED_IDS = 20
# Bounces can carry the whole original message, attachments included; the heuristics only
# need the notification text, so cap what is scanned to keep regexes cheap on hostile input.
MAX_TEXT = 200_000

ADDR_RE = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)+")
STATUS_RE = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
SMTP_CODE_RE = re.compile(r"(?<![\d.])([245])\d\d(?:[ -]|$)")
MESSAGE_ID_RE = re.compile(r"^[ \t>]*Message-ID:[ \t]*(<[^<>\s]+>|[^\s<>@]+@[^\s<>]+)", re.I | re.M)

DAEMON_LOCALPARTS = frozenset(
    {"mailer-daemon", "mailer_daemon", "mailerdaemon", "postmaster", "mail-daemon", "mdaemon"}
)
# Local parts and display names that only mail software uses for its notices: the MTA's own
# daemon, an SMTP service, a gateway's virus scanner, a system administrator account.
DAEMON_LOCAL_RE = re.compile(
    r"mailer[-_.]?daemon|postmaster|mail[-_.]?daemon|mdaemon|microsoftexchange|smtp"
    r"|antivirus|mail[-_.]?(?:delivery|system|service|gateway)|system[-_. ]administrator",
    re.I,
)
RETURN_PATH_LOCAL_RE = re.compile(r"(?:^|[-+_.])bounces?(?:$|[-+_.=])", re.I)
_DAEMON_DISPLAY_RE = re.compile(
    r"mail delivery|mailer[-_ ]daemon|postmaster|mail (?:delivery )?(?:system|subsystem)"
    r"|system administrator|mail administrator",
    re.I,
)


def raw_payload(part: Message) -> object:
    """``part.get_payload()``, which itself raises on some broken charset parameters."""
    try:
        return part.get_payload()
    except (LookupError, UnicodeError, ValueError, TypeError, AssertionError):
        return None


def part_text(part: Message) -> str:
    """Decoded text of a non-multipart part ('' when it has none)."""
    try:
        payload = part.get_payload(decode=True)
    except (LookupError, UnicodeError, ValueError, TypeError, AssertionError):
        payload = None
    if isinstance(payload, bytes):
        charset = "utf-8"
        with contextlib.suppress(LookupError, UnicodeError, ValueError, TypeError):
            charset = part.get_content_charset() or "utf-8"
        try:
            text = payload.decode(charset, errors="replace")
        except (LookupError, UnicodeError, ValueError, TypeError):
            text = payload.decode("utf-8", errors="replace")
    else:
        raw = raw_payload(part)
        text = raw if isinstance(raw, str) else ""
    return text[:MAX_TEXT]


def content_type(part: Message) -> str:
    try:
        return part.get_content_type()
    except (LookupError, UnicodeError, ValueError, TypeError, AttributeError):
        return "text/plain"


def walk_outer(msg: Message) -> Iterator[Message]:
    """Walk the MIME tree without descending into attached messages.

    An attached message/rfc822 is the *original* mail (or, when a human forwards a bounce, the
    bounce itself); its parts must never be mistaken for the notification.
    """
    stack = [msg]
    seen = 0
    while stack and seen < 500:
        part = stack.pop()
        seen += 1
        yield part
        ctype = content_type(part)
        if ctype.startswith("message/"):
            continue
        payload = raw_payload(part)
        if isinstance(payload, list):
            stack.extend(reversed([p for p in payload if isinstance(p, Message)]))


def notification_text(msg: Message) -> str:
    """The human-readable notification: text/plain parts outside attached messages."""
    texts: list[str] = []
    html: list[str] = []
    for part in walk_outer(msg):
        ctype = content_type(part)
        # A multipart whose boundary is missing or never used is one undivided text.
        if ctype == "text/plain" or (
            ctype.startswith("multipart/") and isinstance(raw_payload(part), str)
        ):
            texts.append(part_text(part))
        elif ctype == "text/html":
            html.append(part_text(part))
    if not any(t.strip() for t in texts) and html:
        # Some Exchange NDRs ship HTML only; a crude strip is enough for pattern matching.
        stripped = re.sub(r"(?i)<br\s*/?>|</p>|</div>|</tr>", "\n", "\n".join(html))
        stripped = re.sub(r"<[^<>]*>", " ", stripped)
        stripped = re.sub(r"&lt;", "<", stripped)
        stripped = re.sub(r"&gt;", ">", stripped)
        stripped = re.sub(r"&nbsp;|&#160;", " ", stripped)
        stripped = re.sub(r"&amp;", "&", stripped)
        texts.append(stripped)
    return "\n".join(texts)[:MAX_TEXT].replace("\r\n", "\n")


def clean_addr(value: str) -> str | None:
    match = ADDR_RE.search(value)
    if not match:
        return None
    address = match.group(0).strip(".").lower()
    # A dot-atom never has two dots in a row: "david...@gmail.com" is an archive's elision of
    # an address, not one we could have written to.
    return None if ".." in address.partition("@")[0] else address


def dedupe(addrs: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(a for a in addrs if a))


def short(text: str) -> str:
    text = " ".join(text.split())
    if len(text) > MAX_DIAGNOSTIC:
        text = text[: MAX_DIAGNOSTIC - 3].rstrip() + "..."
    return text


def normalise_message_id(value: str) -> str | None:
    value = value.strip()
    match = re.search(r"<([^<>\s]+)>", value)
    if match:
        return f"<{match.group(1)}>"
    token = value.split()[0] if value.split() else ""
    return f"<{token}>" if "@" in token else None


def machine_written(msg: Message) -> bool:
    """Whether the mail says a program wrote it (not which): weaker than a daemon's sender,
    since an out-of-office reply says so too."""
    # RFC 3834's mark of machine-written mail, and the old Precedence of bulk notices.
    if header_text(msg, "Auto-Submitted").strip().lower().startswith("auto-"):
        return True
    if header_text(msg, "Precedence").strip().lower() in ("bulk", "junk"):
        return True
    # Written to a return path (a list's `-bounces` address, our `bounces+<token>`): people
    # answer the From or Reply-To; only mail software answers the envelope sender.
    return any(
        RETURN_PATH_LOCAL_RE.search(addr.rpartition("@")[0])
        for name in ("To", "Cc")
        for addr in header_addresses(msg, name).addresses
    )


def sender_is_daemon(msg: Message) -> bool:
    """Whether the mail comes from a mail daemon (not merely from a program)."""
    # An empty Return-Path is the SMTP marker for a notification (RFC 5321 4.5.5); a daemon's
    # own address there says the same.
    for value in msg.get_all("Return-Path") or []:
        path = str(value).strip()
        if path in ("<>", "") or DAEMON_LOCAL_RE.search(parseaddr(path)[1].rpartition("@")[0]):
            return True
    for name in ("From", "Sender"):
        raw = raw_values(msg, name)
        # `Postmaster <>`: a notice signed with the null sender.
        if any(re.search(r"<\s*>", v) for v in raw):
            return True
        field = header_addresses(msg, name)
        # Some daemons write a name without a domain (`<MAILER-DAEMON>`): the raw text counts.
        addrs = field.addresses or [parseaddr(v)[1] for v in raw]
        # `<Postmaster\@host@relay>` reads as no address at all: its words still count.
        addrs = [a for a in addrs if a] or [v.rpartition("@")[0] for v in field.unreadable]
        for addr in addrs:
            local = addr.rpartition("@")[0] if "@" in addr else addr
            if DAEMON_LOCAL_RE.search(local):
                return True
        if _DAEMON_DISPLAY_RE.search(" ".join(m.name for m in field.mailboxes)):
            return True
    return False


# A challenge-response filter's refusal: the address exists and waits for the sender to
# confirm, so it is no verdict on the address.
CHALLENGE_RE = re.compile(
    r"requires? (?:your )?confirmation|whitelist|challenge[-/ ]response"
    r"|confirm (?:this|your) (?:mail server|sender|address|e-?mail|message)",
    re.I,
)
