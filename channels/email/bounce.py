"""Recognise bounces (delivery status notifications) among inbound mail.

The gateway sends replies to customers; when one of them cannot be delivered the remote MTA
sends a bounce back to our return path.  ``detect_bounce`` turns such a message into a
``Bounce`` saying which recipients failed, whether the failure is final, and which of our
outgoing messages it concerns, so the conversation can be marked instead of a bounce being
threaded into it as if a customer had written.

Two kinds of input are handled:

* RFC 3464 reports (``multipart/report; report-type=delivery-status``), which most modern MTAs
  send (Postfix, Exim 4.9x, Sendmail, Gmail, Exchange/Office 365 ...).  The machine-readable
  ``message/delivery-status`` part is authoritative.
* The older free-text notices of Postfix, Exim, qmail, Exchange, Gmail and Yahoo, and a generic
  fallback.  These are only believed when the sender is a mail daemon (``MAILER-DAEMON``,
  ``postmaster``, empty ``Return-Path``) *and* the body has a known layout, so a customer who
  writes "my mail to you failed" is never taken for a bounce.

The input is a ``Message`` parsed with the compat32 policy; everything here is defensive
because bounces are frequently malformed, and ``detect_bounce`` never raises.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from email.message import Message
from email.parser import HeaderParser
from email.utils import parseaddr

from channels.email.addresses import header_addresses, raw_values
from channels.email.headers import header_text

__all__ = ["Bounce", "detect_bounce"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Bounce:
    """What a bounce tells us about one of our outgoing messages."""

    # True for 5.x.x / hard failures, False for 4.x.x / delayed.  With an RFC 3464 status code
    # the code's class decides, even for ``Action: failed``: a 4.4.7 "expired" means the
    # message is lost but says nothing bad about the address, and callers use this flag to
    # decide whether to stop mailing an address.
    permanent: bool
    recipients: tuple[str, ...]
    family: str
    # Always in ``<...>`` form so it compares equal to the Message-ID we stored when sending.
    original_message_id: str | None
    diagnostic: str
    # Every Message-ID of what the bounce returns: the attached original or its headers, the
    # original quoted in the text, and the report's X-Original-Message-ID; never the bounce's
    # own In-Reply-To or References. Only these can tie a bounce to one of our emails.
    returned_message_ids: tuple[str, ...] = ()


# --- small tolerant helpers -------------------------------------------------------------------

_MAX_DIAGNOSTIC = 200
_MAX_RETURNED_IDS = 20
# Bounces can carry the whole original message, attachments included; the heuristics only
# need the notification text, so cap what is scanned to keep regexes cheap on hostile input.
_MAX_TEXT = 200_000

_ADDR_RE = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)+")
_STATUS_RE = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
_SMTP_CODE_RE = re.compile(r"(?<![\d.])([245])\d\d(?:[ -]|$)")
_MESSAGE_ID_RE = re.compile(
    r"^[ \t>]*Message-ID:[ \t]*(<[^<>\s]+>|[^\s<>@]+@[^\s<>]+)", re.I | re.M
)

_DAEMON_LOCALPARTS = frozenset(
    {"mailer-daemon", "mailer_daemon", "mailerdaemon", "postmaster", "mail-daemon", "mdaemon"}
)


def _raw_payload(part: Message) -> object:
    """``part.get_payload()``, which itself raises on some broken charset parameters."""
    try:
        return part.get_payload()
    except (LookupError, UnicodeError, ValueError, TypeError, AssertionError):
        return None


def _part_text(part: Message) -> str:
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
        raw = _raw_payload(part)
        text = raw if isinstance(raw, str) else ""
    return text[:_MAX_TEXT]


def _content_type(part: Message) -> str:
    try:
        return part.get_content_type()
    except (LookupError, UnicodeError, ValueError, TypeError, AttributeError):
        return "text/plain"


def _walk_outer(msg: Message) -> Iterator[Message]:
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
        ctype = _content_type(part)
        if ctype.startswith("message/"):
            continue
        payload = _raw_payload(part)
        if isinstance(payload, list):
            stack.extend(reversed([p for p in payload if isinstance(p, Message)]))


def _notification_text(msg: Message) -> str:
    """The human-readable notification: text/plain parts outside attached messages."""
    texts: list[str] = []
    html: list[str] = []
    for part in _walk_outer(msg):
        ctype = _content_type(part)
        if ctype == "text/plain":
            texts.append(_part_text(part))
        elif ctype == "text/html":
            html.append(_part_text(part))
    if not any(t.strip() for t in texts) and html:
        # Some Exchange NDRs ship HTML only; a crude strip is enough for pattern matching.
        stripped = re.sub(r"(?i)<br\s*/?>|</p>|</div>|</tr>", "\n", "\n".join(html))
        stripped = re.sub(r"<[^<>]*>", " ", stripped)
        stripped = re.sub(r"&lt;", "<", stripped)
        stripped = re.sub(r"&gt;", ">", stripped)
        stripped = re.sub(r"&nbsp;|&#160;", " ", stripped)
        stripped = re.sub(r"&amp;", "&", stripped)
        texts.append(stripped)
    return "\n".join(texts)[:_MAX_TEXT].replace("\r\n", "\n")


def _clean_addr(value: str) -> str | None:
    match = _ADDR_RE.search(value)
    if not match:
        return None
    return match.group(0).strip(".").lower()


def _dedupe(addrs: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(a for a in addrs if a))


def _short(text: str) -> str:
    text = " ".join(text.split())
    if len(text) > _MAX_DIAGNOSTIC:
        text = text[: _MAX_DIAGNOSTIC - 3].rstrip() + "..."
    return text


def _normalise_message_id(value: str) -> str | None:
    value = value.strip()
    match = re.search(r"<([^<>\s]+)>", value)
    if match:
        return f"<{match.group(1)}>"
    token = value.split()[0] if value.split() else ""
    return f"<{token}>" if "@" in token else None


def _sender_is_daemon(msg: Message) -> bool:
    # An empty Return-Path is the SMTP marker for a notification (RFC 5321 4.5.5).
    for value in msg.get_all("Return-Path") or []:
        if str(value).strip() in ("<>", ""):
            return True
    for name in ("From", "Sender"):
        field = header_addresses(msg, name)
        # Some daemons write a name without a domain (`<MAILER-DAEMON>`): the raw text counts.
        addrs = field.addresses or [parseaddr(v)[1] for v in raw_values(msg, name)]
        for addr in addrs:
            local = addr.rpartition("@")[0].lower() if "@" in addr else addr.lower()
            if local in _DAEMON_LOCALPARTS or local.startswith("microsoftexchange"):
                return True
        display = " ".join(m.name for m in field.mailboxes).lower()
        if "mail delivery" in display or "mailer-daemon" in display:
            return True
    return False


# --- the original message --------------------------------------------------------------------


def _original_message_id(msg: Message, returned: tuple[str, ...]) -> str | None:
    if returned:
        return returned[0]
    # Last resort, once the message is known to be a bounce: Gmail, Exchange and Exim thread
    # the notice onto the original.
    for name in ("In-Reply-To", "References"):
        mid = _normalise_message_id(header_text(msg, name))
        if mid:
            return mid
    return None


def _returned_message_ids(msg: Message, text: str) -> tuple[str, ...]:
    """Most telling first: the attached original or its headers, then the original quoted
    in a text part (non-MIME bounces quote it below a separator; the bounce's own Message-ID
    is a header, not body text), then Gmail's X-Original-Message-ID in the report."""
    found: list[str | None] = []
    for part in _walk_outer(msg):
        ctype = _content_type(part)
        if ctype in ("message/rfc822", "message/global"):
            payload = _raw_payload(part)
            if isinstance(payload, list) and payload and isinstance(payload[0], Message):
                found.append(_normalise_message_id(header_text(payload[0], "Message-ID")))
            elif isinstance(payload, str):
                inner = HeaderParser().parsestr(_part_text(part))
                found.append(_normalise_message_id(header_text(inner, "Message-ID")))
        elif ctype in ("text/rfc822-headers", "message/rfc822-headers", "message/global-headers"):
            headers = HeaderParser().parsestr(_part_text(part).lstrip())
            found.append(_normalise_message_id(header_text(headers, "Message-ID")))
    for part in _walk_outer(msg):
        if _content_type(part).startswith("text/"):
            found += map(_normalise_message_id, _MESSAGE_ID_RE.findall(_part_text(part)))
    found += map(_normalise_message_id, _MESSAGE_ID_RE.findall(text))
    for report in _report_parts(msg):
        for block in _dsn_blocks(report)[:1]:
            found.append(_normalise_message_id(header_text(block, "X-Original-Message-ID")))
    return tuple(dict.fromkeys(mid for mid in found if mid))[:_MAX_RETURNED_IDS]


