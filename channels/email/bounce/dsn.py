"""RFC 3464 delivery status notifications: the machine-readable `message/delivery-status` part.

Most modern MTAs (Postfix, Exim 4.9x, Sendmail, Gmail, Exchange/Office 365) send one; where it
is present it is authoritative over the human-readable text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.message import Message
from email.parser import HeaderParser

from channels.email.bounce.text import (
    SMTP_CODE_RE,
    STATUS_RE,
    clean_addr,
    content_type,
    part_text,
    raw_payload,
    short,
    walk_outer,
)
from channels.email.headers import header_text


@dataclass
class DsnRecipient:
    address: str
    action: str
    status: str
    diagnostic: str


def dsn_blocks(part: Message) -> list[Message]:
    payload = raw_payload(part)
    if isinstance(payload, list) and all(isinstance(p, Message) for p in payload):
        return list(payload)
    # Malformed or transfer-encoded reports arrive as a string: split into header blocks.
    text = part_text(part).replace("\r\n", "\n")
    return [HeaderParser().parsestr(b.strip() + "\n") for b in re.split(r"\n\s*\n", text) if b]


def typed_address(value: str) -> str | None:
    # "rfc822; user@example.com" -- the address type is irrelevant to us.
    _, _, rest = value.partition(";")
    return clean_addr(rest or value)


def parse_dsn(part: Message) -> list[DsnRecipient]:
    recipients: list[DsnRecipient] = []
    for block in dsn_blocks(part):
        final = header_text(block, "Final-Recipient")
        original = header_text(block, "Original-Recipient")
        # Original-Recipient is the address we actually wrote to, before forwarding/aliasing.
        address = typed_address(original) if original else None
        address = address or (typed_address(final) if final else None)
        if not address:
            continue
        status = header_text(block, "Status")
        # Some old MTAs write an SMTP reply code ("553 Exceeded maximum ...") as the status.
        status_match = STATUS_RE.search(status) or SMTP_CODE_RE.match(status.strip())
        diagnostic = header_text(block, "Diagnostic-Code")
        _, sep, rest = diagnostic.partition(";")
        recipients.append(
            DsnRecipient(
                address=address,
                action=header_text(block, "Action").strip().lower(),
                status=status_match.group(0).strip() if status_match else "",
                diagnostic=short(rest if sep else diagnostic),
            )
        )
    return recipients


def dsn_is_permanent(rcpt: DsnRecipient) -> bool | None:
    """True/False for a failure, None for a success notice (delivered, relayed, expanded)."""
    if rcpt.status:
        if rcpt.status.startswith("5"):
            return True
        if rcpt.status.startswith("4"):
            return False
    if rcpt.action.startswith(("fail", "error")):  # and "failure", "error" of some old MTAs
        return True
    if rcpt.action.startswith("delayed"):
        return False
    return None


def report_parts(msg: Message) -> list[Message]:
    found: list[Message] = []
    for part in walk_outer(msg):
        ctype = content_type(part)
        if ctype in ("message/delivery-status", "message/global-delivery-status"):
            found.append(part)
    return found


def is_dsn_report(msg: Message) -> bool:
    for part in walk_outer(msg):
        if content_type(part) == "multipart/report":
            report_type = part.get_param("report-type")
            if isinstance(report_type, str) and report_type.lower() in (
                "delivery-status",
                "global-delivery-status",
            ):
                return True
    return False
