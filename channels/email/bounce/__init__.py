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

import dataclasses
import logging
from dataclasses import dataclass
from email.message import Message

from channels.email.addresses import header_addresses
from channels.email.bounce import fallback
from channels.email.bounce.dsn import (
    DsnRecipient,
    dsn_is_permanent,
    is_dsn_report,
    parse_dsn,
    report_parts,
    typed_address,
)
from channels.email.bounce.freetext import (
    FreeText,
    diagnostic_from,
    fingerprint,
    notice_part,
    parse_exchange,
    parse_exim,
    parse_generic,
    parse_gmail,
    parse_postfix,
    parse_qmail,
    parse_yahoo,
    permanence,
)
from channels.email.bounce.original import original_message_id, returned_message_ids
from channels.email.bounce.text import (
    CHALLENGE_RE,
    clean_addr,
    dedupe,
    machine_written,
    notification_text,
    sender_is_daemon,
)
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


# Layouts we know, tried in this order on the notice text (each is specific enough to be first).
_PARSERS = (
    ("postfix", parse_postfix),
    ("exim", parse_exim),
    ("qmail", parse_qmail),
    ("yahoo", parse_yahoo),
    ("gmail", parse_gmail),
    ("exchange", parse_exchange),
)


def _detect(msg: Message) -> Bounce | None:
    text = notification_text(msg)
    subject = header_text(msg, "Subject")

    reports = report_parts(msg)
    typed = bool(reports) or is_dsn_report(msg)
    if reports:
        rcpts = [r for report in reports for r in parse_dsn(report)]
        bounce = _from_dsn(msg, rcpts, text)
        if bounce is not None or rcpts:
            # A parsed DSN with no failed recipient (e.g. "Action: delivered") is a success
            # notice, not a bounce; do not second-guess it with the text heuristics.
            return bounce

    # Free text is only believed from a mail daemon, or under a report type that vouches for a
    # machine notification: a customer who writes "my mail to you failed" is no bounce.
    daemon = typed or sender_is_daemon(msg)
    if not daemon and not machine_written(msg):
        return None
    family = (fingerprint(msg, text) or "rfc3464") if typed else None
    notice = notice_part(text)
    # A layout of ours that names no address (Exchange 5.5 lists display names) is kept for
    # last: flufl.bounce may still find the addresses.
    addressless: tuple[str, FreeText] | None = None
    for name, parser in _PARSERS:
        result = parser(notice)
        if result is not None and result[0]:
            return _build(msg, family or name, result, notice, subject, text)
        addressless = addressless or (None if result is None else (name, result))
    # Only a daemon's notice is read by the generic parser: an out-of-office reply is machine
    # written too, and may well have an address alone on a line.
    generic = parse_generic(notice, msg) if daemon else None
    if generic is None:
        # Exim and Gmail name the failed addresses in a header even when the text is
        # localised or customised beyond recognition.
        # Some put RFC 3464 fields among the notice's own headers.
        failed = [*header_addresses(msg, "X-Failed-Recipients").addresses]
        failed += [typed_address(v) or "" for v in msg.get_all("Final-Recipient") or []]
        addrs = [c for c in map(clean_addr, failed) if c]
        if addrs:
            generic = (addrs, diagnostic_from(notice))
    if generic is not None:
        return _build(msg, family or "generic", generic, notice, subject, text)
    found = fallback.failed_recipients(msg, text)
    if found is None:
        # Last, from a daemon: every address of a notice that says it failed.
        loose = parse_generic(notice, msg, any_address=True) if daemon else None
        if loose is not None:
            return _build(msg, family or "generic", loose, notice, subject, text)
        if addressless is not None:
            return _build(msg, family or addressless[0], addressless[1], notice, subject, text)
        if not typed:
            return None
        # Typed a delivery report but unreadable (cut off, no boundary): a bounce that a return
        # path can still tie, never a verdict on the address we cannot read.
        bounce = _build(
            msg, family or "rfc3464", ([], diagnostic_from(notice)), notice, subject, text
        )
        return dataclasses.replace(bounce, permanent=False)
    addresses, permanent = found
    bounce = _build(
        msg,
        family or fingerprint(msg, text) or "other",
        (list(addresses), diagnostic_from(notice)),
        notice,
        subject,
        text,
    )
    # flufl.bounce tells warnings apart too; either of us seeing a delay makes it one.
    return dataclasses.replace(bounce, permanent=bounce.permanent and permanent)


def _build(
    msg: Message, family: str, result: FreeText, notice: str, subject: str, text: str
) -> Bounce:
    recipients, diagnostic = result
    returned = returned_message_ids(msg, text)
    return Bounce(
        permanent=permanence(notice, subject, diagnostic),
        recipients=dedupe(recipients),
        family=family,
        original_message_id=original_message_id(msg, returned),
        diagnostic=diagnostic,
        returned_message_ids=returned,
    )


def _from_dsn(msg: Message, rcpts: list[DsnRecipient], text: str) -> Bounce | None:
    failures = [(r, p) for r in rcpts if (p := dsn_is_permanent(r)) is not None]
    if not failures:
        return None
    permanent = any(p for _, p in failures)
    # Report only the recipients matching the overall verdict, so a mixed report does not
    # make a merely delayed address look dead.
    chosen = [r for r, p in failures if p == permanent]
    permanent = permanent and not any(CHALLENGE_RE.search(r.diagnostic) for r in chosen)
    diagnostic = next((r.diagnostic for r in chosen if r.diagnostic), "") or next(
        (r.status for r in chosen if r.status), ""
    )
    returned = returned_message_ids(msg, text)
    return Bounce(
        permanent=permanent,
        recipients=dedupe(r.address for r in chosen),
        family=fingerprint(msg, text) or "rfc3464",
        original_message_id=original_message_id(msg, returned),
        diagnostic=diagnostic,
        returned_message_ids=returned,
    )