# --- RFC 3464 ----------------------------------------------------------------------------------


@dataclass
class _DsnRecipient:
    address: str
    action: str
    status: str
    diagnostic: str


def _dsn_blocks(part: Message) -> list[Message]:
    payload = _raw_payload(part)
    if isinstance(payload, list) and all(isinstance(p, Message) for p in payload):
        return list(payload)
    # Malformed or transfer-encoded reports arrive as a string: split into header blocks.
    text = _part_text(part).replace("\r\n", "\n")
    return [HeaderParser().parsestr(b.strip() + "\n") for b in re.split(r"\n\s*\n", text) if b]


def _typed_address(value: str) -> str | None:
    # "rfc822; user@example.com" -- the address type is irrelevant to us.
    _, _, rest = value.partition(";")
    return _clean_addr(rest or value)


def _parse_dsn(part: Message) -> list[_DsnRecipient]:
    recipients: list[_DsnRecipient] = []
    for block in _dsn_blocks(part):
        final = header_text(block, "Final-Recipient")
        original = header_text(block, "Original-Recipient")
        # Original-Recipient is the address we actually wrote to, before forwarding/aliasing.
        address = _typed_address(original) if original else None
        address = address or (_typed_address(final) if final else None)
        if not address:
            continue
        status_match = _STATUS_RE.search(header_text(block, "Status"))
        diagnostic = header_text(block, "Diagnostic-Code")
        _, sep, rest = diagnostic.partition(";")
        recipients.append(
            _DsnRecipient(
                address=address,
                action=header_text(block, "Action").strip().lower(),
                status=status_match.group(0) if status_match else "",
                diagnostic=_short(rest if sep else diagnostic),
            )
        )
    return recipients


