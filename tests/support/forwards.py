"""Forwards as mail clients write them: Gmail, Outlook (English, German, French, Spanish, and
Outlook on the web's HTML), Apple Mail, and a forward as an attachment (message/rfc822).

The layouts follow the clients' real output (and the public samples under
tests/corpora/quotequail): Gmail's dashed line with From/Date/Subject/To and an HTML
alternative, Outlook's rule and From/Sent/To/Subject block with localised field names and no
time zone, Apple Mail's "Begin forwarded message:" with a zoned date.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from html import escape

# When the forward is sent: its Date, in the agent's zone (Outlook writes the forwarded date in
# it, without a zone).
FORWARDED_AT = dt.datetime(2026, 11, 30, 10, 0, tzinfo=dt.timezone(dt.timedelta(hours=1)))
# When the customer wrote: 09:15 in the agent's zone.
WRITTEN_AT = dt.datetime(2026, 11, 30, 8, 15, tzinfo=dt.UTC)


@dataclass(frozen=True)
class Original:
    """The customer's mail as the agent received it."""

    name: str
    address: str
    subject: str
    text: str


# Every style with the locale its labels are in.
STYLES = {
    "gmail": "en",
    "outlook": "en",
    "outlook-de": "de",
    "outlook-fr": "fr",
    "outlook-es": "es",
    "outlook-web": "en",  # HTML only
    "apple": "en",
    "attachment": "en",
}

_OUTLOOK = {
    # (from, sent, to, subject) labels, the date as that Outlook writes it, a "[mailto:]" From
    "outlook": ("From", "Sent", "To", "Subject", "Monday, November 30, 2026 9:15 AM", False),
    "outlook-de": ("Von", "Gesendet", "An", "Betreff", "Montag, 30. November 2026 09:15", True),
    "outlook-fr": ("De", "Envoyé", "À", "Objet", "lundi 30 novembre 2026 09:15", False),
    "outlook-es": (
        "De",
        "Enviado el",
        "Para",
        "Asunto",
        "lunes, 30 de noviembre de 2026 9:15",
        True,
    ),
}
_FORWARD_PREFIX = {"en": "Fwd", "de": "WG", "fr": "TR", "es": "RV"}


def forwarded_body(style: str, note: str, original: Original, agent: str) -> str:
    """The text/plain body of an inline forward."""
    who = f"{original.name} <{original.address}>"
    if style == "gmail":
        return (
            f"{note}\n\n---------- Forwarded message ---------\n"
            f"From: {who}\nDate: Mon, Nov 30, 2026 at 9:15 AM\nSubject: {original.subject}\n"
            f"To: {agent}\n\n\n{original.text}\n"
        )
    if style == "apple":
        return (
            f"{note}\n\nBegin forwarded message:\n\n"
            f"From: {who}\nSubject: {original.subject}\n"
            f"Date: 30 November 2026 at 09:15:00 GMT+1\nTo: {agent}\n\n{original.text}\n"
        )
    sender, sent, to, subject, date, mailto = _OUTLOOK[style]
    if mailto:
        who = f"{original.name} [mailto:{original.address}]"
    pad = " " if style == "outlook-fr" else ""  # French Outlook puts a space before the colon
    return (
        f"{note}\n\n________________________________\n"
        f"{sender}{pad}: {who}\n{sent}{pad}: {date}\n{to}{pad}: {agent}\n"
        f"{subject}{pad}: {original.subject}\n\n{original.text}\n"
    )


def _outlook_web_html(note: str, original: Original, agent: str) -> str:
    """Outlook on the web: HTML only; a rule, then the bold From/Sent/To/Subject block."""
    paragraphs = "".join(f"<p>{escape(line)}</p>" for line in original.text.splitlines())
    return (
        f'<html><body><div style="font-family:Calibri">{escape(note)}</div>'
        '<div id="appendonsend"></div><hr style="display:inline-block;width:98%">'
        '<div id="divRplyFwdMsg" dir="ltr"><font face="Calibri, sans-serif">'
        f"<b>From:</b> {escape(original.name)} &lt;{escape(original.address)}&gt;<br>"
        "<b>Sent:</b> Monday, November 30, 2026 9:15 AM<br>"
        f"<b>To:</b> {escape(agent)}<br><b>Subject:</b> {escape(original.subject)}</font>"
        f"<div>&nbsp;</div></div><div>{paragraphs}</div></body></html>"
    )


def forward(
    style: str,
    *,
    from_addr: str,
    to_addr: str,
    note: str,
    original: Original,
    headers: tuple[tuple[str, str], ...] = (),
) -> EmailMessage:
    """The agent's forward of `original` to `to_addr`, as the client of `style` sends it."""
    msg = EmailMessage()
    for name, value in headers:
        msg[name] = value
    msg["From"] = from_addr
    msg["To"] = to_addr
    msg["Subject"] = f"{_FORWARD_PREFIX[STYLES[style]]}: {original.subject}"
    msg["Date"] = format_datetime(FORWARDED_AT)
    msg["Message-ID"] = make_msgid(
        idstring=uuid.uuid4().hex, domain=from_addr.rpartition("@")[2].strip(">")
    )
    if style == "attachment":
        msg.set_content(f"{note}\n")
        inner = EmailMessage()
        inner["From"] = f"{original.name} <{original.address}>"
        inner["To"] = from_addr
        inner["Subject"] = original.subject
        inner["Date"] = format_datetime(WRITTEN_AT)
        inner["Message-ID"] = make_msgid(idstring=uuid.uuid4().hex, domain="customer.test")
        inner.set_content(original.text)
        msg.add_attachment(inner)  # message/rfc822, as Outlook's and Gmail's "as attachment"
        return msg
    if style == "outlook-web":
        msg.set_content(_outlook_web_html(note, original, from_addr), subtype="html")
        return msg
    msg.set_content(forwarded_body(style, note, original, from_addr))
    if style == "gmail":
        # Gmail sends an HTML alternative with the block in a gmail_quote div.
        block = forwarded_body(style, "", original, from_addr).strip()
        html = "<br>".join(escape(line) for line in block.splitlines())
        msg.add_alternative(
            f'<div dir="ltr">{escape(note)}<br><br><div class="gmail_quote">{html}</div></div>',
            subtype="html",
        )
    return msg
