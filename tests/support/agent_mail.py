"""Agents' answers as real mail clients write them, and a DKIM signer with its DNS records.

The three quoting styles are those of Gmail ("On ... wrote:" and `>` lines), Outlook (a rule
and a From/Sent/To/Subject block, nothing quoted with `>`) and Apple Mail (the attribution
inside the `>` quote). DKIM keys are generated with the openssl CLI and signed with dkimpy,
exactly as a sending mail server would; tests.support.dns_server publishes their TXT records.
"""

from __future__ import annotations

import base64
import datetime as dt
import shutil
import subprocess
import uuid
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from html import escape
from pathlib import Path
from typing import Any

import dkim

STYLES = ("gmail", "outlook", "apple", "outlook-web")
HTML_ONLY = "outlook-web"  # Outlook on the web sends HTML only


def quoted_reply_html(new_text: str, notification_from: str, quoted: str) -> str:
    """Outlook on the web: the answer, a rule, a From/Sent/To/Subject block, the quote."""
    paragraphs = "".join(f"<div>{escape(line)}</div>" for line in new_text.splitlines())
    quoted_html = "".join(f"<p>{escape(line)}</p>" for line in quoted.splitlines() if line)
    return (
        f'<html><body><div style="font-family:Calibri">{paragraphs}</div>'
        '<div id="appendonsend"></div><hr style="display:inline-block;width:98%">'
        '<div id="divRplyFwdMsg" dir="ltr"><font face="Calibri, sans-serif">'
        f"<b>From:</b> {escape(notification_from)}<br>"
        "<b>Sent:</b> Sunday, November 29, 2026 10:00 AM<br>"
        "<b>Subject:</b> New message</font><div>&nbsp;</div></div>"
        f"<div>{quoted_html}</div></body></html>"
    )


def quoted_reply(style: str, new_text: str, notification_from: str, quoted: str) -> str:
    when = "Sun, Nov 29, 2026 at 10:00 AM"
    if style == "gmail":
        lines = "\n".join(f"> {line}" if line else ">" for line in quoted.splitlines())
        return f"{new_text}\n\nOn {when} {notification_from} wrote:\n{lines}\n"
    if style == "outlook":
        return (
            f"{new_text}\n\n________________________________\n"
            f"From: {notification_from}\nSent: Sunday, November 29, 2026 10:00 AM\n"
            f"To: Agent <agent@agents.test>\nSubject: New message\n\n{quoted}\n"
        )
    if style == "apple":
        lines = "\n".join(f"> {line}" if line else ">" for line in quoted.splitlines())
        return f"{new_text}\n\n> On 29 Nov 2026, at 10:00, {notification_from} wrote:\n>\n{lines}\n"
    raise ValueError(style)


def agent_mail(
    *,
    from_addr: str,
    to_addr: str,
    body: str,
    subject: str = "Re: New message",
    style: str = "gmail",
    notification_from: str = "Acme Support <support@acme.test>",
    quoted: str = "Sam wrote:\nMy order never arrived\n\nReply above this line.",
    attachments: tuple[tuple[str, str, bytes], ...] = (),
    headers: tuple[tuple[str, str], ...] = (),
    html: bool = False,
) -> EmailMessage:
    msg = EmailMessage()
    for name, value in headers:
        msg[name] = value
    msg["From"] = from_addr
    msg["To"] = to_addr
    msg["Subject"] = subject
    msg["Date"] = format_datetime(dt.datetime(2026, 11, 29, 10, 5, tzinfo=dt.UTC))
    # make_msgid's random part comes from `random`, which Hypothesis seeds the same for every
    # example: two examples within 10 ms got one Message-ID (and the second was a duplicate).
    msg["Message-ID"] = make_msgid(
        idstring=uuid.uuid4().hex, domain=from_addr.rpartition("@")[2].strip(">")
    )
    if style == HTML_ONLY:
        msg.set_content(quoted_reply_html(body, notification_from, quoted), subtype="html")
    else:
        msg.set_content(quoted_reply(style, body, notification_from, quoted))
    if html and style != HTML_ONLY:
        paragraphs = "".join(f"<p>{line}</p>" for line in body.splitlines() if line)
        msg.add_alternative(
            f'<div dir="ltr">{paragraphs}</div><div class="gmail_quote">'
            f"<blockquote>{quoted}</blockquote></div>",
            subtype="html",
        )
    for filename, ctype, content in attachments:
        maintype, subtype = ctype.split("/")
        msg.add_attachment(content, maintype=maintype, subtype=subtype, filename=filename)
    return msg


@dataclass
class DkimKeys:
    """RSA keys per (selector, domain), and the DNS TXT records that publish them."""

    directory: Path
    keys: dict[tuple[str, str], bytes] = field(default_factory=dict)
    records: dict[bytes, bytes] = field(default_factory=dict)
    dns: Any = None  # the TXT lookup that reaches the server publishing `records`, once set

    def add(self, domain: str, selector: str = "s1") -> None:
        openssl = shutil.which("openssl")
        assert openssl, "the openssl CLI is needed to make DKIM keys"
        path = self.directory / f"{selector}.{domain}.pem"
        subprocess.run(
            [openssl, "genrsa", "-traditional", "-out", str(path), "1024"],
            check=True,
            capture_output=True,
        )
        public = subprocess.run(
            [openssl, "rsa", "-in", str(path), "-pubout", "-outform", "DER"],
            check=True,
            capture_output=True,
        ).stdout
        self.keys[(selector, domain)] = path.read_bytes()
        name = f"{selector}._domainkey.{domain}.".encode()
        self.records[name] = b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)

    def sign(self, raw: bytes, domain: str, selector: str = "s1") -> bytes:
        signature = dkim.sign(
            raw,
            selector.encode(),
            domain.encode(),
            self.keys[(selector, domain)],
            include_headers=[b"from", b"to", b"subject", b"date", b"message-id"],
        )
        return signature + raw

    def txt_records(self) -> dict[str, bytes]:
        """For tests.support.dns_server.TxtServer."""
        return {name.decode(): value for name, value in self.records.items()}
