"""Recognise automatically generated mail (auto-replies, lists, daemons) among inbound mail.

The gateway answers customers automatically in places (acknowledgements, chat-voiced replies).
Answering an out-of-office reply, a mailing list or a mail daemon starts mail loops and spams
people, so RFC 3834 says a responder must not reply to such mail.  ``auto_reply_reason``
returns a short reason naming the first signal that fired, for logs and for the ticket view,
or None for mail that looks like a human wrote it.

Header signals are checked before the subject heuristics because they are set by software on
purpose; subject matching is the fallback for clients that set no header, and is anchored at
the start of the subject so a customer writing "Re: your reply" is not silenced.

The input is a ``Message`` parsed with the compat32 policy; the function never raises.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from email.message import Message
from email.utils import parseaddr

from channels.email.addresses import header_addresses, raw_values
from channels.email.headers import header_text

__all__ = ["auto_reply_reason"]

log = logging.getLogger(__name__)

_PRECEDENCE_AUTO = frozenset({"bulk", "junk", "list", "auto_reply"})
# Exchange stamps OOF replies with these; RN/NRN/DR alone appear on ordinary Outlook mail.
_SUPPRESS_AUTO = frozenset({"all", "oof", "autoreply"})
_DAEMON_LOCALPARTS = {
    "mailer-daemon": "mailer-daemon sender",
    "mailer_daemon": "mailer-daemon sender",
    "mailerdaemon": "mailer-daemon sender",
    "postmaster": "postmaster sender",
}
_NOREPLY_RE = re.compile(r"^(?:no[-_.]?reply|do[-_.]?not[-_.]?reply)(?:[-_.+].*)?$")

# Phrases clients put at the start of an automatic reply's subject, one alternative per
# language variant.  Accents are optional because some clients and gateways strip them.
_OOF_PHRASES = (
    # English
    r"out of (?:the )?office",
    r"automatic reply",
    r"auto[- ]?reply",
    r"auto[- ]?response",
    r"automatic response",
    r"away from (?:the |my )?(?:office|desk)",
    r"away from\b",
    r"on vacation",
    r"vacation reply",
    # German
    r"abwesenheitsnotiz",
    r"automatische antwort",
    r"abwesend",
    r"nicht im b[üu]ro",
    # French
    r"r[ée]ponse automatique",
    r"absence du bureau",
    r"absent(?:e)? du bureau",
    # Spanish
    r"respuesta autom[áa]tica",
    r"fuera de (?:la )?oficina",
    # Italian
    r"risposta automatica",
    r"fuori sede",
    r"fuori ufficio",
    # Dutch
    r"automatisch antwoord",
    r"afwezig",
    # Portuguese
    r"resposta autom[áa]tica",
    r"ausente",
    # Polish
    r"odpowied[źz] automatyczna",
    r"automatyczna odpowied[źz]",
    # Swedish, Danish, Norwegian
    r"autosvar",
    r"fr[åa]nvaro",
    r"frav[æa]rende",
    r"frav[æa]rsmelding",
    r"automatisk svar",
    # Russian
    r"автоматический ответ",
    r"автоответ",
    r"нет на месте",
)
_OOF_SUBJECT_RE = re.compile(
    # Anchored at the start, after an optional "AUTO:"/"[Auto]"-style tag some clients add;
    # the phrase must end at a word boundary so "Autoreplyer settings?" is not a hit.
    r"^\W*(?:auto\s*:\s*|\[auto[^\]]*\]\s*)?(?:" + "|".join(_OOF_PHRASES) + r")(?!\w)",
    re.I,
)
# Lotus Notes puts the phrase mid-subject: "John Smith is out of the office."
_OOF_ANYWHERE_RE = re.compile(
    r"\bis (?:currently )?out of (?:the )?office\b|[\[(]auto[- ]?reply[\])]", re.I
)


def _has(msg: Message, name: str) -> bool:
    return msg.get(name) is not None


def _local_part(addr: str) -> str:
    return addr.rpartition("@")[0].strip().lower() if "@" in addr else addr.strip().lower()


def _sender_addresses(msg: Message, envelope_from: str | None) -> list[str]:
    """From and Sender read as addresses (never their display names), and the envelope."""
    out: list[str] = []
    for name in ("From", "Sender"):
        field = header_addresses(msg, name)
        out.extend(field.addresses)
        if not field.mailboxes:
            # Some daemons write a name without a domain (`<MAILER-DAEMON>`); still raw text.
            out.extend(parseaddr(v)[1] or v for v in raw_values(msg, name))
    if envelope_from:
        out.append(envelope_from)
    return out


def auto_reply_reason(msg: Message, envelope_from: str | None = None) -> str | None:
    """Name the signal that marks ``msg`` as automatic, or None if it looks human-written.

    ``envelope_from`` is the SMTP MAIL FROM when known ('' for the null sender, None when the
    message came from somewhere without an envelope, e.g. IMAP).
    """
    try:
        return _reason(msg, envelope_from)
    except Exception:  # a broken header must not take down the inbound pipeline
        log.exception("auto-reply detection failed; treating message as human mail")
        return None


def _reason(msg: Message, envelope_from: str | None) -> str | None:
    auto_submitted = header_text(msg, "Auto-Submitted").strip()
    if auto_submitted:
        keyword = auto_submitted.split(";", 1)[0].strip().lower()
        if keyword and keyword != "no":
            return f"Auto-Submitted: {keyword}"

    for name in ("X-Autoreply", "X-Autorespond", "X-Autoresponder"):
        if _has(msg, name) and header_text(msg, name).strip().lower() not in ("no", "false", "0"):
            return name

    suppress = header_text(msg, "X-Auto-Response-Suppress").lower()
    if _SUPPRESS_AUTO & {v.strip() for v in suppress.split(",")}:
        return "X-Auto-Response-Suppress"

    precedence = header_text(msg, "Precedence").strip().lower()
    if precedence in _PRECEDENCE_AUTO:
        return f"Precedence: {precedence}"

    if _has(msg, "List-Id"):
        return "List-Id"
    if _has(msg, "List-Unsubscribe"):
        return "List-Unsubscribe"

    if envelope_from is not None and envelope_from.strip() in ("", "<>"):
        return "empty return path"
    for value in msg.get_all("Return-Path") or []:
        if str(value).strip() == "<>":
            return "empty return path"

    for sender in _sender_addresses(msg, envelope_from):
        local = _local_part(sender)
        if local in _DAEMON_LOCALPARTS:
            return _DAEMON_LOCALPARTS[local]
        if _NOREPLY_RE.match(local):
            return "no-reply sender"

    subject = unicodedata.normalize("NFC", " ".join(header_text(msg, "Subject").split()))
    if _OOF_SUBJECT_RE.search(subject) or _OOF_ANYWHERE_RE.search(subject):
        return "out-of-office subject"
    return None
