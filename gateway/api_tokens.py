"""Per-agent API tokens: issued once, stored as a SHA-256 digest, never shown again.

A token is 32 random bytes, so a fast digest is enough: there is nothing to brute-force that a
slow hash would protect. The token itself exists only in the answer that issued it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from tickets.models import Agent, ApiToken

TOKEN_PREFIX = "gwt_"  # noqa: S105 - a prefix that makes a leaked token easy to recognise


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def issue_token(
    session: Session, agent: Agent, label: str, now: dt.datetime
) -> tuple[ApiToken, str]:
    """A new token for `agent`; the returned secret is shown once and never stored."""
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(agent_id=agent.id, token_hash=token_digest(secret), label=label, created_at=now)
    session.add(row)
    session.flush()
    return row, secret


def agent_for_token(session: Session, token: str) -> Agent | None:
    return session.scalar(
        select(Agent)
        .join(ApiToken, ApiToken.agent_id == Agent.id)
        .where(
            ApiToken.token_hash == token_digest(token),
            ApiToken.revoked_at.is_(None),
            Agent.active.is_(True),
        )
    )
