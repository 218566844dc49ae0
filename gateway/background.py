"""The work behind the background actors, callable without a broker too.

Actors (gateway/actors.py) call these with an id; the CLI calls some of them inline, because a
one-shot command has no worker to wait for (`gateway convert` prints the email check's result).
Each is safe to run twice: the database row says whether the work is still due.
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

from gateway.runtime import Runtime
from tickets import email_check, sla, summary
from tickets.models import Ticket

log = logging.getLogger(__name__)


def run_email_check(runtime: Runtime, ticket_id: int) -> dict[str, Any] | None:
    cfg = runtime.config.email_check
    mx = None
    if cfg.mx_lookup:
        from channels.email.mx import domain_accepts_mail

        mx = partial(domain_accepts_mail, timeout=cfg.mx_timeout_seconds)
    with runtime.unit_of_work() as session:
        return email_check.run(
            session,
            ticket_id,
            runtime.clock(),
            public_url=runtime.config.http.public_url,
            mx_lookup=mx,
        )


def run_summary(runtime: Runtime, ticket_id: int) -> bool:
    """Summarize one ticket if due. The provider is asked outside any transaction: a slow
    endpoint must not hold a database lock."""
    from gateway.summarizer import make_summarizer

    with runtime.unit_of_work() as session:
        ticket = session.get(Ticket, ticket_id)
        if ticket is None or ticket.summary_due_at is None:
            return False
        due_seen = ticket.summary_due_at
        item = summary.summary_input(ticket)
    result = make_summarizer(runtime.config.summarizer).summarize(item)
    with runtime.unit_of_work() as session:
        return summary.store(session, ticket_id, result, due_seen=due_seen)


def fire_timer(runtime: Runtime, timer_id: int) -> str | None:
    with runtime.unit_of_work() as session:
        return sla.fire_due(session, timer_id, runtime.clock())