def _dsn_is_permanent(rcpt: _DsnRecipient) -> bool | None:
    """True/False for a failure, None for a success notice (delivered, relayed, expanded)."""
    if rcpt.status:
        if rcpt.status.startswith("5"):
            return True
        if rcpt.status.startswith("4"):
            return False
    if rcpt.action.startswith("failed"):
        return True
    if rcpt.action.startswith("delayed"):
        return False
    return None


def _report_parts(msg: Message) -> list[Message]:
    found: list[Message] = []
    for part in _walk_outer(msg):
        ctype = _content_type(part)
        if ctype in ("message/delivery-status", "message/global-delivery-status"):
            found.append(part)
    return found


def _is_dsn_report(msg: Message) -> bool:
    for part in _walk_outer(msg):
        if _content_type(part) == "multipart/report":
            report_type = part.get_param("report-type")
            if isinstance(report_type, str) and report_type.lower() in (
                "delivery-status",
                "global-delivery-status",
            ):
                return True
    return False


# --- free-text formats -------------------------------------------------------------------------

_WARNING_RE = re.compile(
    r"warning (?:message )?only|will (?:continue to |keep )?(?:be )?retr(?:y|ied)|will keep trying"
    r"|has been delayed|delivery (?:is |has been )?delayed|not yet been delivered"
    r"|(?:hasn't|has not) been delivered yet|delivery incomplete|temporary problem delivering"
    r"|still undelivered|delivery will continue to be attempted|delivery attempts will continue",
    re.I,
)
_WARNING_SUBJECT_RE = re.compile(
    r"\(delay\)|^delayed mail|^warning: message .* delayed|^delivery delayed|"
    r"^delayed:|delivery status notification \(delay\)",
    re.I,
)
# Where the notification ends and the quoted original begins, across the formats below.
_ORIGINAL_MARKER_RE = re.compile(
    r"^[ \t]*(?:-+ ?Below this line is a copy of the message|-+ ?This is a copy of the message"
    r"|-+ ?The header of the original message is following|-+ ?Original message ?-+"
    r"|-+ ?Original Message Headers? ?-+|Original message headers:|-+ ?Returned mail ?-+"
    r"|-+ ?Original message follows|Content-Type: message/rfc822)",
    re.I | re.M,
)


