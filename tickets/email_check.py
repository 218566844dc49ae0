"""The convert-time email check: can this conversation go on by email once the customer leaves?

Converting never waits for it and never fails because of it; the result is stored on the ticket
(`Ticket.email_check`) for the team: `ok`, or a warning whose reason says in plain words what is
missing and links to the channel setup page. What is checked:

1. the app has an email channel that is configured (enabled, with an address on a domain the
   app has proven, see `tickets.domains`) and verified (it passed `channels test`, which sets
   `Channel.verified_at`);
2. the customer has an address that is well-formed (email-validator, as a real mail system sees
   it: no reserved or single-label domains) and has not hard-bounced;
3. optionally, the address's domain accepts mail (MX, or an A record), by a lookup the caller
   passes in (DNS is I/O; this module only decides).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from email_validator import EmailNotValidError, validate_email
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from tickets import domains
from tickets.due import due_ids
from tickets.models import Channel, CustomerAddress, Ticket, TicketType
from tickets.services import SYSTEM, record_ticket_event

SETUP_PATH = "/admin/channels/email/setup"

# True: the domain takes mail; False: it does not; None: the lookup could not tell (timeout).
MxLookup = Callable[[str], bool | None]


@dataclass(frozen=True)
class Problem:
    code: str
    text: str


def setup_url(public_url: str) -> str:
    return public_url.rstrip("/") + SETUP_PATH


def _channel_problems(session: Session, app_id: int) -> list[Problem]:
    channels = session.scalars(
        select(Channel).where(Channel.app_id == app_id).order_by(Channel.id)
    ).all()
    configured = [c for c in channels if c.enabled and c.addresses]
    if not configured:
        return [
            Problem(
                "no_channel",
                "No email channel is set up, so once the customer leaves the chat your replies "
                "cannot reach them by email.",
            )
        ]
    proofs = domains.proofs(session)
    if not any(proofs.allows(app_id, a.address) for c in configured for a in c.addresses):
        address = configured[0].addresses[0].address
        return [
            Problem(
                "domain_not_proven",
                f"The email channel's domain is not proven for this app, so mail to "
                f"{address} is refused and no reply is sent from it. To prove it, "
                f"{domains.how_to_prove(domains.domain_of(address))}.",
            )
        ]
    if not any(c.verified_at is not None for c in configured):
        names = ", ".join(c.addresses[0].address for c in configured)
        return [
            Problem(
                "channel_not_verified",
                f"The email channel ({names}) has not passed a test yet; replies by email may "
                "not arrive until it does.",
            )
        ]
    return []


def channel_warning(session: Session, app_id: int) -> str | None:
    """What keeps the app's replies from going out by email, before any ticket is checked
    (the console warns before converting); None when a channel is ready."""
    return " ".join(p.text for p in _channel_problems(session, app_id)) or None


def _address_problem(address: CustomerAddress) -> Problem | None:
    if address.bounced_at is not None:
        why = f" ({address.bounce_reason.strip()})" if address.bounce_reason else ""
        return Problem(
            "hard_bounced",
            f"Mail to {address.address} bounced permanently on "
            f"{address.bounced_at:%Y-%m-%d}{why}; replies by email will not reach the customer.",
        )
    try:
        validate_email(address.address, check_deliverability=False)
    except EmailNotValidError as exc:
        return Problem(
            "invalid_address",
            f"The customer's address {address.address} cannot receive mail: {exc}",
        )
    return None


def _customer_problems(
    addresses: list[CustomerAddress], mx_lookup: MxLookup | None
) -> tuple[list[Problem], str | None]:
    """Problems with the customer's addresses; none if at least one usable address exists."""
    if not addresses:
        return [
            Problem(
                "no_address",
                "The customer has no email address, so the conversation cannot go on by email "
                "once they leave the chat.",
            )
        ], None
    problems: list[Problem] = []
    for address in addresses:
        problem = _address_problem(address)
        if problem is None and mx_lookup is not None:
            domain = address.address.rpartition("@")[2]
            if mx_lookup(domain) is False:
                problem = Problem(
                    "no_mail_server",
                    f"The domain of {address.address} has no mail server (no MX record), so "
                    "mail to it will not arrive.",
                )
        if problem is None:
            return [], address.address
        problems.append(problem)
    return problems, None


def check(
    session: Session,
    ticket: Ticket,
    now: dt.datetime,
    *,
    public_url: str,
    mx_lookup: MxLookup | None = None,
) -> dict[str, Any]:
    """The check's result for this ticket (not stored; see `run`)."""
    problems = _channel_problems(session, ticket.app_id)
    customer_problems, usable = _customer_problems(
        list(ticket.conversation.customer.addresses), mx_lookup
    )
    problems += customer_problems
    return {
        "ok": not problems,
        "reason": " ".join(p.text for p in problems) or None,
        "setup_url": setup_url(public_url) if problems else None,
        "problems": [p.code for p in problems],
        "address": usable,
        "checked_at": now.isoformat(),
    }


def run(
    session: Session,
    ticket_id: int,
    now: dt.datetime,
    *,
    public_url: str,
    mx_lookup: MxLookup | None = None,
) -> dict[str, Any] | None:
    """Check and store the result if the check is still due; None if it was done already.

    Safe to run twice: the claim is a guarded UPDATE of `email_check_due_at`, so of two workers
    only one stores (and records) a result.
    """
    claimed = session.execute(
        update(Ticket)
        .where(Ticket.id == ticket_id, Ticket.email_check_due_at.is_not(None))
        .values(email_check_due_at=None)
        .execution_options(synchronize_session=False)
    ).rowcount  # type: ignore[attr-defined]
    if not claimed:
        return None
    ticket = session.get(Ticket, ticket_id, populate_existing=True)
    assert ticket is not None
    if ticket.type != TicketType.CUSTOMER:
        return None
    result = check(session, ticket, now, public_url=public_url, mx_lookup=mx_lookup)
    ticket.email_check = result
    record_ticket_event(
        session,
        ticket,
        "ticket.email_check",
        SYSTEM,
        now,
        ok=result["ok"],
        problems=result["problems"],
        assignee=ticket.assignee.email if ticket.assignee else None,
    )
    return result


def due_ticket_ids(session: Session, before: dt.datetime, limit: int) -> list[int]:
    return due_ids(session, Ticket.id, Ticket.email_check_due_at, before, limit)
