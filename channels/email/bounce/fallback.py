"""flufl.bounce, asked only when none of our parsers reads a notice that is a bounce's.

Mailman's bounce detectors know layouts ours do not (SMTP32, GroupWise, Netscape, old
Exchange and AOL notices, Sina, forwarded reports, many one-off "simple match" phrasings): on
the public corpora they read most of what ours miss. They look at any message, so they are
only consulted once the mail is known to come from a mail daemon or is typed as a delivery
report, exactly like our own free-text parsers, and they never overrule a parse of ours.
"""

from __future__ import annotations

import logging
from email.message import Message

from flufl.bounce import all_failures

from channels.email.bounce.text import clean_addr, dedupe

log = logging.getLogger(__name__)


def failed_recipients(msg: Message) -> tuple[tuple[str, ...], bool] | None:
    """The recipients flufl.bounce finds and whether any failure is permanent, or None.

    Only the recipients of the overall verdict are returned, so a notice that names a delayed
    address beside a failed one does not make the delayed one look dead.
    """
    try:
        temporary, permanent = all_failures(msg)
    except Exception:
        log.debug("flufl.bounce failed on a notice", exc_info=True)
        return None
    chosen = permanent or temporary
    addresses = dedupe(
        a for a in (clean_addr(raw.decode("utf-8", "replace")) for raw in chosen) if a
    )
    return (addresses, bool(permanent)) if addresses else None