def _notice_part(text: str) -> str:
    match = _ORIGINAL_MARKER_RE.search(text)
    return text[: match.start()] if match else text


def _diagnostic_from(text: str) -> str:
    """The most informative SMTP reply in a free-text notice, shortened."""
    patterns = (
        r"#(\d{3}[ -]\d\.\d{1,3}\.\d{1,3}[^#\n]*)",  # Exchange "#550 5.1.1 RESOLVER...##"
        r"Remote Server returned '([^']+)'",
        r"^\s*(?:Reason|Error|Diagnostic(?:-Code)?|Status code)\s*:\s*(?:smtp;\s*)?"
        r"([245]\d\d\b.*)$",
        r"(?:said|Remote host said|remote server said|SMTP error from remote mail server"
        r" after [^:]+:)\s*:?\s*([245]\d\d\b.*(?:\n[ \t]+\S.*)*)",
        r"^\s*([245]\d\d[ -]\d\.\d{1,3}\.\d{1,3}\b.*)$",
        r"^\s*([245]\d\d[ -].+)$",
    )
    for pattern in patterns:
        match = re.search(pattern, text, re.I | re.M)
        if match:
            diagnostic = re.sub(r"\(in reply to [^)]*\)", "", match.group(1))
            return _short(diagnostic).rstrip("#").strip()
    return ""


def _permanence(notice: str, subject: str, diagnostic: str) -> bool:
    if _WARNING_SUBJECT_RE.search(subject) or _WARNING_RE.search(notice):
        return False
    status = _STATUS_RE.search(diagnostic)
    code = status.group(1) if status else None
    if code is None:
        smtp = _SMTP_CODE_RE.search(diagnostic)
        code = smtp.group(1) if smtp else None
    return code != "4"


_FreeText = tuple[list[str], str]  # (recipients, diagnostic)


def _parse_postfix(notice: str) -> _FreeText | None:
    if not re.search(
        r"This is the (?:mail system|Postfix program) at host|The Postfix program", notice, re.I
    ):
        return None
    recipients: list[str] = []
    diagnostics: list[str] = []
    # "<addr>: host mx[1.2.3.4] said: 550 ..." with indented continuation lines; aliases show
    # up as "<addr> (expanded from <alias>): ...", where alias is what we sent to.
    for match in re.finditer(
        r"^<([^>\s]+)>(?: \(expanded from <([^>\s]+)>\))?:\s*(.*(?:\n[ \t]+\S.*)*)",
        notice,
        re.M,
    ):
        addr = _clean_addr(match.group(2) or match.group(1))
        if addr:
            recipients.append(addr)
            diagnostics.append(match.group(3))
    if not recipients:
        return None
    first = diagnostics[0]
    return recipients, _diagnostic_from(first) or _short(first)


def _parse_exim(notice: str) -> _FreeText | None:
    if not re.search(r"created automatically by mail delivery software", notice, re.I):
        return None
    intro = re.search(
        r"(?:could not be delivered to one or more of its\s+recipients|has not yet been delivered"
        r" to one or more of its\s+recipients)[^\n]*(?:\n(?!\s*\n).*)*\n\s*\n",
        notice,
        re.I,
    )
    if not intro:
        return None
    recipients: list[str] = []
    detail: list[str] = []
    for line in notice[intro.end() :].split("\n"):
        if not line.strip():
            if recipients:
                # Exim separates address blocks by blank lines; a non-indented line ends them.
                continue
            continue
        if not line.startswith((" ", "\t")):
            if recipients:
                break
            continue
        indent = len(line) - len(line.lstrip())
        stripped = line.strip()
        if indent <= 3 and re.fullmatch(r"<?[^\s<>@]+@[^\s<>]+>?", stripped):
            addr = _clean_addr(stripped)
            if addr:
                recipients.append(addr)
        elif recipients:
            detail.append(stripped)
    if not recipients:
        return None
    text = "\n".join(detail)
    return recipients, _diagnostic_from(text) or _short(text)


