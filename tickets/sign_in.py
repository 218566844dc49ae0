"""How agents sign in to the console: one-time links, passwords, and browser sessions.

A link is mailed to an address the agent has proven (their registered address or a verified
one), works once, and only for `LINK_LIFETIME`. A password is the agent's own choice, kept as
an scrypt hash. Either ends in a session: a random secret in an HttpOnly cookie, of which the
database keeps only the SHA-256 (the secret is long and random, so a fast digest suffices).
Signing out, deactivating the agent, or the session's age ends it. Nothing here says whether an
address belongs to an agent: callers answer the same for every address.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import secrets

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from tickets.errors import InvalidValue, NotAllowed
from tickets.models import Agent, AgentAddress, ConsoleSession, SignInLink

LINK_LIFETIME = dt.timedelta(minutes=15)
SESSION_LIFETIME = dt.timedelta(days=14)
MIN_PASSWORD = 10
MAX_PASSWORD = 1024  # scrypt hashes anything, but a megabyte password is a denial of service

# scrypt at n=2**15, r=8: about 32 MiB and 50-100 ms per guess on one core (OWASP's minimum is
# n=2**17 with r=8 for new systems at p=1; 2**15 keeps sign-in snappy on a 2-core box, and
# the per-address rate limit bounds online guessing anyway).
_N, _R, _P = 2**15, 8, 1


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def agents_for_address(session: Session, address: str) -> list[Agent]:
    """Active agents (of any app) whose registered or verified address is `address`."""
    address = address.strip().lower()
    registered = select(Agent).where(Agent.email == address, Agent.active.is_(True))
    verified = (
        select(Agent)
        .join(AgentAddress, AgentAddress.agent_id == Agent.id)
        .where(
            AgentAddress.address == address,
            AgentAddress.verified.is_(True),
            Agent.active.is_(True),
        )
    )
    found = {a.id: a for a in session.scalars(registered)}
    found.update({a.id: a for a in session.scalars(verified)})
    return [found[k] for k in sorted(found)]


def issue_link(
    session: Session, agent: Agent, now: dt.datetime, lifetime: dt.timedelta = LINK_LIFETIME
) -> str:
    """A new one-time link secret for `agent`; only its hash is stored."""
    secret = secrets.token_urlsafe(32)
    session.add(
        SignInLink(
            agent_id=agent.id, link_hash=_digest(secret), created_at=now, expires_at=now + lifetime
        )
    )
    session.flush()
    return secret


def _link(session: Session, secret: str) -> SignInLink | None:
    return session.scalar(select(SignInLink).where(SignInLink.link_hash == _digest(secret)))


def check_link(session: Session, secret: str, now: dt.datetime) -> Agent:
    """The agent a link signs in, without using it up (the page a mailed link opens)."""
    link = _link(session, secret)
    if link is None:
        raise NotAllowed("this sign-in link is not valid; ask for a new one")
    if link.used_at is not None:
        raise NotAllowed("this sign-in link was already used; ask for a new one")
    if link.expires_at <= now:
        raise NotAllowed("this sign-in link has expired; ask for a new one")
    agent = session.get(Agent, link.agent_id)
    if agent is None or not agent.active:
        raise NotAllowed("this sign-in link is not valid; ask for a new one")
    return agent


def use_link(session: Session, secret: str, now: dt.datetime) -> Agent:
    """Use a link up and return its agent. Of two concurrent uses, one wins."""
    agent = check_link(session, secret, now)
    used = session.execute(
        update(SignInLink)
        .where(SignInLink.link_hash == _digest(secret), SignInLink.used_at.is_(None))
        .values(used_at=now)
    )
    if used.rowcount != 1:  # type: ignore[attr-defined]
        raise NotAllowed("this sign-in link was already used; ask for a new one")
    return agent


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    key = hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P, maxmem=64 * 2**20)
    b64 = base64.b64encode
    return f"scrypt${_N}${_R}${_P}${b64(salt).decode()}${b64(key).decode()}"


def _matches(password: str, stored: str) -> bool:
    try:
        kind, n, r, p, salt, key = stored.split("$")
        expected = base64.b64decode(key)
        got = hashlib.scrypt(
            password.encode(),
            salt=base64.b64decode(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            maxmem=64 * 2**20,
            dklen=len(expected),
        )
    except (ValueError, TypeError):
        return False
    return kind == "scrypt" and hmac.compare_digest(got, expected)


# Checked against when no agent has the address, so an unknown address takes as long to refuse.
_DECOY = hash_password(secrets.token_urlsafe(16))


def set_password(agent: Agent, password: str) -> None:
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise InvalidValue(
            f"a password needs {MIN_PASSWORD} to {MAX_PASSWORD} characters; got {len(password)}"
        )
    agent.password_hash = hash_password(password)


def agent_by_password(session: Session, address: str, password: str) -> Agent | None:
    """The agent with this address and password, or None, in about the same time either way."""
    if len(password) > MAX_PASSWORD:
        return None
    candidates = [a for a in agents_for_address(session, address) if a.password_hash]
    if not candidates:
        _matches(password, _DECOY)
        return None
    return next((a for a in candidates if _matches(password, a.password_hash or "")), None)


def start_session(
    session: Session, agent: Agent, now: dt.datetime, lifetime: dt.timedelta = SESSION_LIFETIME
) -> str:
    """A new browser session for `agent`; the returned secret goes in the cookie only."""
    secret = secrets.token_urlsafe(32)
    session.add(
        ConsoleSession(
            agent_id=agent.id,
            token_hash=_digest(secret),
            created_at=now,
            seen_at=now,
            expires_at=now + lifetime,
        )
    )
    session.flush()
    return secret


def agent_for_session(session: Session, secret: str, now: dt.datetime) -> Agent | None:
    """The signed-in agent of a cookie's secret; None when it is unknown, ended or expired."""
    return session.scalar(
        select(Agent)
        .join(ConsoleSession, ConsoleSession.agent_id == Agent.id)
        .where(
            ConsoleSession.token_hash == _digest(secret),
            ConsoleSession.ended_at.is_(None),
            ConsoleSession.expires_at > now,
            Agent.active.is_(True),
        )
    )


def end_session(session: Session, secret: str, now: dt.datetime) -> None:
    session.execute(
        update(ConsoleSession)
        .where(ConsoleSession.token_hash == _digest(secret), ConsoleSession.ended_at.is_(None))
        .values(ended_at=now)
    )


def end_all(session: Session, agent_id: int, now: dt.datetime, keep: str | None = None) -> None:
    """End every session of an agent but the one of secret `keep`, and spend their unused
    links: on deactivation, so letting the agent back in later does not revive a cookie or a
    link from before; on a new password, so a session someone else held ends with the old."""
    ended = update(ConsoleSession).where(
        ConsoleSession.agent_id == agent_id, ConsoleSession.ended_at.is_(None)
    )
    if keep is not None:
        ended = ended.where(ConsoleSession.token_hash != _digest(keep))
    session.execute(ended.values(ended_at=now))
    session.execute(
        update(SignInLink)
        .where(SignInLink.agent_id == agent_id, SignInLink.used_at.is_(None))
        .values(used_at=now)
    )


def csrf_token(secret: str) -> str:
    """The token a session's forms carry: derived from the cookie's secret, never the secret."""
    return hashlib.sha256(b"console-csrf\0" + secret.encode()).hexdigest()[:40]
