"""Wiring of console sign-in links: where a link points, and mailing one to an agent.

Used by the sign-in page ("email me a link") and by `gateway agents login-link`, which prints
the link instead (for the first admin of a fresh install, who has no mail set up yet).
"""

from __future__ import annotations

import logging

from channels.email.sign_in_mail import queue_sign_in_mail
from gateway.notify import channel_address, templates
from gateway.runtime import Runtime
from tickets import sign_in
from tickets.models import App

log = logging.getLogger(__name__)

LINK_PATH = "/signin/link"


def link_url(runtime: Runtime, secret: str) -> str:
    return f"{runtime.config.http.public_url}{LINK_PATH}?t={secret}"


def mail_sign_in_links(runtime: Runtime, address: str, only_agent: int | None = None) -> list[int]:
    """A link to every agent who may sign in with `address` (or just agent `only_agent`: an
    admin's invitation); the outbox ids to send.

    Agents of an app that cannot send mail get none (the log says so, the page does not:
    its answer is the same for every address).
    """
    now = runtime.clock()
    queued = []
    with runtime.unit_of_work() as session:
        for agent in sign_in.agents_for_address(session, address):
            if only_agent is not None and agent.id != only_agent:
                continue
            sender = channel_address(session, agent.app_id)
            app = session.get(App, agent.app_id)
            if sender is None or app is None:
                log.warning("agent %s: no sign-in link mailed (the app has no channel)", agent.id)
                continue
            secret = sign_in.issue_link(session, agent, now)
            row = queue_sign_in_mail(
                session,
                app,
                agent,
                address.strip().lower(),
                link_url(runtime, secret),
                sign_in.LINK_LIFETIME,
                sender,
                templates(),
                runtime.keyring,
                now,
            )
            queued.append(row.id)
    return queued