def _parse_colon_blocks(notice: str) -> _FreeText | None:
    """qmail-style "<addr>:" lines followed by the remote server's reply (qmail, Yahoo)."""
    recipients: list[str] = []
    diagnostic = ""
    for match in re.finditer(r"^<([^>\s]+)>:[ \t]*\n((?:[^\n]+\n)*[^\n]*)", notice, re.M):
        addr = _clean_addr(match.group(1))
        if addr:
            recipients.append(addr)
            if not diagnostic:
                diagnostic = _diagnostic_from(match.group(2)) or _short(match.group(2))
    return (recipients, diagnostic) if recipients else None


def _parse_qmail(notice: str) -> _FreeText | None:
    if not re.search(r"This is the qmail-send program|qmail-send", notice, re.I):
        return None
    return _parse_colon_blocks(notice)


def _parse_yahoo(notice: str) -> _FreeText | None:
    if not re.search(
        r"(?:Sorry, we were|We have been) unable to deliver your message to the following"
        r"|Message from yahoo\.com",
        notice,
        re.I,
    ):
        return None
    return _parse_colon_blocks(notice)


def _parse_gmail(notice: str) -> _FreeText | None:
    recipients: list[str] = []
    old = re.finditer(
        r"Delivery to the following recipients? (?:failed permanently|has been delayed"
        r"|failed temporarily):\s*\n((?:[ \t]*[^\s@]+@\S+[ \t]*\n)+)",
        notice,
        re.I,
    )
    for match in old:
        recipients.extend(a for a in map(_clean_addr, match.group(1).split()) if a)
    if not recipients:
        new = re.finditer(
            r"(?:Your message wasn't delivered to|There was a (?:temporary )?problem delivering"
            r" your message to|Your message to|couldn't be delivered to)"
            r"\s+<?([^\s<>@]+@[^\s<>]+?)>?[\s.,]",
            notice,
            re.I,
        )
        if not re.search(
            r"\*\* ?(?:Address not found|Message not delivered|Message blocked|Delivery"
            r" incomplete|Message not delivered yet) ?\*\*|mail\.google|support\.google\.com",
            notice,
            re.I,
        ):
            return None
        recipients.extend(a for a in (_clean_addr(m.group(1)) for m in new) if a)
    if not recipients:
        return None
    remote = re.search(
        r"(?:response from the remote server was|Technical details of"
        r" [^:]*):\s*\n?(.*(?:\n(?!\s*\n).*)*)",
        notice,
        re.I,
    )
    diagnostic = remote.group(1) if remote else ""
    return recipients, _diagnostic_from(diagnostic) or _short(diagnostic)


