"""Our own mail coming back: what may be dropped as a loop, and nothing else.

Only two things prove that an inbound mail is one of ours: its Message-ID is one we sent (an
outbox row), or it carries our loop mark, an `X-Gateway-Loop` header whose value we signed
(a relay may rewrite the Message-ID, never a header it does not know). A mail from the
company's own domain, or with an unsigned or wrongly signed mark, is somebody's mail and goes
on through the pipeline: an employee writing to support is a customer like any other.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from channels.email.headers import header_section
from channels.email.tokens import Keyring, TokenError, loop_token
from tickets.models import Outbox

LOOP_HEADER = "X-Gateway-Loop"
# The header section only: a customer quoting one of our notifications in the body (or pasting
# its headers there) is still a customer. The value may be folded onto a second line.
_LOOP_FIELD = re.compile(
    rb"^" + LOOP_HEADER.encode() + rb"[ \t]*:[ \t]*(?:\r?\n[ \t]+)?([A-Za-z2-7]+)",
    re.IGNORECASE | re.MULTILINE,
)


def loop_mark(keyring: Keyring, app_id: int, message_id: str) -> str:
    """The value of our loop header for the email with this Message-ID."""
    return keyring.sign(loop_token(app_id, message_id))


def has_loop_mark(raw: bytes, keyring: Keyring | None) -> bool:
    """Whether the mail's header section carries a loop mark we signed (any of our keys)."""
    if keyring is None:
        return False
    for match in _LOOP_FIELD.finditer(header_section(raw)):
        try:
            keyring.verify_loop(match.group(1).decode("ascii"))
        except TokenError:
            continue
        return True
    return False


def sent_by_us(session: Session, message_ids: Iterable[str | None]) -> set[str]:
    """Those of these Message-IDs that one of our outbox rows carries (of any app: mail that
    one app sent and another's channel received is a loop as well)."""
    wanted = list(dict.fromkeys(mid for mid in message_ids if mid))
    if not wanted:
        return set()
    return set(
        session.scalars(
            select(Outbox.message_id_header).where(Outbox.message_id_header.in_(wanted))
        )
    )
