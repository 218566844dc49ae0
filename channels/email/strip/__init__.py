"""Separate the new text of an inbound email from quoted history and signatures.

Support agents and the chat thread only need what the customer wrote this time,
not the whole conversation that every mail client appends below (or above) the
reply. This module finds the start of the quoted history in plain text and in
HTML bodies from the common clients (Gmail, Outlook desktop/web/mobile, Apple
Mail, Thunderbird, Yahoo, phone clients) in a dozen languages, and cuts the
RFC 3676 ``-- `` signature and "Sent from my iPhone"-style lines.

Nothing is ever thrown away: what was cut is returned next to the reply so an
agent can always expand it. The heuristics are deliberately conservative --
keeping a few lines of history is cheap, losing a customer's sentence is not --
so forwards, inline (interleaved) replies and anything ambiguous are kept whole.

All matching is line based with length-bounded patterns, so the cost stays
linear in the size of the message whatever it contains.
"""

from __future__ import annotations

import logging
import re

from channels.email.strip.html import _strip_html, html_to_text
from channels.email.strip.markers import header_field, is_forward_marker, is_original_message_marker
from channels.email.strip.text import Stripped, _keep_all, _strip_text

__all__ = [
    "Stripped",
    "header_field",
    "html_to_text",
    "is_forward_marker",
    "is_forward_subject",
    "is_original_message_marker",
    "strip_reply",
]

log = logging.getLogger(__name__)


def _strip_reply_impl(text: str | None, html: str | None) -> Stripped:
    if text is not None and text.strip():
        from_text = _strip_text(text)
        if from_text.quoted or from_text.forwarded or not html:
            return from_text
        # The text alternative of some clients drops the quote markers that the
        # HTML part still carries in its containers.
        from_html, has_container = _strip_html(html)
        if has_container and (from_html.quoted or from_html.forwarded):
            return from_html
        return from_text
    if html:
        return _strip_html(html)[0]
    return _keep_all(text or "")


# The first prefix of a forward's subject, as the clients of the languages above write it.
# Outlook writes its "-----Original Message-----" block for a forward as for a reply, so the
# subject is the only sign. ("VS" is a forward in Danish and Norwegian Outlook.)
_FORWARD_SUBJECT_RE = re.compile(
    r"^\s*(?:fwd?|wg|tr|rv|enc|vs|vb|doorst|pd|пересл)\s*(?:\[\d+\])?\s*:", re.IGNORECASE
)


def is_forward_subject(subject: str | None) -> bool:
    return bool(subject and _FORWARD_SUBJECT_RE.match(subject))


def strip_reply(text: str | None, html: str | None = None, subject: str | None = None) -> Stripped:
    """Split an inbound message body into new text, quoted history and signature.

    ``text`` (the text/plain part) is preferred; ``html`` is used when there is
    no text, or when only the HTML carries a recognisable quote container. A
    ``subject`` that marks a forward keeps the whole body: what looks like
    quoted history is the forwarded message the customer wants us to read.
    """
    try:
        result = _strip_reply_impl(text, html)
        if result.quoted and is_forward_subject(subject):
            whole = text if text is not None and text.strip() else html_to_text(html or "")
            return _keep_all(whole, forwarded=True)
        return result
    except Exception:
        # A stripping bug must never drop an inbound message: fall back to the
        # unstripped body and leave a trace for fixing the heuristic.
        log.exception("strip_reply failed; keeping the whole body")
        if text is not None and text.strip():
            return _keep_all(text)
        return _keep_all(html or "")