def _parse_exchange(notice: str) -> _FreeText | None:
    intro = re.search(
        r"Delivery has failed to these recipients or (?:groups|distribution lists):"
        r"|Delivery is delayed to these recipients or (?:groups|distribution lists):"
        r"|The following recipient\(s\) (?:could not be reached|cannot be reached):"
        r"|Your message to \S+ couldn't be delivered"
        r"|Your message did not reach some or all of the intended recipients",
        notice,
        re.I,
    )
    if not intro:
        return None
    body = notice[intro.start() :]
    admin = re.search(r"Diagnostic information for administrators:", body, re.I)
    user_part = body[: admin.start()] if admin else body
    recipients: list[str] = []
    couldnt = re.search(r"Your message to (\S+) couldn't be delivered", user_part, re.I)
    if couldnt:
        addr = _clean_addr(couldnt.group(1))
        if addr:
            recipients.append(addr)
    colon = re.search(r":[ \t]*\n", user_part[:4000])
    if colon:
        # Recipients are listed as "addr", "addr (addr)" or "Display Name (addr)" lines,
        # or old-style "addr on <date>"; free text explanation follows each.
        for line in user_part[colon.end() : 4000].split("\n"):
            match = re.match(
                r"^\s*(?:\S[^(\n]*\(([^()\s@]+@[^()\s]+)\)|<?([^\s<>()@]+@[^\s<>()]+?)>?)"
                r"\s*(?:on \d.*)?$",
                line,
            )
            if match:
                addr = _clean_addr(match.group(1) or match.group(2))
                if addr:
                    recipients.append(addr)
    if admin and not recipients:
        for match in re.finditer(
            r"^\s*([^\s@]+@\S+)\s*\n\s*(?:Remote Server returned|#\d{3})", body[admin.end() :], re.M
        ):
            addr = _clean_addr(match.group(1))
            if addr:
                recipients.append(addr)
    if not recipients:
        return None
    return recipients, _diagnostic_from(body)


def _parse_generic(notice: str, msg: Message) -> _FreeText | None:
    if not re.search(
        r"could not be delivered|couldn't be delivered|undeliverable|undelivered mail"
        r"|delivery (?:to the following recipients? )?(?:has )?failed|permanent(?: fatal)? errors?"
        r"|failed recipient|user unknown|no such user|mailbox (?:unavailable|full|not found)"
        r"|unable to deliver|not be delivered|delivery status notification|still undelivered",
        notice,
        re.I,
    ):
        return None
    ours: set[str] = set()
    for name in ("To", "Cc", "From", "Sender", "Reply-To"):
        ours.update(header_addresses(msg, name).addresses)
    candidates: list[str] = []
    for pattern in (
        r"^\s*(?:Failed |Original |Final )?Recipient(?:s|\(s\))?:?\s*<?([^\s<>@]+@[^\s<>]+?)>?\s*$",
        r"<([^\s<>@]+@[^\s<>]+)>\.\.\.",  # Sendmail transcript "<addr>... User unknown"
        r"^\s*<([^\s<>@]+@[^\s<>]+)>\s*:?\s*$",
        r"^\s{0,8}([^\s<>:@]+@[^\s<>:]+)\s*$",
        r"^\s*<?([^\s<>@]+@[^\s<>]+?)>?\s*[:(]",
    ):
        for match in re.finditer(pattern, notice, re.I | re.M):
            addr = _clean_addr(match.group(1))
            if addr and addr not in ours and addr.split("@")[0] not in _DAEMON_LOCALPARTS:
                candidates.append(addr)
        if candidates:
            break
    if not candidates:
        return None
    return candidates, _diagnostic_from(notice)


def _fingerprint(msg: Message, text: str) -> str | None:
    """The MTA/provider a DSN comes from, when it shows; None for an anonymous RFC 3464."""
    sender = (header_text(msg, "From") + " " + header_text(msg, "Return-Path")).lower()
    blob = text[:20_000]
    if (
        # Not the X-MS-Exchange-Organization-* headers: any mail fetched from an Exchange
        # mailbox carries those, bounces from other MTAs included.
        msg.get("X-MS-Exchange-Message-Is-Ndr") is not None
        or re.search(
            r"Delivery (?:has failed|is delayed) to these recipients|Diagnostic"
            r" information for administrators|Your message to \S+ couldn't be delivered",
            blob,
            re.I,
        )
        or "microsoftexchange" in sender
    ):
        return "exchange"
    if (
        "googlemail.com" in sender
        or "gmail.com" in sender
        or re.search(
            r"\*\* (?:Address not found|Message not delivered|Delivery incomplete|Message blocked)"
            r" \*\*|Delivery to the following recipient",
            blob,
        )
    ):
        return "gmail"
    if "yahoo" in sender or re.search(r"unable to deliver your message to the following", blob):
        return "yahoo"
    if re.search(r"This is the (?:mail system|Postfix program) at host", blob, re.I):
        return "postfix"
    if re.search(r"created automatically by mail delivery software", blob, re.I):
        return "exim"
    if re.search(r"qmail-send program", blob, re.I):
        return "qmail"
    return None


# --- entry point -------------------------------------------------------------------------------


def detect_bounce(msg: Message) -> Bounce | None:
    """Return what ``msg`` reports as undeliverable, or None if it is not a bounce.

    Never raises: a notification we cannot read is treated as ordinary mail, which is the
    safe direction (it shows up for an agent instead of silently disappearing).
    """
    try:
        return _detect(msg)
    except Exception:  # never let a malformed bounce break the inbound pipeline
        log.exception("bounce detection failed; treating message as not a bounce")
        return None


def _detect(msg: Message) -> Bounce | None:
    text = _notification_text(msg)
    subject = header_text(msg, "Subject")

    reports = _report_parts(msg)
    if reports or _is_dsn_report(msg):
        bounce = _from_dsn(msg, reports, text, subject)
        if bounce is not None or reports:
            # A parsed DSN with no failed recipient (e.g. "Action: delivered") is a success
            # notice, not a bounce; do not second-guess it with the text heuristics.
            return bounce

    if not _sender_is_daemon(msg):
        return None
    notice = _notice_part(text)
    for family, parser in (
        ("postfix", _parse_postfix),
        ("exim", _parse_exim),
        ("qmail", _parse_qmail),
        ("yahoo", _parse_yahoo),
        ("gmail", _parse_gmail),
        ("exchange", _parse_exchange),
    ):
        result = parser(notice)
        if result is not None:
            return _build(msg, family, result, notice, subject, text)
    generic = _parse_generic(notice, msg)
    if generic is None:
        # Exim and Gmail name the failed addresses in a header even when the text is
        # localised or customised beyond recognition.
        failed = header_addresses(msg, "X-Failed-Recipients").addresses
        addrs = [c for c in map(_clean_addr, failed) if c]
        if addrs:
            generic = (addrs, _diagnostic_from(notice))
    if generic is not None:
        return _build(msg, "generic", generic, notice, subject, text)
    return None


def _build(
    msg: Message, family: str, result: _FreeText, notice: str, subject: str, text: str
) -> Bounce:
    recipients, diagnostic = result
    returned = _returned_message_ids(msg, text)
    return Bounce(
        permanent=_permanence(notice, subject, diagnostic),
        recipients=_dedupe(recipients),
        family=family,
        original_message_id=_original_message_id(msg, returned),
        diagnostic=diagnostic,
        returned_message_ids=returned,
    )


def _from_dsn(msg: Message, reports: list[Message], text: str, subject: str) -> Bounce | None:
    failures: list[tuple[_DsnRecipient, bool]] = []
    for report in reports:
        for rcpt in _parse_dsn(report):
            permanent = _dsn_is_permanent(rcpt)
            if permanent is not None:
                failures.append((rcpt, permanent))
    family = _fingerprint(msg, text) or "rfc3464"
    if not failures:
        if reports:
            return None
        # report-type=delivery-status without a readable status part: fall back to the text,
        # which the MIME type already vouches for as a machine notification.
        notice = _notice_part(text)
        parsers = (
            _parse_postfix,
            _parse_exim,
            _parse_qmail,
            _parse_yahoo,
            _parse_gmail,
            _parse_exchange,
        )
        for parser in parsers:
            result = parser(notice)
            if result is not None:
                return _build(msg, family, result, notice, subject, text)
        generic = _parse_generic(notice, msg)
        return _build(msg, family, generic, notice, subject, text) if generic else None

    permanent = any(p for _, p in failures)
    # Report only the recipients matching the overall verdict, so a mixed report does not
    # make a merely delayed address look dead.
    chosen = [r for r, p in failures if p == permanent]
    diagnostic = next((r.diagnostic for r in chosen if r.diagnostic), "") or next(
        (r.status for r in chosen if r.status), ""
    )
    returned = _returned_message_ids(msg, text)
    return Bounce(
        permanent=permanent,
        recipients=_dedupe(r.address for r in chosen),
        family=family,
        original_message_id=_original_message_id(msg, returned),
        diagnostic=diagnostic,
        returned_message_ids=returned,
    )
